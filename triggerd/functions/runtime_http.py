"""HTTP/1.1 framing of the Runtime API: one asyncio protocol per connection over httptools.

`RuntimeConnection` parses requests with httptools' request parser (llhttp, the parser uvicorn
uses) and answers them from the parser's callbacks. The parse state of the request being
received lives on the connection (its target, the headers the API reads, its body as it
arrives); when the request is complete it goes to the handler's `dispatch` (the endpoint in
`runtime_api`), whose answer is a prebuilt `bytes`. Answers are collected and written once per
read, and the answers to requests pipelined ahead of a `/next` poll that has to wait are held
until the poll's answer: one write per invocation.

httptools leaves every limit to its user; the ones enforced here are aiohttp's 8190 bytes for
a request target, header name or value, at most 100 header fields and 64 KiB for the whole
head. A request that breaks them, or that the parser rejects, is answered 400 and the
connection is closed after the answers before it.
"""

from __future__ import annotations

import asyncio
import collections
from typing import NamedTuple, Protocol, cast

import httptools
import orjson

#: Longest request target, header name or header value (aiohttp's line and field limit).
MAX_FIELD = 8190
#: Most header fields in one request.
MAX_HEADERS = 100
#: Largest request head. It also bounds a field still arriving, which the parser buffers
#: before it hands the field over.
MAX_HEAD = 64 * 1024
#: Requests a runtime may pipeline ahead of the answers before it is cut off.
MAX_QUEUED = 16

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
_HEAD_TOO_LARGE = f"request head larger than {MAX_HEAD} bytes"
# Where the request being received is.
_IDLE, _HEAD, _BODY = 0, 1, 2


def _header_value(value: str) -> str:
    """A header value that cannot break the response apart (a client context may be JSON
    spread over lines: line breaks are JSON whitespace, so they become spaces)."""
    if "\r" in value or "\n" in value:
        return value.replace("\r", " ").replace("\n", " ")
    return value


def http_head(
    status: int,
    length: int,
    headers: dict[str, str] | None = None,
    content_type: str | None = "application/json",
) -> bytes:
    """The head of an HTTP/1.1 response with a body of `length` bytes: status line, content
    type (JSON unless told), length and `headers`."""
    lines = [f"HTTP/1.1 {status} {_REASONS[status]}"]
    if content_type is not None:
        lines.append("Content-Type: " + content_type)
    if headers:
        lines.extend(f"{name}: {_header_value(value)}" for name, value in headers.items())
    lines.append(f"Content-Length: {length}\r\n\r\n")
    return "\r\n".join(lines).encode()


def http_reply(
    status: int,
    body: bytes,
    headers: dict[str, str] | None = None,
    content_type: str | None = "application/json",
) -> bytes:
    """One whole HTTP/1.1 response: `http_head` and `body`."""
    return http_head(status, len(body), headers, content_type) + body


def error_reply(status: int, error_type: str, message: str) -> bytes:
    return http_reply(status, orjson.dumps({"errorMessage": message, "errorType": error_type}))


#: An unknown path, answered as the RIE's router (Go's `http.NotFound`) answers it.
NOT_FOUND = http_reply(
    404,
    b"404 page not found\n",
    {"X-Content-Type-Options": "nosniff"},
    content_type="text/plain; charset=utf-8",
)


def method_not_allowed(allow: str) -> bytes:
    """A wrong method on a known path: 405 with `Allow` and no body (the RIE's router)."""
    return http_reply(405, b"", {"Allow": allow}, content_type=None)


class Request(NamedTuple):
    """One complete request, as the Runtime API reads it."""

    method: str
    #: The request target as sent: path and query.
    target: str
    #: `Lambda-Runtime-Function-Error-Type`.
    error_type: str | None
    content_length: str | None
    #: None when the body was larger than the handler's `max_response` (it was counted and
    #: dropped as it arrived).
    body: bytes | None
    #: The connection ends after this request's answer (`Connection: close`, HTTP/1.0).
    close: bool
    #: The `Lambda-Extension-*` header fields (names lower-cased), when the request has any:
    #: the Extensions and Telemetry APIs read them.
    extension: dict[str, str] | None = None


class RequestHandler(Protocol):
    """What a connection needs from its endpoint."""

    max_response: int
    connections: set[RuntimeConnection]

    def dispatch(self, conn: RuntimeConnection, request: Request) -> bytes | None:
        """The answer to `request`, or None to park the connection until `answer_parked`."""

    def connection_gone(self, conn: RuntimeConnection) -> None:
        """`conn` will read no more requests."""


class _Rejected(Exception):
    """Raised in a parser callback to stop parsing: the runtime gets `reply` and the
    connection is closed."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.reply = error_reply(400, "BadRequest", message)


class RuntimeConnection(asyncio.Protocol):
    """One connection of the runtime. Bodies are kept up to the handler's `max_response`
    (the rest is counted and dropped) and requests are answered strictly in order. A request
    the handler cannot answer yet (a `/next` poll with nothing to hand out) parks the queue
    until the handler delivers its answer through `answer_parked`.

    Flow control: bodies are read in `on_body` as they arrive, so a request being received
    never needs the socket paused. What remains is paused here: reading stops while the
    runtime does not read its answers (the transport asked to pause writing), and while a
    parked poll holds more than `max_response` bytes of bodies pipelined behind it."""

    def __init__(self, handler: RequestHandler) -> None:
        self._handler = handler
        self._limit = handler.max_response
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        # The request being received.
        self._stage = _IDLE
        self._begun = 0  # requests begun so far, to tell a read that lay inside one head
        self._head = 0  # bytes of its target and header fields
        self._spill = 0  # bytes of the reads that lay inside its head (see data_received)
        self._fields = 0
        self._target = b""
        self._error_type: bytes | None = None
        self._length: bytes | None = None
        self._extension: dict[str, str] | None = None
        self._expect = False
        self._continued = False
        self._body: list[bytes] = []
        self._size = 0
        #: Complete requests not answered yet: the parked poll first, then what followed it.
        self._queue: collections.deque[Request] = collections.deque()
        self._parked = False
        #: No more requests are read (one asked to close, or to upgrade the connection).
        self._ended = False
        self._closing = False
        self._write_paused = False
        self._read_paused = False
        #: Answers not written yet (see `_process`).
        self._out: list[bytes] = []

    # ---- asyncio ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transport does not derive from asyncio.Transport, but has its methods.
        self._transport = cast(asyncio.Transport, transport)
        self._handler.connections.add(self)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._closing = True
        self._transport = None
        self._handler.connection_gone(self)

    def data_received(self, data: bytes) -> None:
        if self._closing or self._ended:
            return
        stage, begun = self._stage, self._begun
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # The upgrade request was answered (or queued) with a close: the rest is not HTTP.
            self._ended = True
        except httptools.HttpParserError as exc:
            if not self._ended:  # bytes after a request that closes the connection are dropped
                self.fail(_rejection(exc))
                return
        if self._closing:
            return
        if self._stage == _HEAD and self._begun == begun + (stage == _IDLE):
            # The whole read went into the head still being received (it began inside it, or
            # began the head): the parser holds what it has of the current field, so bound it.
            self._spill += len(data)
            if self._spill > MAX_HEAD:
                self.fail(error_reply(400, "BadRequest", _HEAD_TOO_LARGE))
                return
        self._process()

    def eof_received(self) -> bool:
        # The runtime stopped sending: close once the answers are written. A poll parked
        # here can no longer receive an invocation, so the endpoint stops offering it one.
        self._handler.connection_gone(self)
        self._closing = True
        self._flush()  # answers held for a poll that will now never be answered
        return False

    def pause_writing(self) -> None:
        self._write_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._update_reading()

    # ---- httptools callbacks ---------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._stage = _HEAD
        self._begun += 1
        self._head = self._spill = self._fields = self._size = 0
        self._target = b""
        self._error_type = self._length = None
        self._extension = None
        self._expect = self._continued = False
        self._body = []

    def on_url(self, part: bytes) -> None:
        self._target += part
        self._head += len(part)
        if len(self._target) > MAX_FIELD:
            raise _Rejected(f"request target longer than {MAX_FIELD} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._fields += 1
        self._head += len(name) + len(value)
        if len(name) > MAX_FIELD or len(value) > MAX_FIELD:
            raise _Rejected(f"header field longer than {MAX_FIELD} bytes")
        if self._fields > MAX_HEADERS:
            raise _Rejected(f"more than {MAX_HEADERS} header fields")
        if self._head > MAX_HEAD:
            raise _Rejected(_HEAD_TOO_LARGE)
        name = name.lower()
        if name == b"content-length":
            self._length = value
        elif name == b"lambda-runtime-function-error-type":
            if self._error_type is None:
                self._error_type = value
        elif name == b"expect":
            self._expect = value.lower() == b"100-continue"
        elif name.startswith(b"lambda-extension-"):
            if self._extension is None:
                self._extension = {}
            self._extension.setdefault(name.decode("latin-1"), value.decode("utf-8", "replace"))

    def on_headers_complete(self) -> None:
        self._stage = _BODY

    def on_body(self, chunk: bytes) -> None:
        self._size += len(chunk)
        if self._size <= self._limit:
            self._body.append(chunk)
        elif self._body:
            self._body = []  # over the limit: only the size is kept from here on

    def on_message_complete(self) -> None:
        self._stage = _IDLE
        parser = self._parser
        close = not parser.should_keep_alive() or parser.should_upgrade()
        if close:
            self._ended = True  # what follows it is not read
        error_type, length = self._error_type, self._length
        self._queue.append(
            Request(
                parser.get_method().decode(),
                self._target.decode("utf-8", "replace"),
                None if error_type is None else error_type.decode("utf-8", "replace"),
                None if length is None else length.decode("latin-1"),
                b"".join(self._body) if self._size <= self._limit else None,
                close,
                self._extension,
            )
        )
        if len(self._queue) > MAX_QUEUED:
            raise _Rejected("too many pipelined requests")
        self._answer_queued()

    # ---- answers ---------------------------------------------------------------------------

    def answer_parked(self, reply: bytes, body: bytes = b"") -> None:
        """Answer the parked `/next` poll and go on with what the runtime sent after it.
        `body`, when given, follows `reply` (then a head) as a buffer of its own: an event of
        hundreds of KB is handed to the transport as it is, never copied into one reply."""
        if not self._parked:
            return
        self._parked = False
        request = self._queue.popleft()
        if body:
            self._out.append(reply)
            reply = body
        self._send(reply, request.close)
        self._answer_queued()
        self._process()

    def fail(self, reply: bytes) -> None:
        """Answer a request that cannot be parsed and drop the connection."""
        self._send(reply, close=True)

    def _process(self) -> None:
        """Write the answers, unless a `/next` poll is parked. The answers to requests
        pipelined ahead of a poll that has to wait (the bundled client's result post) are held
        and written with the poll's answer: the runtime is waiting for that anyway, and one
        write per invocation instead of two saves a system call here and a wake-up in the
        runtime."""
        if self._parked or self._read_paused:
            self._update_reading()
        if self._parked:
            return
        if self._expect and not self._continued and self._stage == _BODY and not self._closing:
            # The request being received is next in line and its body has not all come: the
            # runtime may be waiting for the go-ahead before it sends the body.
            self._continued = True
            self._out.append(_CONTINUE)
        self._flush()

    def _answer_queued(self) -> None:
        queue = self._queue
        while queue and not self._parked and not self._closing:
            request = queue[0]
            reply = self._handler.dispatch(self, request)
            if reply is None:
                self._parked = True
                return
            queue.popleft()
            self._send(reply, request.close)

    def _send(self, reply: bytes, close: bool) -> None:
        self._out.append(reply)
        if close and not self._closing:
            self._closing = True
            self._handler.connection_gone(self)  # before connection_lost: see eof_received
            self._flush()
            if self._transport is not None:
                self._transport.close()  # after the buffered answers are written

    def _flush(self) -> None:
        """Write what is waiting in one transport call; several answers (or a head and its
        body) go as a list, which uvloop sends with one writev instead of joining copies."""
        out = self._out
        if not out:
            return
        self._out = []
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if len(out) == 1:
            transport.write(out[0])
        else:
            transport.writelines(out)

    def _update_reading(self) -> None:
        pause = self._write_paused or (self._parked and self._held() > self._limit)
        transport = self._transport
        if pause == self._read_paused or transport is None or self._closing:
            return
        self._read_paused = pause
        if pause:
            transport.pause_reading()
        else:
            transport.resume_reading()

    def _held(self) -> int:
        """Bytes of bodies received behind the parked poll (at the queue's head)."""
        if len(self._queue) == 1 and self._stage != _BODY:
            return 0  # the usual case: the poll alone, checked on every read while parked
        queued = sum(len(r.body) for r in self._queue if r.body is not None)
        receiving = self._body if self._stage == _BODY else ()
        return queued + sum(len(chunk) for chunk in receiving)


def _rejection(exc: httptools.HttpParserError) -> bytes:
    """The 400 answer to a request the parser stopped at."""
    cause = exc.__context__
    if isinstance(exc, httptools.HttpParserCallbackError) and cause is not None:
        if isinstance(cause, _Rejected):
            return cause.reply
        raise cause  # a fault of ours in a callback, not of the request
    return error_reply(400, "BadRequest", f"malformed request: {exc}")
