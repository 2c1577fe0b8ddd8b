"""Limits and timeouts of every listener the daemon opens: a cap on open connections, a header
timeout, a keep-alive idle timeout (the body timeout is `body.read_body`'s, with the limits of
the request's listener).

aiohttp's low-level server has a keep-alive timeout but neither a header timeout nor a
connection cap, so every accepted connection gets a `ConnectionGuard`: a protocol in front of
the one aiohttp's public protocol factory (`web.Server()`) makes, forwarding every call to it.
The guard sees the connection open, bytes arrive and, from the dispatcher, each request start
and end; that is enough to close a connection whose headers are late or that idles too long,
and to answer a connection over the cap with 503 before aiohttp ever sees it. It never parses
HTTP itself.

Phases of a connection, each with its deadline:
- new (nothing received yet) and headers (part of a request head): the head must be complete
  within `header_timeout_s` of the connection opening, or of the first byte of a kept-alive
  connection's next request; then 408 (nothing is written if nothing was received) and close;
- request (the dispatcher runs a handler): no deadline here; handlers bound their own work,
  and `read_body` the body;
- idle (after a response): closed after `idle_timeout_s`, unless the client is still taking a
  response that was slow to send (the write buffer shrank since the last look);
- draining (after a response, the request's body not read): aiohttp reads and drops the rest
  for a few seconds (`LINGER_S`) so the client sees the answer, then closes; the idle deadline
  bounds that too.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import math
import os
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from aiohttp import web

from triggerd.config.model import DaemonSettings
from triggerd.http.refusals import Refusals

__all__ = [
    "LINGER_S",
    "AcceptErrors",
    "ConnectionGuard",
    "Listener",
    "ListenerLimits",
    "descriptors_needed",
    "ensure_descriptors",
    "guard_of",
]

#: How long aiohttp keeps reading (and dropping) a body after the handler answered without
#: reading it, so that closing does not reset the connection under the client's answer.
LINGER_S = 5.0
#: Descriptors the daemon needs beyond the ones open when the listeners start, their
#: connections and the workers it may still start: broker and AWS connections opened later,
#: the state store's journal and WAL, destination files, the Runtime API's listening sockets
#: of functions started later, an epoll or pidfd here and there.
DESCRIPTOR_HEADROOM = 32
#: Descriptors one local worker holds in the daemon: its Runtime API listening socket and the
#: worker's connection to it, its stdout/stderr pipes, and a spare (an extension's pipe, a
#: Telemetry API connection).
WORKER_DESCRIPTORS = 6
#: Connections over the cap that each listener keeps, at most, for `BUSY_LINGER_S` after its
#: 503: the answer goes out, then a FIN, and what the client sent meanwhile is read and
#: dropped, so that a client that sent its request before reading sees the 503 rather than a
#: reset (closing with unread data resets the connection). Over that, closed at once.
BUSY_LINGERING = 16
BUSY_LINGER_S = 1.0
#: Seconds between two log lines about accept() failing for want of descriptors.
ACCEPT_LOG_INTERVAL_S = 10.0
_OUT_OF_DESCRIPTORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})

# Written straight to the transport: these answers go out before aiohttp has a request to
# answer (over the cap, aiohttp never sees the connection; a late head was never parsed).
_BUSY_BODY = b'{"message":"Service Unavailable"}'
BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\nRetry-After: 1\r\nConnection: close\r\n\r\n%s"
    % (len(_BUSY_BODY), _BUSY_BODY)
)
_TIMEOUT_BODY = b'{"message":"Request Timeout"}'
REQUEST_TIMEOUT = (
    b"HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(_TIMEOUT_BODY), _TIMEOUT_BODY)
)
# The control listener's (the AWS-compatible APIs'): AWS's error shape, so boto3 and the AWS
# CLI name the error (and retry both: a 503, and RequestTimeoutException, are retryable).
_AWS_BUSY_BODY = b'{"Type":"Service","message":"Service Unavailable"}'
AWS_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"x-amzn-ErrorType: ServiceUnavailableException\r\n"
    b"Content-Length: %d\r\nRetry-After: 1\r\nConnection: close\r\n\r\n%s"
    % (len(_AWS_BUSY_BODY), _AWS_BUSY_BODY)
)
#: The 408's error type and body on the control listener (here and for a late body).
AWS_TIMEOUT_TYPE = "RequestTimeoutException"
AWS_TIMEOUT_BODY = b'{"Type":"User","message":"Request Timeout"}'
AWS_REQUEST_TIMEOUT = (
    b"HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\n"
    b"x-amzn-ErrorType: RequestTimeoutException\r\n"
    b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(AWS_TIMEOUT_BODY), AWS_TIMEOUT_BODY)
)

_NEW, _HEADERS, _REQUEST, _IDLE, _DRAINING = range(5)


@dataclass(frozen=True, slots=True)
class ListenerLimits:
    """A listener's limits ([daemon] http_* keys; these defaults are theirs)."""

    header_timeout_s: float = 10.0
    body_timeout_s: float = 20.0
    body_min_bytes_per_s: int = 500
    idle_timeout_s: float = 60.0
    max_connections: int = 1024

    @classmethod
    def from_settings(cls, settings: DaemonSettings) -> ListenerLimits:
        return cls(
            header_timeout_s=settings.http_header_timeout_s,
            body_timeout_s=settings.http_body_timeout_s,
            body_min_bytes_per_s=settings.http_body_min_bytes_per_s,
            idle_timeout_s=settings.http_idle_timeout_s,
            max_connections=settings.http_max_connections,
        )


class Listener:
    """One listening socket's shared state: aiohttp's server (the protocol factory), the
    limits, the refusals and the count of open connections. `guard` is the protocol factory
    to give `loop.create_server`."""

    def __init__(
        self,
        server: web.Server,
        limits: ListenerLimits,
        refusals: Refusals,
        *,
        aws_errors: bool = False,
    ) -> None:
        self.server = server
        self.limits = limits
        self.refusals = refusals
        #: Answer the guard's own 503 and 408s in AWS's error shape (the control listener).
        self.aws_errors = aws_errors
        self.busy = AWS_BUSY if aws_errors else BUSY
        self.request_timeout = AWS_REQUEST_TIMEOUT if aws_errors else REQUEST_TIMEOUT
        #: Connections admitted and not closed yet.
        self.open = 0
        #: Connections over the cap answered 503 and not closed yet (`BUSY_LINGERING`).
        self.lingering = 0

    def guard(self) -> ConnectionGuard:
        return ConnectionGuard(self)


class ConnectionGuard(asyncio.Protocol):
    """The protocol of one accepted connection: admits it under the cap and enforces the
    header and idle deadlines, forwarding everything else to aiohttp's protocol."""

    __slots__ = (
        "_deadline",
        "_inner",
        "_lingering",
        "_listener",
        "_loop",
        "_phase",
        "_timer",
        "_transport",
        "_unsent",
    )

    def __init__(self, listener: Listener) -> None:
        self._listener = listener
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._inner: web.RequestHandler | None = None
        self._phase = _NEW
        self._deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._lingering = False
        #: Bytes of the last response still unsent when the idle deadline was last checked.
        self._unsent = math.inf

    # ---- asyncio.Protocol, forwarded to aiohttp's protocol ----

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's does not subclass asyncio.Transport, hence the cast).
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        listener = self._listener
        if listener.open >= listener.limits.max_connections:
            transport.write(listener.busy)
            listener.refusals.refuse(
                "connection_limit", max_connections=listener.limits.max_connections
            )
            if listener.lingering < BUSY_LINGERING and transport.can_write_eof():
                listener.lingering += 1
                self._lingering = True
                transport.write_eof()  # data_received drops what comes until then
                self._timer = self._loop.call_later(BUSY_LINGER_S, transport.close)
            else:
                transport.close()
            return
        listener.open += 1
        self._inner = inner = listener.server()
        inner.connection_made(transport)
        self._wait(listener.limits.header_timeout_s)

    def data_received(self, data: bytes) -> None:
        inner = self._inner
        if inner is None:
            return
        phase = self._phase
        if phase == _IDLE:  # the first byte of the next request: its head is due
            self._phase = _HEADERS
            self._wait(self._listener.limits.header_timeout_s)
        elif phase == _NEW:
            self._phase = _HEADERS
        inner.data_received(data)

    def eof_received(self) -> None:
        # aiohttp's protocol returns None: the transport closes itself once what it holds
        # is sent, as it would without the guard.
        if self._inner is not None:
            self._inner.eof_received()

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._lingering:
            self._lingering = False
            self._listener.lingering -= 1
        inner, self._inner = self._inner, None
        if inner is not None:
            self._listener.open -= 1
            inner.connection_lost(exc)

    # ---- the dispatcher's side ----

    @property
    def limits(self) -> ListenerLimits:
        return self._listener.limits

    @property
    def aws_errors(self) -> bool:
        return self._listener.aws_errors

    @property
    def refusals(self) -> Refusals:
        return self._listener.refusals

    def request_started(self) -> None:
        self._phase = _REQUEST

    def request_finished(self, body_read: bool) -> None:
        """The handler answered; `body_read` is False when it left (part of) the body unread."""
        self._phase = _IDLE if body_read else _DRAINING
        self._unsent = math.inf
        self._wait(self._listener.limits.idle_timeout_s)

    # ---- deadlines ----

    def _wait(self, seconds: float) -> None:
        """Set the deadline of the current phase. One timer per connection, moved only when
        the deadline comes earlier than it fires (a later deadline re-arms it on firing)."""
        self._deadline = deadline = self._loop.time() + seconds
        timer = self._timer
        if timer is not None and timer.when() <= deadline:
            return
        if timer is not None:
            timer.cancel()
        self._timer = self._loop.call_at(deadline, self._expire)

    def _expire(self) -> None:
        self._timer = None
        transport = self._transport
        if self._inner is None or transport is None or self._phase == _REQUEST:
            return
        if self._loop.time() < self._deadline:
            self._timer = self._loop.call_at(self._deadline, self._expire)
            return
        if self._phase in (_NEW, _HEADERS):
            self._listener.refusals.refuse("header_timeout")
            if self._phase == _HEADERS:
                transport.write(self._listener.request_timeout)
            transport.close()
            return
        unsent = transport.get_write_buffer_size()
        if unsent == 0:
            transport.close()  # idle keep-alive connection: an ordinary close
        elif unsent < self._unsent:  # still taking the last response: give it more time
            self._unsent = unsent
            self._wait(self._listener.limits.idle_timeout_s)
        else:
            self._listener.refusals.refuse("send_timeout")
            transport.abort()


def guard_of(request: web.BaseRequest) -> ConnectionGuard | None:
    """The guard of the request's connection (None when served without one, as in tests of
    a bare aiohttp server)."""
    transport = request.transport
    protocol = transport.get_protocol() if transport is not None else None
    return protocol if isinstance(protocol, ConnectionGuard) else None


def descriptors_needed(connections: int, workers: int = 0, outbound: int = 0) -> int:
    """File descriptors the process needs for `connections` more connections (the sum of
    every listener's cap), `workers` more local workers and `outbound` connections (the
    http and aws backends' pools): those open now, all these, and some headroom."""
    try:
        open_now = len(os.listdir("/proc/self/fd"))
    except OSError:  # no procfs: assume a small daemon
        open_now = 64
    needed = open_now + connections + outbound + workers * WORKER_DESCRIPTORS
    return needed + DESCRIPTOR_HEADROOM


def listener_descriptors(max_connections: int) -> int:
    """Descriptors one listener may hold: its cap and the 503s over it still lingering."""
    return max_connections + BUSY_LINGERING


def ensure_descriptors(
    connections: int, listeners: int = 1, workers: int = 0, outbound: int = 0
) -> str | None:
    """Raise the soft RLIMIT_NOFILE (up to the hard limit) so that `listeners` listeners of
    `connections` each, `workers` more workers and `outbound` connections fit at once; the
    problem, in one line, when the hard limit is too low. Called once for all the
    listeners: each listener's own call would count the same free descriptors again."""
    incoming = listener_descriptors(connections) * listeners
    needed = descriptors_needed(incoming, workers, outbound)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or needed <= soft:
        return None
    if hard != resource.RLIM_INFINITY and needed > hard:
        on = f" on each of {listeners} listeners" if listeners > 1 else ""
        return (
            f"daemon.http_max_connections = {connections}{on} needs about {needed} open files, "
            f"but the limit is {hard} (LimitNOFILE= in the unit, ulimit -n): raise the limit "
            "or lower http_max_connections"
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    return None


class AcceptErrors:
    """The event loop's exception handler while the listeners run. If the process runs out
    of descriptors anyway (something else took them), asyncio reports each failed accept()
    through the loop's exception handler ("socket.accept() out of system resource", with a
    traceback, many times a second): that becomes one ERROR line, `http.accept_failed`, at
    most once per interval, with how many were left out. Every other error goes on to the
    handler that was there before."""

    def __init__(
        self,
        log: logging.Logger,
        *,
        interval_s: float = ACCEPT_LOG_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = log
        self._interval_s = interval_s
        self._clock = clock
        self._logged_at: float | None = None
        self._unlogged = 0

    def install(self, loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
        """Put the handler on `loop`; returns the call that restores the previous one."""
        previous = loop.get_exception_handler()

        def handle(loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
            if self.handled(context):
                return
            if previous is not None:
                previous(loop, context)
            else:
                loop.default_exception_handler(context)

        loop.set_exception_handler(handle)
        return lambda: loop.set_exception_handler(previous)

    def handled(self, context: dict[str, object]) -> bool:
        exc = context.get("exception")
        if not isinstance(exc, OSError) or exc.errno not in _OUT_OF_DESCRIPTORS:
            return False
        if "accept" not in str(context.get("message", "")):
            return False
        now = self._clock()
        if self._logged_at is not None and now - self._logged_at < self._interval_s:
            self._unlogged += 1
            return True
        self._logged_at = now
        unlogged, self._unlogged = self._unlogged, 0
        self._log.error(
            "http.accept_failed",
            extra={
                "error": exc.strerror or str(exc),
                "not_logged": unlogged,
                "hint": "out of file descriptors: raise LimitNOFILE or lower "
                "daemon.http_max_connections",
            },
        )
        return True
