"""`POST /control/triggers/{name}/pause` and `.../resume`, which `triggerd pause|resume` call:
the trigger drains and stops (or starts again) without a restart, and the daemon keeps the
state in its store, so a paused trigger stays paused across restarts. They are control
endpoints, beside /readyz. With `[[daemon.access_keys]]` they require AWS Signature Version 4
(service `lambda`, as the Invoke API) and a policy allowing `triggerd:PauseTrigger` /
`triggerd:ResumeTrigger` on the trigger (its name, or
`arn:aws:triggerd:<region>:<account>:trigger/<name>`). `POST /control/reload` (`triggerd
reload`) reloads the config file and answers what changed (`triggerd:Reload`, resource
`daemon`)."""

from __future__ import annotations

import json

from aiohttp import web

from triggerd.http.body import BodyTooLarge, read_body
from triggerd.http.host import HttpHost
from triggerd.http.refusals import mark_refused
from triggerd.http.routes import ROUTE_KEY
from triggerd.http.sigv4 import AuthError, SigV4Verifier, signed_request
from triggerd.types import HttpHandler, TriggerdError

PAUSE_ROUTE = "/control/triggers/{name}/pause"
RESUME_ROUTE = "/control/triggers/{name}/resume"
#: `triggerd reload`: the reload's summary, or why the daemon refused the file.
RELOAD_ROUTE = "/control/reload"


class TriggerNotFoundError(TriggerdError):
    """The trigger named is not an enabled trigger of the running config."""


class TriggerUnnamedError(TriggerdError):
    """A pause asked for a trigger without a `name`: its default name shifts when triggers
    are reordered, and the pause is kept by name."""


class ConfigMismatchError(TriggerdError):
    """`triggerd reload` named a config file other than the one the daemon runs."""


#: Largest body accepted (pause/resume take none; reload an optional `{"config": path}`).
_MAX_BODY = 8192


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
                mark_refused(request, exc.reason)  # counted and logged by the dispatcher
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


def _reload_handler(host: HttpHost) -> HttpHandler:
    """`POST /control/reload`, body `{"config": path}` (optional: the file the caller means,
    refused with 409 when the daemon runs another): the reload's summary, as `daemon.reloaded`
    logs it, with "status" reloaded, failed (a trigger did not start) or rejected (the file
    is invalid, or a function cannot start: the running config is kept) and "config"."""
    d = host.settings
    auth = (
        SigV4Verifier(d.access_keys, region=d.region, service="lambda", account_id=d.account_id)
        if d.access_keys
        else None
    )

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        try:
            if auth is not None:
                signed = signed_request(request)
                auth.check_headers(signed)  # refused before the body is read
                body = await read_body(request, _MAX_BODY)
                principal = auth.verify(signed, body)
                arn = f"arn:aws:triggerd:{d.region}:{d.account_id}:daemon"
                auth.authorize(principal, "triggerd:Reload", arn, "daemon")
            else:
                body = await read_body(request, _MAX_BODY)
        except BodyTooLarge:
            return web.json_response({"message": "Body too large"}, status=413)
        except AuthError as exc:
            return web.json_response(
                {"__type": exc.code, "message": exc.message},
                status=exc.status,
                headers={"x-amzn-ErrorType": exc.code},
            )
        path: str | None = None
        if body.strip():
            try:
                parsed = json.loads(body)
            except ValueError:
                parsed = None
            if not isinstance(parsed, dict) or not isinstance(parsed.get("config"), str | None):
                return web.json_response(
                    {"message": 'the body is {"config": "<path>"} or empty'}, status=400
                )
            path = parsed.get("config")
        if not host.ready.is_set():
            return web.json_response({"message": "the daemon is starting"}, status=503)
        try:
            summary = await host.reload_config(path)
        except ConfigMismatchError as exc:
            return web.json_response({"message": str(exc)}, status=409)
        except TriggerdError as exc:
            return web.json_response({"message": str(exc)}, status=503)
        return web.json_response(summary)

    return handle


def pause_routes(host: HttpHost) -> list[tuple[str, str, HttpHandler]]:
    return [
        ("POST", PAUSE_ROUTE, _handler(host, True)),
        ("POST", RESUME_ROUTE, _handler(host, False)),
        ("POST", RELOAD_ROUTE, _reload_handler(host)),
    ]
