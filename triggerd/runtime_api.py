"""The Lambda Runtime API (2018-06-01), served to one execution environment.

Each execution environment (one runtime process) gets its own endpoint on a loopback port,
because a runtime finds the API through `AWS_LAMBDA_RUNTIME_API=host:port`. The endpoint hands
out one invocation at a time: the backend `submit`s an invocation, the runtime's long-poll on
`/runtime/invocation/next` receives it, and the runtime's `/response` or `/error` post resolves
the invocation's future. `/runtime/init/error` resolves the endpoint's `ready` future instead.
"""

from __future__ import annotations

import asyncio
import collections
import enum
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from aiohttp.web_request import BaseRequest

from triggerd.types import MAX_SYNC_PAYLOAD

PREFIX = "/2018-06-01"
_BASE = PREFIX + "/runtime"
_NEXT = _BASE + "/invocation/next"
_INVOCATION = _BASE + "/invocation/"
_INIT_ERROR = _BASE + "/init/error"
#: How many answered request ids an endpoint remembers, to tell "already answered" (403)
#: from "unknown" (400).
_ANSWERED_MEMORY = 32
_ACCEPTED = orjson.dumps({"status": "OK"})


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


def _error_json(status: int, error_type: str, message: str) -> web.Response:
    body = orjson.dumps({"errorMessage": message, "errorType": error_type})
    return web.Response(status=status, body=body, content_type="application/json")


def _not_allowed() -> web.Response:
    return _error_json(405, "MethodNotAllowed", "method not allowed on this path")


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
    """The Runtime API of one execution environment."""

    def __init__(self, *, max_response_bytes: int = MAX_SYNC_PAYLOAD, host: str = "127.0.0.1"):
        self._host = host
        self._max_response = max_response_bytes
        self._pending: PendingInvocation | None = None
        self._current: PendingInvocation | None = None
        self._answered: collections.deque[str] = collections.deque(maxlen=_ANSWERED_MEMORY)
        self._wakeup: asyncio.Future[None] | None = None
        self._polling = False
        self._closed = False
        self._server: web.Server | None = None
        self._listener: asyncio.Server | None = None
        self._port = 0
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

    def make_server(self) -> web.Server:
        """aiohttp's low-level server with `handle` as its only handler (no application or
        router: the four paths are told apart by hand, which halves the per-request cost)."""
        loop = asyncio.get_running_loop()
        # The body limit leaves room for the "too large" check to answer 413 itself.
        limit = self._max_response + 1

        def make_request(message: Any, payload: Any, protocol: Any, writer: Any, task: Any) -> Any:
            return BaseRequest(
                message, payload, protocol, writer, task, loop, client_max_size=limit
            )

        return web.Server(
            self.handle, request_factory=make_request, handler_cancellation=True, access_log=None
        )

    async def start(self) -> None:
        server = self.make_server()
        listener = await asyncio.get_running_loop().create_server(server, self._host, 0)
        self._server, self._listener = server, listener
        self._port = int(listener.sockets[0].getsockname()[1])

    def submit(self, invocation: PendingInvocation) -> None:
        """Queue `invocation` for the runtime's next poll."""
        if self._closed:
            invocation.resolve(RuntimeReply(ReplyKind.CLOSED))
            return
        if self.busy:
            raise EndpointBusyError("an invocation is already in flight")
        self._pending = invocation
        self._wake()

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
        self._wake()
        if self._listener is not None and self._server is not None:
            self._listener.close()
            self._server.pre_shutdown()
            await self._server.shutdown(1.0)
            await self._listener.wait_closed()
            self._listener = self._server = None

    def _wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    # ---- runtime side ----------------------------------------------------------------------

    async def handle(self, request: BaseRequest) -> web.StreamResponse:
        """The Runtime API: `/next`, `/{id}/response`, `/{id}/error` and `/init/error`."""
        path = request.raw_path.partition("?")[0]  # the raw target: no URL object is built
        post = request.method == "POST"
        if path == _NEXT:
            return await self._next(request) if request.method == "GET" else _not_allowed()
        if path == _INIT_ERROR:
            return await self._init_error(request) if post else _not_allowed()
        if path.startswith(_INVOCATION):
            request_id, _, action = path[len(_INVOCATION) :].rpartition("/")
            if request_id and "/" not in request_id and action in ("response", "error"):
                if not post:
                    return _not_allowed()
                if action == "response":
                    return await self._response(request, request_id)
                return await self._error(request, request_id)
        return _error_json(404, "NotFound", "no such path " + path)

    async def _next(self, request: BaseRequest) -> web.StreamResponse:
        if self._polling or self._current is not None:
            return _error_json(403, "InvalidStateTransition", "an invocation is in flight")
        if not self.ready.done():
            self.ready.set_result(None)
        self._polling = True
        try:
            while self._pending is None and not self._closed:
                self._wakeup = asyncio.get_running_loop().create_future()
                await self._wakeup
        finally:
            self._polling = False
            self._wakeup = None
        inv = self._pending
        if inv is None:  # closed
            return _error_json(500, "Runtime.Closed", "the execution environment is shutting down")
        self._pending = None
        self._current = inv
        headers = {
            "Lambda-Runtime-Aws-Request-Id": inv.request_id,
            "Lambda-Runtime-Deadline-Ms": str(inv.deadline_ms),
            "Lambda-Runtime-Invoked-Function-Arn": inv.function_arn,
            "Content-Type": "application/json",
        }
        if inv.trace_id is not None:
            headers["Lambda-Runtime-Trace-Id"] = inv.trace_id
        if inv.client_context is not None:
            headers["Lambda-Runtime-Client-Context"] = inv.client_context
        if inv.cognito_identity is not None:
            headers["Lambda-Runtime-Cognito-Identity"] = inv.cognito_identity
        return web.Response(body=inv.payload, headers=headers)

    def _claim(self, request_id: str) -> PendingInvocation | web.Response:
        """The in-flight invocation `request_id`, or the error response for the runtime."""
        inv = self._current
        if inv is not None and inv.request_id == request_id:
            return inv
        if request_id in self._answered:
            return _error_json(403, "InvalidStateTransition", "invocation already answered")
        return _error_json(400, "InvalidRequestID", "unknown request id " + request_id)

    async def _read_body(self, request: BaseRequest) -> bytes | None:
        """The request body, or None when it is over the response size limit."""
        if request.content_length is not None and request.content_length > self._max_response:
            return None
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return None
        return body if len(body) <= self._max_response else None

    def _settle(self, inv: PendingInvocation, reply: RuntimeReply) -> web.Response:
        self.finish(inv)
        inv.resolve(reply)
        return web.Response(status=202, body=_ACCEPTED, content_type="application/json")

    async def _response(self, request: BaseRequest, request_id: str) -> web.StreamResponse:
        claimed = self._claim(request_id)
        if isinstance(claimed, web.Response):
            return claimed
        body = await self._read_body(request)
        if body is None:
            size = request.content_length
            self._settle(claimed, _too_large(size, self._max_response))
            return _error_json(413, "RequestEntityTooLarge", "response payload is too large")
        return self._settle(claimed, RuntimeReply(ReplyKind.RESPONSE, body))

    async def _error(self, request: BaseRequest, request_id: str) -> web.StreamResponse:
        claimed = self._claim(request_id)
        if isinstance(claimed, web.Response):
            return claimed
        error_type = request.headers.get("Lambda-Runtime-Function-Error-Type")
        raw = await self._read_body(request)
        body = error_body(raw if raw is not None else b"", error_type)
        return self._settle(claimed, RuntimeReply(ReplyKind.ERROR, body, error_type))

    async def _init_error(self, request: BaseRequest) -> web.StreamResponse:
        if self.ready.done():
            return _error_json(403, "InvalidStateTransition", "init already finished")
        error_type = request.headers.get("Lambda-Runtime-Function-Error-Type")
        raw = await self._read_body(request)
        body = error_body(raw if raw is not None else b"", error_type)
        if error_type is None:
            parsed = orjson.loads(body)
            error_type = str(parsed.get("errorType", "Runtime.Unknown"))
        self.ready.set_result(RuntimeReply(ReplyKind.INIT_ERROR, body, error_type))
        return web.Response(status=202, body=_ACCEPTED, content_type="application/json")


def _too_large(size: int | None, limit: int) -> RuntimeReply:
    shown = f"({size} bytes) " if size is not None else ""
    message = f"Response payload size {shown}exceeded maximum allowed payload size ({limit} bytes)."
    body = orjson.dumps({"errorMessage": message, "errorType": "Function.ResponseSizeTooLarge"})
    return RuntimeReply(ReplyKind.ERROR, body, "Function.ResponseSizeTooLarge")
