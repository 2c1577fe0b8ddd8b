"""The daemon's HTTP server on the listen address: /healthz and /metrics (webhooks and the
Invoke API mount here too)."""

from __future__ import annotations

import ssl
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

from aiohttp import web

from triggerd.invoke_api import INVOKE_ROUTE, invoke_handler
from triggerd.routes import RouteMatch
from triggerd.types import ConfigError

if TYPE_CHECKING:
    from triggerd.daemon import Daemon

DAEMON_KEY: web.AppKey[Daemon] = web.AppKey("daemon")
ROUTE_KEY: web.RequestKey[RouteMatch] = web.RequestKey("route", RouteMatch)


async def dispatch(request: web.Request) -> web.StreamResponse:
    """Hand a request to the push-source route that matches it (webhooks)."""
    raw_path = request.raw_path.split("?", 1)[0]
    found = request.app[DAEMON_KEY].routes.match(request.method, raw_path)
    if found is None:
        return web.json_response({"message": "Not Found"}, status=404)
    if found is False:
        return web.json_response({"message": "Method Not Allowed"}, status=405)
    assert not isinstance(found, bool)
    handler, match = found
    request[ROUTE_KEY] = match
    return await handler(request)


async def healthz(request: web.Request) -> web.Response:
    daemon = request.app[DAEMON_KEY]
    body = {
        "status": "ok" if daemon.ready.is_set() else "starting",
        "functions": sorted(daemon.functions),
        "triggers": sorted(daemon.triggers),
    }
    return web.json_response(body, status=200 if daemon.ready.is_set() else 503)


async def metrics(request: web.Request) -> web.Response:
    daemon = request.app[DAEMON_KEY]
    if daemon.state is not None:
        queues = [q.name for q in daemon.invoke_queues.values()]
        for name in [*daemon.triggers, *queues]:
            depth = await daemon.state.queue_depth(name)
            daemon.metrics.queue_depth.labels(name).set(depth)
    return web.Response(
        body=daemon.metrics.exposition(), content_type="text/plain", charset="utf-8"
    )


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


async def start_http(daemon: Daemon, stack: AsyncExitStack, listen: str) -> str:
    """Start the server; returns the bound address (port 0 picks a free port). Serves HTTPS
    when `daemon.tls_cert_file` is set."""
    app = web.Application(client_max_size=6 * 1024 * 1024 + 1024)
    app[DAEMON_KEY] = daemon
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_post(INVOKE_ROUTE, invoke_handler(daemon))  # before the catch-all
    app.router.add_route("*", "/{tail:.*}", dispatch)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=5.0)
    await runner.setup()
    stack.push_async_callback(runner.cleanup)
    host, port = parse_listen(listen)
    settings = daemon.config.daemon
    context = (
        tls_context(settings.tls_cert_file, settings.tls_key_file)
        if settings.tls_cert_file
        else None
    )
    site = web.TCPSite(runner, host, port, reuse_address=True, ssl_context=context)
    await site.start()
    server = site._server
    sockets = getattr(server, "sockets", None) or []
    if sockets:
        port = sockets[0].getsockname()[1]
    return f"{host}:{port}"
