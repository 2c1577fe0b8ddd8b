"""`POST /control/triggers/{name}/pause` and `.../resume`, which `triggerd pause|resume` call:
the trigger drains and stops (or starts again) without a restart, and the daemon keeps the
state in its store, so a paused trigger stays paused across restarts. They sit in the daemon's
route table beside /readyz and move with it."""

from __future__ import annotations

from aiohttp import web

from triggerd.http.host import HttpHost
from triggerd.http.routes import ROUTE_KEY
from triggerd.types import HttpHandler, TriggerdError

PAUSE_ROUTE = "/control/triggers/{name}/pause"
RESUME_ROUTE = "/control/triggers/{name}/resume"


class TriggerNotFoundError(TriggerdError):
    """The trigger named is not an enabled trigger of the running config."""


def _handler(host: HttpHost, pause: bool) -> HttpHandler:
    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        name = request[ROUTE_KEY].params["name"]
        if not host.ready.is_set():
            return web.json_response({"message": "the daemon is starting"}, status=503)
        try:
            changed = await (host.pause_trigger(name) if pause else host.resume_trigger(name))
        except TriggerNotFoundError as exc:
            return web.json_response({"message": str(exc)}, status=404)
        except TriggerdError as exc:
            return web.json_response({"message": str(exc)}, status=503)
        status = "paused" if pause else "running"
        return web.json_response({"trigger": name, "status": status, "changed": changed})

    return handle


def pause_routes(host: HttpHost) -> list[tuple[str, str, HttpHandler]]:
    return [
        ("POST", PAUSE_ROUTE, _handler(host, True)),
        ("POST", RESUME_ROUTE, _handler(host, False)),
    ]
