"""The daemon's HTTP listeners: the public one (`listen`: the push sources' routes, such as
webhooks, and /healthz) and the control one (`control_listen`: the Invoke API, /metrics,
/readyz, /statusz and /healthz), each a route table behind aiohttp's low-level server (no
aiohttp application or router: one table, matched most-specific first as API Gateway does,
and one routing step per request).

`serve` opens one listener with the limits of `limits` (connection cap, header, body and idle
timeouts, every connection guarded) and the refusal counting of `refusals`; `start_http` opens
the public and the control listener with it, so both get the same. The dispatcher refuses what
no route may see (HTTP/0.9 and other versions, chunked HTTP/1.0, unknown expectations) before
routing."""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
import uuid
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any

from aiohttp import HttpVersion10, HttpVersion11, StreamReader, web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http import RawRequestMessage

from triggerd.http.aws_root import ROOT_ROUTE, RootApis
from triggerd.http.control_access import ControlAccess
from triggerd.http.host import HttpHost
from triggerd.http.invoke_api import INVOKE_ROUTE, ApiError, invoke_handler
from triggerd.http.limits import (
    LINGER_S,
    AcceptErrors,
    ConnectionGuard,
    Listener,
    ListenerLimits,
    ensure_descriptors,
    guard_of,
)
from triggerd.http.list_functions import LIST_ROUTE, list_functions_handler
from triggerd.http.pausing import pause_routes
from triggerd.http.refusals import REFUSAL_KEY, Refusals, ServerLog, mark_refused
from triggerd.http.routes import ROUTE_KEY, Routes
from triggerd.types import ConfigError, ExitCode, HttpHandler, OperatorError, PartitionStats

_OWNER = "triggerd"
#: Lambda's REST API paths start with the API version's date (/2015-03-31/functions/...).
_LAMBDA_API_PATH = re.compile(r"^/\d{4}-\d{2}-\d{2}/")
log = logging.getLogger("triggerd.http")

#: Set by the request factory on a request in an HTTP version other than 1.0 and 1.1 (the
#: version it came with: "0.9", "2.0", ...).
_UNSUPPORTED_VERSION: web.RequestKey[str] = web.RequestKey("unsupported_version", str)


RequestFactory = Callable[
    [
        RawRequestMessage,
        StreamReader,
        web.RequestHandler,
        AbstractStreamWriter,
        "asyncio.Task[None]",
    ],
    web.BaseRequest,
]


def _refusal(request: web.BaseRequest, status: int, text: str, reason: str) -> web.Response:
    mark_refused(request, reason)
    response = web.json_response({"message": text}, status=status)
    response.force_close()
    return response


def protocol_refusal(request: web.BaseRequest) -> web.Response | None:
    """What no route may see: HTTP/0.9 (no headers, so no Host, auth or length: 400) and
    versions other than 1.0 and 1.1 (505), chunked bodies on HTTP/1.0 (which has no chunked
    encoding: RFC 9112 section 6.1; 400), and expectations other than 100-continue (417)."""
    version = request.get(_UNSUPPORTED_VERSION)
    if version == "0.9":
        return _refusal(request, 400, "Bad Request", "http_0_9")
    if version is not None:
        return _refusal(request, 505, "HTTP Version Not Supported", "http_version")
    headers = request.headers
    version = request.version
    if version == HttpVersion10 and "chunked" in headers.get("Transfer-Encoding", "").lower():
        return _refusal(request, 400, "Bad Request", "chunked_http_1_0")
    expect = headers.get("Expect")
    if expect is not None and version == HttpVersion11 and expect.lower() != "100-continue":
        return _refusal(request, 417, "Expectation Failed", "expectation")
    return None


def unknown_operation() -> web.Response:
    """A Lambda API path (method and path) that triggerd does not serve, answered as AWS
    answers an operation it does not know, so SDKs raise a named error."""
    return ApiError(
        400,
        "UnknownOperationException",
        "Unknown operation: this endpoint serves Lambda's Invoke and ListFunctions only",
    ).response(str(uuid.uuid4()))


def make_dispatch(routes: Routes, *, aws_api: bool = False) -> HttpHandler:
    """The server's one handler: every path is a route of the daemon's route table (its own
    endpoints and the push sources'), matched most-specific first. It tells the connection's
    guard when a request starts and ends, and reports the request's refusal, if any.
    `Expect: 100-continue` is answered by `body.read_body`, once the handler has checked the
    headers. With `aws_api` (a listener serving the Invoke API), an unmatched Lambda API path
    gets AWS's UnknownOperationException instead of a plain 404 or 405."""

    async def route(request: web.BaseRequest) -> web.StreamResponse:
        refused = protocol_refusal(request)
        if refused is not None:
            return refused
        raw_path = request.raw_path.partition("?")[0]
        found = routes.match(request.method, raw_path)
        unmatched = found is None or found is False
        if unmatched and aws_api and _LAMBDA_API_PATH.match(raw_path):
            return unknown_operation()
        if found is None:
            return web.json_response({"message": "Not Found"}, status=404)
        if found is False:
            return web.json_response({"message": "Method Not Allowed"}, status=405)
        assert not isinstance(found, bool)
        handler, match = found
        request[ROUTE_KEY] = match
        return await handler(request)

    async def dispatch(request: web.BaseRequest) -> web.StreamResponse:
        guard = guard_of(request)
        if guard is not None:
            guard.request_started()
        response: web.StreamResponse | None = None
        try:
            response = await route(request)
            return response
        except web.HTTPException as exc:
            response = exc
            raise
        finally:
            _finished(request, guard, response)

    return dispatch


def _finished(
    request: web.BaseRequest, guard: ConnectionGuard | None, response: web.StreamResponse | None
) -> None:
    """After the handler: a connection whose request body was left unread is not kept alive
    (aiohttp drops the rest for a few seconds, then closes); the refusal is reported."""
    body_read = request.content.is_eof()
    if response is not None and not body_read:
        response.force_close()
    if guard is None:
        return
    guard.request_finished(body_read)
    reason = request.get(REFUSAL_KEY)
    if reason is not None:
        route = request.get(ROUTE_KEY)
        guard.refusals.refuse(
            reason, remote=request.remote or "", route=route.template if route else ""
        )


def healthz_handler(
    host: HttpHost, *, detail: bool = True, access: ControlAccess | None = None
) -> HttpHandler:
    """/healthz: "ok" (200); "starting" or "state_store_failing" (503, with the reason).
    With `detail` (the control surface) also the functions, triggers and the store's error,
    to the peers `access` allows; the public listener tells the world the status only."""

    async def healthz(request: web.BaseRequest) -> web.StreamResponse:
        store = host.readiness()["state_store"]
        body: dict[str, object] = {"status": "ok" if host.ready.is_set() else "starting"}
        shown = detail and (access is None or access.allowed(request))
        if shown:
            body["functions"] = sorted(host.functions)
            body["triggers"] = sorted(host.trigger_names)
        if store["status"] != "ok":
            body["status"] = "state_store_failing"
            if shown:
                body["state_store"] = store
        return web.json_response(body, status=200 if body["status"] == "ok" else 503)

    return healthz


def readyz_handler(host: HttpHost) -> HttpHandler:
    """/readyz: 200 when every trigger runs and the state store takes writes, else 503; the
    JSON body names each trigger's status and reasons."""

    async def readyz(request: web.BaseRequest) -> web.StreamResponse:
        body = host.readiness()
        return web.json_response(body, status=200 if body["status"] == "ready" else 503)

    return readyz


def metrics_handler(host: HttpHost) -> HttpHandler:
    async def metrics(request: web.BaseRequest) -> web.StreamResponse:
        state = host.state
        if state is not None:
            # Only what has an async queue: a poll trigger or a webhook in sync mode has none.
            queues = [q.name for q in host.invoke_queues.values()]
            for name in [*host.async_trigger_names, *queues]:
                depth = await state.queue_depth(name)
                host.metrics.queue_depth.labels(name).set(depth)
        return web.Response(
            body=host.metrics.exposition(), content_type="text/plain", charset="utf-8"
        )

    return metrics


def _partition(p: PartitionStats) -> dict[str, object]:
    out: dict[str, object] = {
        "partition": p.partition,
        "lag_records": p.lag_records,
        "lag_seconds": round(p.lag_seconds, 3),
        "committed_offset": p.committed_offset,
    }
    if p.lag_bytes is not None:  # byte figures only where the system gives them (slots)
        out["lag_bytes"] = p.lag_bytes
    if p.retained_bytes is not None:
        out["retained_bytes"] = p.retained_bytes
    if p.records_per_s is not None:
        out["records_per_s"] = p.records_per_s
    return out


def status_handler(host: HttpHost) -> HttpHandler:
    """GET /statusz: per trigger, its source's partitions with lag and committed offset;
    the triggers paused by `triggerd pause`."""

    async def status(request: web.BaseRequest) -> web.StreamResponse:
        triggers = {
            name: {
                "rebalances": stats.rebalances,
                "partitions": [_partition(p) for p in stats.partitions],
            }
            for name, stats in host.source_stats().items()
        }
        states = host.readiness()["triggers"]
        paused = sorted(name for name, t in states.items() if t["status"] == "paused")
        return web.json_response({"triggers": triggers, "paused": paused})

    return status


def add_daemon_routes(
    host: HttpHost,
    routes: Routes | None = None,
    *,
    control: bool = True,
    root_apis: RootApis | None = None,
) -> None:
    """/healthz, and with `control` the control endpoints (/readyz, /metrics, /statusz, the
    Invoke API, and POST / for the AWS APIs of `root_apis`, answering UnknownOperation when
    none is served), in a route table (default: the host's, beside the webhooks)."""
    table = host.routes if routes is None else routes
    access = ControlAccess(host.settings)
    healthz = healthz_handler(host, detail=control, access=access)
    own = [
        ("GET", "/healthz", healthz),
        ("HEAD", "/healthz", healthz),  # aiohttp leaves the body out of a HEAD answer
    ]
    if control:
        metrics = access.guard(metrics_handler(host))
        readyz = access.guard(readyz_handler(host))
        own += [
            ("GET", "/statusz", access.guard(status_handler(host))),
            ("GET", "/readyz", readyz),
            ("HEAD", "/readyz", readyz),
            ("GET", "/metrics", metrics),
            ("HEAD", "/metrics", metrics),
            ("POST", INVOKE_ROUTE, invoke_handler(host)),
            ("GET", LIST_ROUTE, list_functions_handler(host)),
            *pause_routes(host),
            ("POST", ROOT_ROUTE, (root_apis or RootApis()).dispatch),
        ]
    for method, template, handler in own:
        try:
            table.add_route(method, template, handler, owner=_OWNER)
        except ValueError as exc:
            raise ConfigError(
                [f"{method} {template} is the daemon's own endpoint; a webhook took it: {exc}"]
            ) from None


def parse_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"listen must be host:port, got {listen!r}")
    return host.strip("[]"), int(port)


def tls_context(cert_file: str, key_file: str | None) -> ssl.SSLContext:
    """A server TLS context (TLS 1.2+) from a PEM certificate chain and key."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            [f"daemon.tls_cert_file: cannot load the certificate/key: {exc}"]
        ) from None
    return context


def request_factory(loop: asyncio.AbstractEventLoop) -> RequestFactory:
    """aiohttp's request factory, except for the HTTP versions triggerd does not speak: an
    HTTP/0.9 request becomes an HTTP/1.0 one and any other version but 1.0 and 1.1 (2.0 in
    HTTP/1 syntax, 1.2) an HTTP/1.1 one, marked for refusal (400, 505), so the refusal goes
    out with a status line the client can read."""

    def make(
        message: RawRequestMessage,
        payload: StreamReader,
        protocol: web.RequestHandler,
        writer: AbstractStreamWriter,
        task: asyncio.Task[None],
    ) -> web.BaseRequest:
        state: dict[web.RequestKey[Any] | str, Any] | None = None
        version = message.version
        if version not in (HttpVersion10, HttpVersion11):
            answered_as = HttpVersion10 if version < HttpVersion10 else HttpVersion11
            message = message._replace(version=answered_as, should_close=True)
            state = {_UNSUPPORTED_VERSION: f"{version.major}.{version.minor}"}
        return web.BaseRequest(message, payload, protocol, writer, task, loop, state=state)

    return make


async def start_http(
    host: HttpHost,
    stack: AsyncExitStack,
    listen: str,
    *,
    routes: Routes | None = None,
    control: bool = True,
    name: str = "public",
    root_apis: RootApis | None = None,
) -> str:
    """Start a listener on a route table (default: the host's, with the webhooks) and the
    daemon's own endpoints (`control`: the control endpoints too); returns the bound address
    (port 0 picks a free port). Serves HTTPS when `daemon.tls_cert_file` is set. The public
    and the control listener are both started here, through `serve`, so both get the same
    limits."""
    table = host.routes if routes is None else routes
    add_daemon_routes(host, table, control=control, root_apis=root_apis)
    stack.callback(table.remove_routes, _OWNER)
    return await serve(make_dispatch(table, aws_api=control), host, stack, listen, name)


def reserve_descriptors(
    host: HttpHost, stack: AsyncExitStack, listeners: int, workers: int = 0, outbound: int = 0
) -> None:
    """Before the listeners start, once for all of them: raise the descriptor limit so that
    every listener's connection cap, `workers` more local workers and `outbound` connections
    of the backends' pools fit at once (refuse to start when they cannot), and turn
    accept() failures for want of descriptors into one rate-limited line until `stack`
    closes."""
    problem = ensure_descriptors(host.settings.http_max_connections, listeners, workers, outbound)
    if problem is not None:
        raise OperatorError(problem, ExitCode.LISTEN_FAILED)
    stack.callback(AcceptErrors(log).install(asyncio.get_running_loop()))


async def serve(
    handler: HttpHandler, host: HttpHost, stack: AsyncExitStack, listen: str, name: str
) -> str:
    """One listener on `listen` for `handler` (a `make_dispatch` of some route table): every
    connection guarded by the [daemon] http_* limits (`limits.ConnectionGuard`), refusals
    counted and logged as `name`'s; stopped when `stack` closes. Returns the bound address.
    The descriptors its connections need are `reserve_descriptors`'s, for all listeners."""
    settings = host.settings
    limits = ListenerLimits.from_settings(settings)
    refusals = Refusals(host.metrics.http_refused, log, name)
    loop = asyncio.get_running_loop()
    # No access log: a line per request at INFO would flood the journal under webhook load.
    server = web.Server(
        handler,
        request_factory=request_factory(loop),
        access_log=None,
        logger=ServerLog(logging.getLogger("triggerd.http.server"), refusals),
        lingering_time=LINGER_S,
    )
    # The control listener answers its own 503 and 408s in AWS's error shape.
    listener = Listener(server, limits, refusals, aws_errors=name == "control")
    address, port = parse_listen(listen)
    context = (
        tls_context(settings.tls_cert_file, settings.tls_key_file)
        if settings.tls_cert_file
        else None
    )
    sockets = await loop.create_server(
        listener.guard,
        address,
        port,
        ssl=context,
        ssl_handshake_timeout=limits.header_timeout_s if context else None,
        reuse_address=True,
        backlog=511,
    )
    stack.push_async_callback(_stop, sockets, server)
    bound = sockets.sockets
    if bound:
        port = int(bound[0].getsockname()[1])
    return f"{address}:{port}"


async def _stop(sockets: asyncio.Server, server: web.Server) -> None:
    """Stop accepting, let requests in progress finish (up to 5 s), close every connection."""
    sockets.close()
    await asyncio.sleep(0)  # requests that arrived with the last connections start first
    server.pre_shutdown()
    await server.shutdown(5.0)
