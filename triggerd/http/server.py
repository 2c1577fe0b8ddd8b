"""The daemon's HTTP server on the listen address: /healthz, /metrics, the Invoke API and the
push sources' routes (webhooks), all in the daemon's route table behind aiohttp's low-level
server (no aiohttp application or router: one table, matched most-specific first as API
Gateway does, and one routing step per request)."""

from __future__ import annotations

import ssl
from contextlib import AsyncExitStack

from aiohttp import HttpVersion11, web

from triggerd.http.host import HttpHost
from triggerd.http.invoke_api import INVOKE_ROUTE, invoke_handler
from triggerd.http.pausing import pause_routes
from triggerd.http.routes import ROUTE_KEY, Routes
from triggerd.types import ConfigError, HttpHandler, PartitionStats

_OWNER = "triggerd"


def make_dispatch(routes: Routes) -> HttpHandler:
    """The server's one handler: every path is a route of the daemon's route table (its own
    endpoints and the push sources'), matched most-specific first."""

    async def dispatch(request: web.BaseRequest) -> web.StreamResponse:
        raw_path = request.raw_path.partition("?")[0]
        found = routes.match(request.method, raw_path)
        if found is None:
            return web.json_response({"message": "Not Found"}, status=404)
        if found is False:
            return web.json_response({"message": "Method Not Allowed"}, status=405)
        assert not isinstance(found, bool)
        handler, match = found
        request[ROUTE_KEY] = match
        if "Expect" in request.headers:
            refused = await expect_continue(request)
            if refused is not None:
                return refused
        return await handler(request)

    return dispatch


async def expect_continue(request: web.BaseRequest) -> web.StreamResponse | None:
    """Answer `Expect: 100-continue` before the handler reads the body (clients such as curl
    otherwise wait a second before sending a large one); 417 for any other expectation."""
    expect = request.headers.get("Expect", "")
    if request.version != HttpVersion11:
        return None
    if expect.lower() != "100-continue":
        return web.json_response({"message": "Expectation Failed"}, status=417)
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    request.writer.output_size = 0  # the interim answer is not part of the response
    return None


def healthz_handler(host: HttpHost) -> HttpHandler:
    """/healthz: "ok" (200); "starting" or "state_store_failing" (503, with the reason)."""

    async def healthz(request: web.BaseRequest) -> web.StreamResponse:
        store = host.readiness()["state_store"]
        body: dict[str, object] = {
            "status": "ok" if host.ready.is_set() else "starting",
            "functions": sorted(host.functions),
            "triggers": sorted(host.trigger_names),
        }
        if store["status"] != "ok":
            body["status"] = "state_store_failing"
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
            queues = [q.name for q in host.invoke_queues.values()]
            for name in [*host.trigger_names, *queues]:
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


def add_daemon_routes(host: HttpHost) -> None:
    """/healthz, /readyz, /metrics, /statusz and the Invoke API, beside the webhooks in the route
    table."""
    healthz, metrics, readyz = healthz_handler(host), metrics_handler(host), readyz_handler(host)
    own = [
        ("GET", "/statusz", status_handler(host)),
        ("GET", "/healthz", healthz),
        ("HEAD", "/healthz", healthz),  # aiohttp leaves the body out of a HEAD answer
        ("GET", "/readyz", readyz),
        ("HEAD", "/readyz", readyz),
        ("GET", "/metrics", metrics),
        ("HEAD", "/metrics", metrics),
        ("POST", INVOKE_ROUTE, invoke_handler(host)),
        *pause_routes(host),
    ]
    for method, template, handler in own:
        try:
            host.routes.add_route(method, template, handler, owner=_OWNER)
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


async def start_http(host: HttpHost, stack: AsyncExitStack, listen: str) -> str:
    """Start the server; returns the bound address (port 0 picks a free port). Serves HTTPS
    when `daemon.tls_cert_file` is set."""
    add_daemon_routes(host)
    stack.callback(host.routes.remove_routes, _OWNER)
    # No access log: a line per request at INFO would flood the journal under webhook load
    # (the access_log argument of a runner reaches only an application's server).
    server = web.Server(make_dispatch(host.routes), access_log=None)
    runner = web.ServerRunner(server, handle_signals=False, shutdown_timeout=5.0)
    await runner.setup()
    stack.push_async_callback(runner.cleanup)
    address, port = parse_listen(listen)
    settings = host.settings
    context = (
        tls_context(settings.tls_cert_file, settings.tls_key_file)
        if settings.tls_cert_file
        else None
    )
    site = web.TCPSite(runner, address, port, reuse_address=True, ssl_context=context)
    await site.start()
    addresses = runner.addresses  # each site's getsockname(): (host, port, ...)
    if addresses:
        port = int(addresses[0][1])
    return f"{address}:{port}"
