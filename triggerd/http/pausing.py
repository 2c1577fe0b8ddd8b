"""`POST /control/triggers/{name}/pause` and `.../resume`, which `triggerd pause|resume` call:
the trigger drains and stops (or starts again) without a restart, and the daemon keeps the
state in its store, so a paused trigger stays paused across restarts. They are control
endpoints, beside /readyz. With `[[daemon.access_keys]]` they require AWS Signature Version 4
(service `lambda`, as the Invoke API) and a policy allowing `triggerd:PauseTrigger` /
`triggerd:ResumeTrigger` on the trigger (its name, or
`arn:aws:triggerd:<region>:<account>:trigger/<name>`)."""

from __future__ import annotations

from aiohttp import web

from triggerd.http.body import BodyTooLarge, read_body
from triggerd.http.host import HttpHost
from triggerd.http.routes import ROUTE_KEY
from triggerd.http.sigv4 import AuthError, SigV4Verifier, signed_request
from triggerd.types import HttpHandler, TriggerdError

PAUSE_ROUTE = "/control/triggers/{name}/pause"
RESUME_ROUTE = "/control/triggers/{name}/resume"


class TriggerNotFoundError(TriggerdError):
    """The trigger named is not an enabled trigger of the running config."""


class TriggerUnnamedError(TriggerdError):
    """A pause asked for a trigger without a `name`: its default name shifts when triggers
    are reordered, and the pause is kept by name."""


#: Largest body accepted (the endpoints take none; a signed request may carry an empty one).
_MAX_BODY = 1024


def _handler(host: HttpHost, pause: bool) -> HttpHandler:
    d = host.settings
    auth = (
        SigV4Verifier(d.access_keys, region=d.region, service="lambda", account_id=d.account_id)
        if d.access_keys
        else None
    )
    action = "triggerd:PauseTrigger" if pause else "triggerd:ResumeTrigger"

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        name = request[ROUTE_KEY].params["name"]
        if auth is not None:
            try:
                signed = signed_request(request)
                auth.check_headers(signed)  # refused before the body is read
                body = await read_body(request, _MAX_BODY)
                principal = auth.verify(signed, body)
                arn = f"arn:aws:triggerd:{d.region}:{d.account_id}:trigger/{name}"
                auth.authorize(principal, action, arn, name)
            except BodyTooLarge:
                return web.json_response({"message": "Body not expected"}, status=413)
            except AuthError as exc:
                return web.json_response(
                    {"__type": exc.code, "message": exc.message},
                    status=exc.status,
                    headers={"x-amzn-ErrorType": exc.code},
                )
        if not host.ready.is_set():
            return web.json_response({"message": "the daemon is starting"}, status=503)
        try:
            changed = await (host.pause_trigger(name) if pause else host.resume_trigger(name))
        except TriggerNotFoundError as exc:
            return web.json_response({"message": str(exc)}, status=404)
        except TriggerUnnamedError as exc:
            return web.json_response({"message": str(exc)}, status=400)
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
