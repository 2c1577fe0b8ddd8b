"""The Lambda Runtime API (2018-06-01), served to one execution environment.

Each execution environment (one runtime process) gets its own endpoint on a loopback port,
because a runtime finds the API through `AWS_LAMBDA_RUNTIME_API=host:port`. The endpoint hands
out one invocation at a time: the backend `submit`s an invocation, the runtime's long-poll on
`/runtime/invocation/next` receives it, and the runtime's `/response` or `/error` post resolves
the invocation's future. `/runtime/init/error` resolves the endpoint's `ready` future instead.

This is the hottest path of a warm invocation (two requests per invocation), so the endpoint is
no HTTP server: each connection is an asyncio protocol around httptools' request parser
(`runtime_http.RuntimeConnection`), and requests are answered from the parser's callbacks,
with no task and no request or response object per request (a request is a tuple of the
fields the API reads). `dispatch` turns one such tuple into its prebuilt answer (or parks a
`/next` poll until `submit`), and the connection writes the answers once per read, or once
per invocation when the runtime pipelined its result post ahead of its next poll. It serves
one runtime on loopback; keep-alive, pipelining (answers in request order), `Expect:
100-continue`, chunked bodies and `Connection: close` behave as HTTP/1.1 requires, and the
limits on the head and on pipelined requests are in `runtime_http`.

Answers follow the AWS Runtime Interface Emulator's handlers (status codes, error types and
messages, a wrong method 405 with `Allow`, an unknown path Go's plain-text 404). The same
endpoint serves the environment's Extensions and Telemetry APIs (`extensions`,
`telemetry_api`): init is done once the runtime and every extension poll for events, and an
invocation is handed out only while every extension waits for its next event.
"""

from __future__ import annotations

import asyncio
import collections
import enum
from dataclasses import dataclass, field

import orjson

from triggerd.functions.extensions import (
    EXTENSION_PREFIX,
    LOGS_PATH,
    TELEMETRY_PATH,
    ExtensionsAPI,
)
from triggerd.functions.runtime_http import (
    NOT_FOUND,
    Request,
    RuntimeConnection,
    error_reply,
    http_head,
    http_reply,
    method_not_allowed,
)
from triggerd.types import MAX_SYNC_PAYLOAD

__all__ = [
    "PREFIX",
    "EndpointBusyError",
    "PendingInvocation",
    "ReplyKind",
    "RuntimeEndpoint",
    "RuntimeReply",
    "error_body",
    "http_reply",
]

PREFIX = "/2018-06-01"
_BASE = PREFIX + "/runtime"
_NEXT = _BASE + "/invocation/next"
_INVOCATION = _BASE + "/invocation/"
_INIT_ERROR = _BASE + "/init/error"
_PING = PREFIX + "/ping"
#: How many answered request ids an endpoint remembers, to tell "already answered" (403)
#: from "unknown" (400).
_ANSWERED_MEMORY = 32


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


_ACCEPTED = http_reply(202, orjson.dumps({"status": "OK"}))
_CLOSING = error_reply(500, "Runtime.Closed", "the execution environment is shutting down")
_HEAD_NOT_ALLOWED = http_reply(405, b"", content_type=None)
_PONG = http_reply(200, b"pong", content_type="text/plain; charset=utf-8")
_INVALID_REQUEST_ID = error_reply(400, "InvalidRequestID", "Invalid request ID")
_ANSWER_ACTIONS = {"response": "InvocationResponse", "error": "InvocationErrorResponse"}


def _too_large_reply(limit: int) -> bytes:
    message = f"Exceeded maximum allowed payload size ({limit} bytes)."
    return error_reply(413, "RequestEntityTooLarge", message)


def _transition(state: str, target: str) -> bytes:
    """The RIE's answer to a request the runtime's state does not allow."""
    message = (
        f"State transition from {state} to {target} failed for runtime. "
        "Error: State transition is not allowed"
    )
    return error_reply(403, "InvalidStateTransition", message)


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


class RuntimeEndpoint:
    """The Runtime API of one execution environment, with its Extensions and Telemetry APIs."""

    def __init__(
        self,
        *,
        max_response_bytes: int = MAX_SYNC_PAYLOAD,
        host: str = "127.0.0.1",
        extensions: ExtensionsAPI | None = None,
    ):
        self._host = host
        self.max_response = max_response_bytes
        self._pending: PendingInvocation | None = None
        self._current: PendingInvocation | None = None
        self._answered: collections.deque[str] = collections.deque(maxlen=_ANSWERED_MEMORY)
        #: The connection whose `/next` poll waits for an invocation.
        self._poller: RuntimeConnection | None = None
        self._closed = False
        self._listener: asyncio.Server | None = None
        self._port = 0
        self.connections: set[RuntimeConnection] = set()
        #: None once the runtime first polls `/next` and every extension is waiting for
        #: events (init done), or the init-error reply.
        self.ready: asyncio.Future[RuntimeReply | None] = asyncio.get_running_loop().create_future()
        self.extensions = extensions or ExtensionsAPI()
        self.extensions.on_change = self._extensions_changed
        self.telemetry = self.extensions.telemetry
        #: The runtime's state, named as the RIE names it (its 403 answers quote it).
        self._state = "Started"
        self._runtime_polled = False
        self._loop = asyncio.get_running_loop()
        self._started_at = self._loop.time()
        #: The invocation whose phase is not over yet (extensions still busy), for telemetry.
        self._phase: tuple[str, float, str] | None = None

    # ---- owner side ------------------------------------------------------------------------

    @property
    def address(self) -> str:
        """`host:port`, the value of `AWS_LAMBDA_RUNTIME_API`."""
        return f"{self._host}:{self._port}"

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop the endpoint serves on (the one it was made on)."""
        return self._loop

    @property
    def busy(self) -> bool:
        return self._pending is not None or self._current is not None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        listener = await loop.create_server(lambda: RuntimeConnection(self), self._host, 0)
        self._listener = listener
        self._port = int(listener.sockets[0].getsockname()[1])
        self._started_at = loop.time()
        self.telemetry.init_start()

    def submit(self, invocation: PendingInvocation) -> None:
        """Hand `invocation` to the runtime's waiting poll, or keep it for its next one (or
        until every extension is waiting for events again)."""
        if self._closed:
            invocation.resolve(RuntimeReply(ReplyKind.CLOSED))
            return
        if self.busy:
            raise EndpointBusyError("an invocation is already in flight")
        self._pending = invocation
        self._hand_out()

    def _hand_out(self) -> None:
        poller = self._poller
        inv = self._pending
        if poller is not None and inv is not None and self.extensions.ready:
            self._poller = None
            poller.answer_parked(*self._deliver(inv))

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
            phase = self._phase
            if phase is not None and invocation.result.done():
                # Given up on by its owner (a timeout): the phase ends here.
                self._phase = None
                elapsed_ms = (self._loop.time() - phase[1]) * 1000
                self.telemetry.runtime_done(phase[0], "timeout", elapsed_ms, None)
                self.telemetry.report(phase[0], "timeout", elapsed_ms)

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
        await self.telemetry.close()

    def connection_gone(self, conn: RuntimeConnection) -> None:
        self.connections.discard(conn)
        if self._poller is conn:
            self._poller = None
        self.extensions.connection_gone(conn)

    # ---- init and extensions ---------------------------------------------------------------

    def _check_init(self) -> None:
        if self.ready.done():
            return
        failure = self.extensions.failure
        if failure is not None:
            self._init_over(failure.error_type)
            body = failure.body()
            self.ready.set_result(RuntimeReply(ReplyKind.INIT_ERROR, body, failure.error_type))
        elif self._runtime_polled and self.extensions.ready:
            self.extensions.close_registration()
            self._init_over(None)
            self.ready.set_result(None)

    def _init_over(self, error_type: str | None) -> None:
        self.telemetry.init_end((self._loop.time() - self._started_at) * 1000, error_type)

    def _extensions_changed(self) -> None:
        self._check_init()
        if self.extensions.ready:
            self._phase_over()
            self._hand_out()

    def _phase_over(self) -> None:
        """The runtime answered and every extension polls again: `platform.report`."""
        phase = self._phase
        if phase is not None and self._current is None:
            self._phase = None
            rid, started, status = phase
            self.telemetry.report(rid, status, (self._loop.time() - started) * 1000)

    # ---- runtime side ----------------------------------------------------------------------

    def dispatch(self, conn: RuntimeConnection, request: Request) -> bytes | None:
        """The answer to one request (its `body` is None when over the limit), or None for a
        poll (`/next`, `event/next`) that must wait for an event."""
        method = request.method
        if method == "HEAD":
            return _HEAD_NOT_ALLOWED  # an answer to HEAD carries no body
        path = request.target.partition("?")[0]
        post = method == "POST"
        if path == _NEXT:
            return self._next(conn) if method == "GET" else method_not_allowed("GET")
        if path.startswith(_INVOCATION):
            request_id, _, action = path[len(_INVOCATION) :].rpartition("/")
            if request_id and "/" not in request_id and action in _ANSWER_ACTIONS:
                if not post:
                    return method_not_allowed("POST")
                return self._answer(request, request_id, action)
        elif path == _INIT_ERROR:
            return self._init_error(request) if post else method_not_allowed("POST")
        elif path.startswith(EXTENSION_PREFIX) or path in (TELEMETRY_PATH, LOGS_PATH):
            return self.extensions.dispatch(conn, request, path)
        elif path == _PING:
            return _PONG if method == "GET" else method_not_allowed("GET")
        return NOT_FOUND

    def _next(self, conn: RuntimeConnection) -> bytes | None:
        if self._poller is not None or self._current is not None:
            return _transition(self._state, "Ready")
        self._state = "Ready"
        if not self._runtime_polled:
            self._runtime_polled = True
            self._check_init()
        if self._closed:
            return _CLOSING
        inv = self._pending
        if inv is None or not self.extensions.ready:
            self._poller = conn
            return None
        head, body = self._deliver(inv)
        return head + body

    def _deliver(self, inv: PendingInvocation) -> tuple[bytes, bytes]:
        """The head of the `/next` answer handing out `inv`, and its body (the event)."""
        self._pending = None
        self._current = inv
        self._state = "Running"
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
        extensions = self.extensions
        if extensions.by_id:
            extensions.invoke(inv.request_id, inv.deadline_ms, inv.function_arn, inv.trace_id)
        if self.telemetry.wanted:
            self.telemetry.start(inv.request_id, inv.trace_id)
            self._phase = (inv.request_id, self._loop.time(), "success")
        return http_head(200, len(inv.payload), headers), inv.payload

    def _claim(self, request_id: str, action: str) -> PendingInvocation | bytes:
        """The in-flight invocation `request_id`, or the error answer for the runtime."""
        inv = self._current
        if inv is not None and inv.request_id == request_id:
            return inv
        if request_id in self._answered:
            return _transition(self._state, _ANSWER_ACTIONS[action])
        return _INVALID_REQUEST_ID

    def _answer(self, request: Request, request_id: str, action: str) -> bytes:
        claimed = self._claim(request_id, action)
        if isinstance(claimed, bytes):
            return claimed
        self.finish(claimed)
        self._state = "RuntimeResponseSentState"
        body = request.body
        answer = _ACCEPTED
        if action == "error":
            error_type = request.error_type
            raw = error_body(body if body is not None else b"", error_type)
            reply = RuntimeReply(ReplyKind.ERROR, raw, error_type)
        elif body is None:
            reply = _too_large(request.content_length, self.max_response)
            answer = _too_large_reply(self.max_response)
        else:
            reply = RuntimeReply(ReplyKind.RESPONSE, body)
        if self._phase is not None:
            self._runtime_done(reply)
        claimed.resolve(reply)
        return answer

    def _runtime_done(self, reply: RuntimeReply) -> None:
        assert self._phase is not None
        rid, started, _ = self._phase
        status = "success" if reply.kind is ReplyKind.RESPONSE else "error"
        error_type = None if status == "success" else (reply.error_type or "Runtime.Unknown")
        elapsed_ms = (self._loop.time() - started) * 1000
        self.telemetry.runtime_done(rid, status, elapsed_ms, error_type)
        self._phase = (rid, started, status)
        if self.extensions.ready:
            self._phase_over()

    def _init_error(self, request: Request) -> bytes:
        if self.ready.done() or self._runtime_polled:
            return _transition(self._state, "InitError")
        error_type = request.error_type
        raw = error_body(request.body if request.body is not None else b"", error_type)
        if error_type is None:
            parsed = orjson.loads(raw)
            error_type = str(parsed.get("errorType", "Runtime.Unknown"))
        self._state = "InitError"
        self._init_over(error_type)
        self.ready.set_result(RuntimeReply(ReplyKind.INIT_ERROR, raw, error_type))
        return _ACCEPTED


def _too_large(size: str | None, limit: int) -> RuntimeReply:
    shown = f"({size} bytes) " if size is not None and size.isdigit() else ""
    message = f"Response payload size {shown}exceeded maximum allowed payload size ({limit} bytes)."
    body = orjson.dumps({"errorMessage": message, "errorType": "Function.ResponseSizeTooLarge"})
    return RuntimeReply(ReplyKind.ERROR, body, "Function.ResponseSizeTooLarge")
