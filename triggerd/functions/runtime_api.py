"""The Lambda Runtime API (2018-06-01), served to one execution environment.

Each execution environment (one runtime process) gets its own endpoint on a loopback port,
because a runtime finds the API through `AWS_LAMBDA_RUNTIME_API=host:port`. The endpoint hands
out one invocation at a time: the backend `submit`s an invocation, the runtime's long-poll on
`/runtime/invocation/next` receives it, and the runtime's `/response` or `/error` post resolves
the invocation's future. `/runtime/init/error` resolves the endpoint's `ready` future instead.

This is the hottest path of a warm invocation (two requests per invocation), so the endpoint is
an asyncio protocol around aiohttp's HTTP request parser rather than an aiohttp server: requests
are parsed by aiohttp (the C parser when built), but handled in the protocol's callbacks, with no
task, request or response object per request, and each answer is one prebuilt write. It serves
one runtime on loopback; keep-alive, pipelining (answers in request order), `Expect:
100-continue`, chunked bodies and `Connection: close` behave as HTTP/1.1 requires.
"""

from __future__ import annotations

import asyncio
import collections
import enum
from dataclasses import dataclass, field

import orjson
from aiohttp.base_protocol import BaseProtocol
from aiohttp.http import HttpRequestParser, RawRequestMessage
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.streams import StreamReader

from triggerd.types import MAX_SYNC_PAYLOAD

PREFIX = "/2018-06-01"
_BASE = PREFIX + "/runtime"
_NEXT = _BASE + "/invocation/next"
_INVOCATION = _BASE + "/invocation/"
_INIT_ERROR = _BASE + "/init/error"
#: How many answered request ids an endpoint remembers, to tell "already answered" (403)
#: from "unknown" (400).
_ANSWERED_MEMORY = 32
#: Requests a runtime may pipeline ahead of the answers before it is cut off.
_MAX_QUEUED = 16
_REASONS = {
    200: "OK",
    202: "Accepted",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Payload Too Large",
    500: "Internal Server Error",
}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class ReplyKind(enum.Enum):
    RESPONSE = "response"
    ERROR = "error"
    INIT_ERROR = "init_error"
    #: The runtime went away (set by the owner of the process, not by the API).
    EXITED = "exited"
    #: The endpoint was closed while the invocation was pending.
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class RuntimeReply:
    kind: ReplyKind
    #: Response bytes or the error object as JSON.
    body: bytes = b""
    #: `Lambda-Runtime-Function-Error-Type` of an error post, or the error type of the reply.
    error_type: str | None = None


@dataclass(slots=True, eq=False)
class PendingInvocation:
    """One invocation handed to a runtime. `result` resolves with the runtime's reply."""

    request_id: str
    payload: bytes
    deadline_ms: int
    function_arn: str
    trace_id: str | None = None
    client_context: str | None = None
    cognito_identity: str | None = None
    result: asyncio.Future[RuntimeReply] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    def resolve(self, reply: RuntimeReply) -> None:
        if not self.result.done():
            self.result.set_result(reply)


class EndpointBusyError(RuntimeError):
    """`submit` was called while another invocation is still pending or in flight."""


def _header_value(value: str) -> str:
    """A header value that cannot break the response apart (a client context may be JSON
    spread over lines: line breaks are JSON whitespace, so they become spaces)."""
    if "\r" in value or "\n" in value:
        return value.replace("\r", " ").replace("\n", " ")
    return value


def http_reply(status: int, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    """One whole HTTP/1.1 response: status line, JSON content type, length and `headers`."""
    lines = [f"HTTP/1.1 {status} {_REASONS[status]}", "Content-Type: application/json"]
    if headers:
        lines.extend(f"{name}: {_header_value(value)}" for name, value in headers.items())
    lines.append(f"Content-Length: {len(body)}\r\n\r\n")
    return "\r\n".join(lines).encode() + body


def _error_reply(status: int, error_type: str, message: str) -> bytes:
    return http_reply(status, orjson.dumps({"errorMessage": message, "errorType": error_type}))


_ACCEPTED = http_reply(202, orjson.dumps({"status": "OK"}))
_NOT_ALLOWED = _error_reply(405, "MethodNotAllowed", "method not allowed on this path")
_IN_FLIGHT = _error_reply(403, "InvalidStateTransition", "an invocation is in flight")
_CLOSING = _error_reply(500, "Runtime.Closed", "the execution environment is shutting down")
_TOO_LARGE = _error_reply(413, "RequestEntityTooLarge", "response payload is too large")
_HEAD_NOT_ALLOWED = http_reply(405, b"")


def error_body(raw: bytes, error_type: str | None) -> bytes:
    """The error object a runtime posted, or one built from its error-type header."""
    try:
        parsed = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict):
        return raw
    message = raw.decode("utf-8", "replace") if raw else ""
    return orjson.dumps({"errorMessage": message, "errorType": error_type or "Runtime.Unknown"})


class _Connection(BaseProtocol):
    """One connection of the runtime: parses requests with aiohttp's parser, reads each body
    as it arrives (up to the endpoint's limit; the rest is counted and dropped), and answers
    the requests strictly in order. A `/next` poll with nothing to hand out parks the queue
    until the endpoint delivers an invocation through `answer_parked`."""

    def __init__(self, endpoint: RuntimeEndpoint, loop: asyncio.AbstractEventLoop) -> None:
        limit = endpoint.max_response + 1
        parser = HttpRequestParser(
            self,
            loop,
            max(limit, 2**16),  # the body buffer is drained on every read: never paused
            max_line_size=8190,
            max_field_size=8190,
            auto_decompress=False,
        )
        super().__init__(loop, parser)
        self._http = parser
        self._endpoint = endpoint
        self._limit = limit
        self._queue: collections.deque[tuple[RawRequestMessage, StreamReader]] = collections.deque()
        self._body: list[bytes] = []
        self._body_size = 0
        self._continued = False
        self._parked = False
        self._closing = False
        self._socket_paused = False
        #: Answers not written yet (see `_process`).
        self._out: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._endpoint.connections.add(self)

    def connection_lost(self, exc: BaseException | None) -> None:
        super().connection_lost(exc)
        self._closing = True
        self._endpoint.connection_gone(self)

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        try:
            messages, _, _ = self._http.feed_data(data)
        except HttpProcessingError as exc:
            self.fail(_error_reply(400, "BadRequest", f"malformed request: {exc.message}"))
            return
        self._queue.extend(messages)
        if len(self._queue) > _MAX_QUEUED:
            self.fail(_error_reply(400, "BadRequest", "too many pipelined requests"))
            return
        self._process()

    # The body buffer's flow control: it asks to pause when a body arrives faster than it is
    # read and to resume once read. Bodies are read on every `data_received`, so this only
    # pauses and resumes the socket; the parser itself is never paused (and never re-entered).
    def pause_reading(self) -> None:
        if not self._socket_paused and self.transport is not None:
            self._socket_paused = True
            self.transport.pause_reading()

    def resume_reading(self, resume_parser: bool = True) -> None:
        if self._socket_paused and self.transport is not None:
            self._socket_paused = False
            self.transport.resume_reading()

    def eof_received(self) -> bool:
        # The runtime stopped sending: close once the answers are written. A poll parked
        # here can no longer receive an invocation, so the endpoint stops offering it one.
        self._endpoint.connection_gone(self)
        self._closing = True
        self._flush()  # answers held for a poll that will now never be answered
        return False

    def answer_parked(self, reply: bytes) -> None:
        """Answer the parked `/next` poll and go on with what the runtime sent after it."""
        if not self._parked:
            return
        self._parked = False
        message, _ = self._queue.popleft()
        self._send(reply, message.should_close)
        self._process()

    def fail(self, reply: bytes) -> None:
        """Answer a request that cannot be parsed and drop the connection."""
        self._send(reply, close=True)

    def _process(self) -> None:
        """Answer what can be answered now. The answers to requests pipelined ahead of a `/next`
        poll that has to wait (the bundled client's result post) are held and written with
        the poll's answer: the runtime is waiting for that anyway, and one write per invocation
        instead of two saves a system call here and a wake-up in the runtime."""
        self._answer_queued()
        if not self._parked:
            self._flush()

    def _answer_queued(self) -> None:
        while self._queue and not self._closing and not self._parked:
            message, payload = self._queue[0]
            if not self._read_body(message, payload):
                return  # the body is still arriving
            body = b"".join(self._body) if self._body_size <= self._limit - 1 else None
            self._body, self._body_size, self._continued = [], 0, False
            reply = self._endpoint.dispatch(self, message, body)
            if reply is None:
                self._parked = True
                return
            self._queue.popleft()
            self._send(reply, message.should_close)

    def _read_body(self, message: RawRequestMessage, payload: StreamReader) -> bool:
        try:
            chunk = payload.read_nowait()
        except Exception as exc:  # the parser set a payload error (e.g. bad chunk framing)
            self.fail(_error_reply(400, "BadRequest", f"malformed request body: {exc}"))
            return False
        if chunk:
            self._body_size += len(chunk)
            if self._body_size < self._limit:
                self._body.append(chunk)
            elif self._body:
                self._body = []  # over the limit: only the size is kept from here on
        if payload.is_eof():
            return True
        if not self._continued and message.headers.get("Expect", "").lower() == "100-continue":
            self._continued = True
            self._out.append(_CONTINUE)
            self._flush()
        return False

    def _send(self, reply: bytes, close: bool) -> None:
        self._out.append(reply)
        if close and not self._closing:
            self._closing = True
            self._endpoint.connection_gone(self)  # before connection_lost: see eof_received
            self._flush()
            if self.transport is not None:
                self.transport.close()  # after the buffered answers are written

    def _flush(self) -> None:
        out = self._out
        if not out:
            return
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)


class RuntimeEndpoint:
    """The Runtime API of one execution environment."""

    def __init__(self, *, max_response_bytes: int = MAX_SYNC_PAYLOAD, host: str = "127.0.0.1"):
        self._host = host
        self.max_response = max_response_bytes
        self._pending: PendingInvocation | None = None
        self._current: PendingInvocation | None = None
        self._answered: collections.deque[str] = collections.deque(maxlen=_ANSWERED_MEMORY)
        #: The connection whose `/next` poll waits for an invocation.
        self._poller: _Connection | None = None
        self._closed = False
        self._listener: asyncio.Server | None = None
        self._port = 0
        self.connections: set[_Connection] = set()
        #: None once the runtime first polls `/next` (init done), or the init-error reply.
        self.ready: asyncio.Future[RuntimeReply | None] = asyncio.get_running_loop().create_future()

    # ---- owner side ------------------------------------------------------------------------

    @property
    def address(self) -> str:
        """`host:port`, the value of `AWS_LAMBDA_RUNTIME_API`."""
        return f"{self._host}:{self._port}"

    @property
    def busy(self) -> bool:
        return self._pending is not None or self._current is not None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        listener = await loop.create_server(lambda: _Connection(self, loop), self._host, 0)
        self._listener = listener
        self._port = int(listener.sockets[0].getsockname()[1])

    def submit(self, invocation: PendingInvocation) -> None:
        """Hand `invocation` to the runtime's waiting poll, or keep it for its next one."""
        if self._closed:
            invocation.resolve(RuntimeReply(ReplyKind.CLOSED))
            return
        if self.busy:
            raise EndpointBusyError("an invocation is already in flight")
        self._pending = invocation
        poller = self._poller
        if poller is not None:
            self._poller = None
            poller.answer_parked(self._deliver(invocation))

    def abort(self, reply: RuntimeReply) -> None:
        """Resolve everything waiting on this environment with `reply` (the runtime is gone)."""
        if not self.ready.done():
            self.ready.set_result(reply)
        for inv in (self._pending, self._current):
            if inv is not None:
                inv.resolve(reply)
        self._pending = self._current = None

    def finish(self, invocation: PendingInvocation) -> None:
        """Forget `invocation` (it timed out or was answered) so the endpoint is free again."""
        if self._pending is invocation:
            self._pending = None
        if self._current is invocation:
            self._current = None
            self._answered.append(invocation.request_id)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.abort(RuntimeReply(ReplyKind.CLOSED))
        poller, self._poller = self._poller, None
        if poller is not None:
            poller.answer_parked(_CLOSING)
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        for conn in list(self.connections):
            conn.fail(b"")  # flush what is written and close
        self.connections.clear()

    def connection_gone(self, conn: _Connection) -> None:
        self.connections.discard(conn)
        if self._poller is conn:
            self._poller = None

    # ---- runtime side ----------------------------------------------------------------------

    def dispatch(
        self, conn: _Connection, message: RawRequestMessage, body: bytes | None
    ) -> bytes | None:
        """The answer to one request (`body` is None when over the limit), or None for a
        `/next` poll that must wait for an invocation."""
        if message.method == "HEAD":
            return _HEAD_NOT_ALLOWED  # an answer to HEAD carries no body
        path = message.path.partition("?")[0]
        post = message.method == "POST"
        if path == _NEXT:
            return self._next(conn) if message.method == "GET" else _NOT_ALLOWED
        if path == _INIT_ERROR:
            return self._init_error(message, body) if post else _NOT_ALLOWED
        if path.startswith(_INVOCATION):
            request_id, _, action = path[len(_INVOCATION) :].rpartition("/")
            if request_id and "/" not in request_id and action in ("response", "error"):
                if not post:
                    return _NOT_ALLOWED
                return self._answer(message, request_id, body, action == "error")
        return _error_reply(404, "NotFound", "no such path " + path)

    def _next(self, conn: _Connection) -> bytes | None:
        if self._poller is not None or self._current is not None:
            return _IN_FLIGHT
        if not self.ready.done():
            self.ready.set_result(None)
        if self._closed:
            return _CLOSING
        inv = self._pending
        if inv is None:
            self._poller = conn
            return None
        return self._deliver(inv)

    def _deliver(self, inv: PendingInvocation) -> bytes:
        self._pending = None
        self._current = inv
        headers = {
            "Lambda-Runtime-Aws-Request-Id": inv.request_id,
            "Lambda-Runtime-Deadline-Ms": str(inv.deadline_ms),
            "Lambda-Runtime-Invoked-Function-Arn": inv.function_arn,
        }
        if inv.trace_id is not None:
            headers["Lambda-Runtime-Trace-Id"] = inv.trace_id
        if inv.client_context is not None:
            headers["Lambda-Runtime-Client-Context"] = inv.client_context
        if inv.cognito_identity is not None:
            headers["Lambda-Runtime-Cognito-Identity"] = inv.cognito_identity
        return http_reply(200, inv.payload, headers)

    def _claim(self, request_id: str) -> PendingInvocation | bytes:
        """The in-flight invocation `request_id`, or the error answer for the runtime."""
        inv = self._current
        if inv is not None and inv.request_id == request_id:
            return inv
        if request_id in self._answered:
            return _error_reply(403, "InvalidStateTransition", "invocation already answered")
        return _error_reply(400, "InvalidRequestID", "unknown request id " + request_id)

    def _answer(
        self, message: RawRequestMessage, request_id: str, body: bytes | None, error: bool
    ) -> bytes:
        claimed = self._claim(request_id)
        if isinstance(claimed, bytes):
            return claimed
        self.finish(claimed)
        if error:
            error_type = message.headers.get("Lambda-Runtime-Function-Error-Type")
            raw = error_body(body if body is not None else b"", error_type)
            claimed.resolve(RuntimeReply(ReplyKind.ERROR, raw, error_type))
            return _ACCEPTED
        if body is None:
            claimed.resolve(_too_large(message.headers.get("Content-Length"), self.max_response))
            return _TOO_LARGE
        claimed.resolve(RuntimeReply(ReplyKind.RESPONSE, body))
        return _ACCEPTED

    def _init_error(self, message: RawRequestMessage, body: bytes | None) -> bytes:
        if self.ready.done():
            return _error_reply(403, "InvalidStateTransition", "init already finished")
        error_type = message.headers.get("Lambda-Runtime-Function-Error-Type")
        raw = error_body(body if body is not None else b"", error_type)
        if error_type is None:
            parsed = orjson.loads(raw)
            error_type = str(parsed.get("errorType", "Runtime.Unknown"))
        self.ready.set_result(RuntimeReply(ReplyKind.INIT_ERROR, raw, error_type))
        return _ACCEPTED


def _too_large(size: str | None, limit: int) -> RuntimeReply:
    shown = f"({size} bytes) " if size is not None and size.isdigit() else ""
    message = f"Response payload size {shown}exceeded maximum allowed payload size ({limit} bytes)."
    body = orjson.dumps({"errorMessage": message, "errorType": "Function.ResponseSizeTooLarge"})
    return RuntimeReply(ReplyKind.ERROR, body, "Function.ResponseSizeTooLarge")
