"""The webhook source: one route on the daemon's HTTP server, invoking the trigger's function.

Sync mode (`invocation = "sync"`): the handler invokes the function itself (RequestResponse)
and maps its response to HTTP; such requests never reach `receive`.
Event mode (`invocation = "event"`): the handler puts a Record on a bounded in-memory queue that
`receive` drains; the daemon's async path writes it to the durable queue and then calls `ack`,
and only then does the caller get 202. If that does not happen within `accept_timeout_s` the
caller gets 503 (retry later); a request not yet taken by the pipeline is then withdrawn.

Checks, in order: CORS preflight, header count/size (431), rate limit (429), declared body
size (413), authentication on the headers (401/403), the body (413 over the limit, 408 when
too slow), the HMAC of the body (403), concurrency (429), event size (413), then the
invocation.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Mapping
from itertools import chain
from typing import Any, TypeVar

import orjson
from aiohttp import web
from multidict import CIMultiDict

from triggerd.http.body import BodyTooLarge, read_body
from triggerd.http.pushed import Pending, PushedSource
from triggerd.http.refusals import mark_refused
from triggerd.http.routes import ROUTE_KEY
from triggerd.types import (
    MAX_ASYNC_PAYLOAD,
    MAX_SYNC_PAYLOAD,
    Clock,
    ConfigError,
    JSONDict,
    Record,
    SourceContext,
)
from triggerd_webhook import auth
from triggerd_webhook.config import CorsConfig, WebhookSourceConfig
from triggerd_webhook.events import (
    HttpRequest,
    PayloadFormat,
    RequestMeta,
    RouteInfo,
    api_id,
    build_event,
)
from triggerd_webhook.responses import (
    HttpReply,
    gateway_timeout,
    internal_error,
    map_result,
    message,
)

#: The route's timeout waits this much longer than the function's own timeout, so that the
#: backend reports the timeout (and recycles the worker) before the route gives up.
TIMEOUT_GRACE_S = 2.0
_REQUEST_ID_HEADER: dict[PayloadFormat, str] = {
    "1.0": "x-amzn-RequestId",
    "2.0": "Apigw-Requestid",
    "url": "x-amzn-RequestId",
}


class TokenBucket:
    """`rate` tokens a second, at most `burst` saved up; time from the injectable clock."""

    def __init__(self, rate: float, burst: int, clock: Clock) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.clock = clock
        self.tokens = float(burst)
        self.last = clock.monotonic()

    def take(self) -> float:
        """0 when a token was taken; otherwise seconds until one is available."""
        now = self.clock.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


T = TypeVar("T")


def _expire(task: asyncio.Task[Any], expired: list[bool]) -> None:
    expired.append(True)
    task.cancel()


async def within(
    seconds: float, call: Awaitable[T], loop: asyncio.AbstractEventLoop | None = None
) -> T | None:
    """`await call`, or None once `seconds` have passed (the call is cancelled). What
    `asyncio.timeout` does for one await, with a timer and no context manager: this wraps
    every synchronous webhook invocation. `loop`: the running loop, when the caller knows it
    (looking it up costs a system call on Python 3.11)."""
    if loop is None:
        loop = asyncio.get_running_loop()
    task = asyncio.current_task(loop)
    assert task is not None
    expired: list[bool] = []
    cancelling = task.cancelling()
    timer = loop.call_later(seconds, _expire, task, expired)
    try:
        result = await call
    except asyncio.CancelledError:
        if expired and task.uncancel() <= cancelling:
            return None  # our cancellation, and nobody else's
        raise
    finally:
        timer.cancel()
    if expired:  # the call ignored the cancellation: take the request back
        task.uncancel()
    return result


def cors_headers(cors: CorsConfig, origin: str | None) -> list[tuple[str, str]]:
    """Access-Control-* headers for an actual response (none when the origin is not allowed)."""
    if not origin or not origin_allowed(cors, origin):
        return []
    wildcard = "*" in cors.allow_origins
    out = [("Access-Control-Allow-Origin", "*" if wildcard else origin)]
    if not wildcard:
        out.append(("Vary", "Origin"))
    if cors.allow_credentials:
        out.append(("Access-Control-Allow-Credentials", "true"))
    if cors.expose_headers:
        out.append(("Access-Control-Expose-Headers", ",".join(cors.expose_headers)))
    return out


def origin_allowed(cors: CorsConfig, origin: str) -> bool:
    return "*" in cors.allow_origins or origin in cors.allow_origins


def preflight(cors: CorsConfig, headers: Mapping[str, str]) -> HttpReply:
    """The answer to `OPTIONS` with Origin and Access-Control-Request-Method."""
    origin = headers.get("Origin", "")
    method = headers.get("Access-Control-Request-Method", "").upper()
    methods = [m.upper() for m in cors.allow_methods]
    if not origin_allowed(cors, origin) or ("*" not in methods and method not in methods):
        return message(403, "Forbidden")
    out = cors_headers(cors, origin)
    out.append(("Access-Control-Allow-Methods", method if "*" in methods else ",".join(methods)))
    requested = headers.get("Access-Control-Request-Headers", "")
    if "*" in cors.allow_headers:
        if requested:
            out.append(("Access-Control-Allow-Headers", requested))
    else:
        out.append(("Access-Control-Allow-Headers", ",".join(cors.allow_headers)))
    if cors.max_age_s:
        out.append(("Access-Control-Max-Age", str(cors.max_age_s)))
    return HttpReply(204, out, b"")


def describe_request(request: web.BaseRequest) -> HttpRequest:
    raw_path, _, raw_query = request.raw_path.partition("?")
    raw_query = raw_query.partition("#")[0]
    # The connection's address, which aiohttp looks up once per connection (the transport
    # would make a system call for every request).
    sockname = getattr(request.protocol, "sockname", None)
    if sockname is None and request.transport is not None:
        sockname = request.transport.get_extra_info("sockname")
    port = sockname[1] if isinstance(sockname, tuple) and len(sockname) >= 2 else 80
    return HttpRequest(
        method=request.method,
        raw_path=raw_path or "/",
        raw_query=raw_query,
        headers=[(str(k), str(v)) for k, v in request.headers.items()],  # istr -> str
        body=b"",
        source_ip=request.remote or "",
        protocol=f"HTTP/{request.version.major}.{request.version.minor}",
        scheme=request.scheme,
        server_port=int(port),
    )


class WebhookSource(PushedSource):
    """Its pipeline side (event mode) is PushedSource's."""

    def __init__(self, config: WebhookSourceConfig, ctx: SourceContext) -> None:
        super().__init__()
        self.config = config
        self.ctx = ctx
        self.log = ctx.log
        self.fmt: PayloadFormat = config.payload_format
        self.api_id = api_id(ctx.trigger, 32 if self.fmt == "url" else 10)
        self.timeout_s = config.effective_timeout_s(ctx.function_timeout_s)
        fn_timeout = ctx.function_timeout_s
        self.wait_s = (
            self.timeout_s if self.timeout_s < fn_timeout else fn_timeout + TIMEOUT_GRACE_S
        )
        self.bucket = (
            TokenBucket(config.rate_limit_per_s, config.effective_burst, ctx.clock)
            if config.rate_limit_per_s
            else None
        )
        self.in_flight = 0
        self._stopping = False
        #: The loop the route's requests are served on (set by `start`).
        self._loop: asyncio.AbstractEventLoop | None = None
        event_mode = config.invocation_mode == "event"
        self._event_cap = MAX_ASYNC_PAYLOAD if event_mode else MAX_SYNC_PAYLOAD

    # ---- lifecycle ----

    async def start(self) -> None:
        cfg, ctx = self.config, self.ctx
        self._loop = asyncio.get_running_loop()
        where = f"trigger {ctx.trigger}"
        if ctx.http is None:
            raise ConfigError([f"{where}: a webhook needs the HTTP server (daemon.listen)"])
        if cfg.invocation_mode == "sync" and ctx.invoke is None:
            raise ConfigError([f"{where}: no synchronous invoke available for a sync webhook"])
        try:
            ctx.http.add_route(cfg.method, cfg.path, self.handle, owner=ctx.trigger)
        except ValueError as exc:
            raise ConfigError([f"{where}: {exc}"]) from None
        if cfg.cors is not None and cfg.method not in ("ANY", "OPTIONS"):
            try:
                ctx.http.add_route("OPTIONS", cfg.path, self.handle, owner=ctx.trigger)
            except ValueError:
                self.log.warning(
                    "webhook.preflight_route_taken",
                    extra={"trigger": ctx.trigger, "path": cfg.path},
                )
        self.log.info(
            "webhook.route_added",
            extra={
                "trigger": ctx.trigger,
                "method": cfg.method,
                "path": cfg.path,
                "payload_format": self.fmt,
                "invocation": cfg.invocation_mode,
                "auth": cfg.auth.type if cfg.auth else "none",
            },
        )

    async def stop(self) -> None:
        self._stopping = True
        if self.ctx.http is not None:
            self.ctx.http.remove_routes(self.ctx.trigger)
        self._pending.refuse_all()

    # ---- the HTTP side ----

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        cors = self.config.cors
        if (
            cors is not None
            and request.method == "OPTIONS"
            and origin
            and "Access-Control-Request-Method" in request.headers
        ):
            return self._response(preflight(cors, request.headers), None)
        rid = RequestMeta.new(
            self.fmt,
            self.ctx.clock.time(),
            request.headers.get("X-Amzn-Trace-Id"),
            request.headers.get("traceparent"),
        )
        try:
            reply = await self._answer(request, rid)
        except BodyTooLarge:
            reply = message(413, "Request Too Long")
        except (ConnectionError, asyncio.IncompleteReadError, web.HTTPException):
            raise
        except Exception:  # request boundary: a bug here must still answer like a gateway
            self.log.exception(
                "webhook.handler_crashed",
                extra={"trigger": self.ctx.trigger, "request_id": rid.request_id},
            )
            reply = internal_error(self.fmt)
        if cors is not None:
            extra = cors_headers(cors, origin)
            if extra:
                reply.headers = [
                    (k, v) for k, v in reply.headers if not k.lower().startswith("access-control-")
                ] + extra
        if self.log.isEnabledFor(logging.DEBUG):
            self._log_request(request, reply, rid)
        return self._response(reply, rid)

    def _log_request(self, request: web.BaseRequest, reply: HttpReply, rid: RequestMeta) -> None:
        self.log.debug(
            "webhook.request",
            extra={
                "trigger": self.ctx.trigger,
                "method": request.method,
                "path": request.path,
                "status": reply.status,
                "request_id": rid.request_id,
            },
        )

    def _response(self, reply: HttpReply, rid: RequestMeta | None) -> web.Response:
        headers: CIMultiDict[str] = CIMultiDict(reply.headers)
        if rid is not None:
            headers[_REQUEST_ID_HEADER[self.fmt]] = rid.request_id
        return web.Response(status=reply.status, body=reply.body, headers=headers)

    def _limits(self, request: web.BaseRequest) -> HttpReply | None:
        """What the headers decide before authentication: their count and size (431), the
        rate limit (429) and a declared body size (413)."""
        cfg = self.config
        raw = request.raw_headers
        # Names and values summed without a generator frame per header: every request.
        if len(raw) > cfg.max_headers or sum(map(len, chain.from_iterable(raw))) > (
            cfg.max_header_bytes
        ):
            self._refuse(request, "headers_too_large")
            return message(431, "Request Header Fields Too Large")
        if self.bucket is not None:
            wait = self.bucket.take()
            if wait > 0:
                self._refuse(request, "rate_limited")
                retry = str(max(1, round(wait + 0.499)))
                return message(429, "Too Many Requests", [("Retry-After", retry)])
        if request.content_length is not None and request.content_length > cfg.max_body_bytes:
            self._refuse(request, "body_too_large", limit=cfg.max_body_bytes)
            return message(413, "Request Too Long")
        return None

    def _refuse(self, request: web.BaseRequest, reason: str, **extra: object) -> None:
        """A refused request: marked for the listener, which counts refusals by reason and
        logs them rate-limited; logged here at DEBUG only, with the trigger. The reason only,
        never header values or secrets."""
        mark_refused(request, reason)
        self.log.debug(
            "webhook.refused", extra={"trigger": self.ctx.trigger, "reason": reason, **extra}
        )

    def _unauthorized(self, request: web.BaseRequest, failure: auth.AuthFailure) -> HttpReply:
        self._refuse(request, "auth_failed", detail=failure.reason)
        return message(failure.status, "Unauthorized" if failure.status == 401 else "Forbidden")

    async def _answer(self, request: web.BaseRequest, meta: RequestMeta) -> HttpReply:
        """Header checks and authentication before the body is read (so a slow or large body
        is never read for nothing; `Expect: 100-continue` is answered only once they pass),
        the body within the listener's body timeout, the MAC of an HMAC route, and only then
        a `max_concurrency` slot: a slow body never holds one."""
        cfg = self.config
        limited = self._limits(request)
        if limited is not None:
            return limited
        failure = auth.check_headers(cfg.auth, request.headers.get, self.ctx.clock.time())
        if failure is not None:
            return self._unauthorized(request, failure)
        try:
            body = await read_body(request, cfg.max_body_bytes)
        except BodyTooLarge:
            self._refuse(request, "body_too_large", limit=cfg.max_body_bytes)
            raise
        failure = auth.check_body(cfg.auth, request.headers.get, body)
        if failure is not None:
            return self._unauthorized(request, failure)
        if cfg.max_concurrency is not None and self.in_flight >= cfg.max_concurrency:
            self._refuse(request, "concurrency_limited")
            return message(429, "Too Many Requests", [("Retry-After", "1")])
        self.in_flight += 1
        try:
            return await self._admitted(request, body, meta)
        finally:
            self.in_flight -= 1

    async def _admitted(
        self, request: web.BaseRequest, body: bytes, meta: RequestMeta
    ) -> HttpReply:
        cfg = self.config
        event = self.build(request, body, meta)
        payload = orjson.dumps(event)
        if len(payload) > self._event_cap:
            self._refuse(request, "event_too_large", bytes=len(payload), limit=self._event_cap)
            return message(413, "Request Too Long")
        if cfg.invocation_mode == "event":
            return await self._enqueue(request, event, payload, meta)
        return await self._invoke(request, payload, meta)

    def build(self, request: web.BaseRequest, body: bytes, meta: RequestMeta) -> JSONDict:
        req = describe_request(request)
        req.body = body
        route = RouteInfo(
            method=self.config.method,
            template=self.config.path,
            # the route table's match, left on the request by the dispatcher
            params=dict(request[ROUTE_KEY].params),
            stage=self.config.effective_stage,
            stage_variables=self.config.stage_variables,  # read only: shared, not copied
            binary_media_types=self.config.binary_media_types,
            api_id=self.api_id,
            region=self.ctx.region,
            account_id=self.ctx.account_id,
        )
        return build_event(self.fmt, req, route, meta)

    async def _invoke(
        self, request: web.BaseRequest, payload: bytes, meta: RequestMeta
    ) -> HttpReply:
        assert self.ctx.invoke is not None
        result = await within(
            self.wait_s, self.ctx.invoke(payload, trace_id=meta.trace_id), self._loop
        )
        if result is None:
            self._failed("route timeout", meta)
            return gateway_timeout(self.fmt)
        reply, problem = map_result(
            self.fmt,
            result,
            accept=request.headers.get("Accept"),
            binary_media_types=self.config.binary_media_types,
        )
        if problem is not None:
            self._failed(problem, meta, result.request_id)
        return reply

    def _failed(self, problem: str, meta: RequestMeta, lambda_request_id: str = "") -> None:
        self.log.warning(
            "webhook.function_failed",
            extra={
                "trigger": self.ctx.trigger,
                "problem": problem,
                "request_id": meta.request_id,
                "lambda_request_id": lambda_request_id,
            },
        )

    async def _enqueue(
        self, request: web.BaseRequest, event: JSONDict, payload: bytes, meta: RequestMeta
    ) -> HttpReply:
        if self._stopping or len(self._pending) >= self.config.queue_size:
            self._refuse(request, "queue_full" if not self._stopping else "stopping")
            return message(503, "Service Unavailable", [("Retry-After", "1")])
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        pending = Pending(fut)
        record = Record(
            payload=event,
            item_id=meta.request_id,
            size=len(payload),
            created_at=meta.time_s,
            handle=pending,
            trace_id=meta.trace_id,
        )
        self._pending.push(record)
        done, _ = await asyncio.wait({fut}, timeout=self.config.accept_timeout_s)
        if done and fut.result():
            return HttpReply(202, [], b"")
        if not done and not pending.taken:
            fut.cancel()  # withdrawn: the pipeline skips it
        self._refuse(request, "not_queued_in_time", request_id=meta.request_id)
        return message(503, "Service Unavailable", [("Retry-After", "1")])
