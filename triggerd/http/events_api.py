"""EventBridge's JSON 1.1 API on POST / of the control listener (`X-Amz-Target:
AWSEvents.<Operation>`), for the buses the config declares; the operations themselves are
`triggerd.fanout.events.EventsApi`.

With access keys, the request is checked as the Invoke API checks its own: SigV4 headers
before the body is read, the signature once it is, then each operation asks the caller's
policy (`events:PutEvents` on the bus ARN, ...). Bodies are capped at 1 MiB (413 beyond: the
entries' own 256 KB limit is checked on the parsed entries); a body that is not a JSON object
is a SerializationException; every refusal is a 4xx in AWS's shape (`__type`, which botocore
turns into the ClientError's code), never a 500 (a store that cannot take the events fails
the entries with InternalFailure instead)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from triggerd.fanout.events.buses import EventsApi
from triggerd.fanout.events.errors import EventsError
from triggerd.http.body import BodyTooLarge, read_body
from triggerd.http.host import HttpHost
from triggerd.http.refusals import mark_refused
from triggerd.http.sigv4 import AuthError, Principal, SigV4Verifier, payload_sha256, signed_request
from triggerd.types import HttpHandler

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from triggerd.config.buses import EventBusConfig
    from triggerd.http.aws_root import RootApis

__all__ = ["MAX_EVENTS_BODY", "TARGET_PREFIX", "events_handler", "serve_event_buses"]

TARGET_PREFIX = "AWSEvents"
#: The largest PutEvents body read (the entries' 256 KB, escaped as JSON, fit in it).
MAX_EVENTS_BODY = 1024 * 1024
_CONTENT_TYPE = "application/x-amz-json-1.1"
_PARSE_IN_THREAD = 256 * 1024

log = logging.getLogger("triggerd.events")


def _answer(status: int, doc: dict[str, Any], rid: str, error: str | None = None) -> web.Response:
    headers = {"x-amzn-RequestId": rid}
    if error is not None:
        headers["x-amzn-ErrorType"] = error
    return web.Response(
        status=status, body=orjson.dumps(doc), content_type=_CONTENT_TYPE, headers=headers
    )


def _error(code: str, message: str, rid: str, status: int = 400) -> web.Response:
    return _answer(status, {"__type": code, "message": message}, rid, code)


class _EventsHandler:
    def __init__(self, host: HttpHost, api: EventsApi) -> None:
        d = host.settings
        self.api = api
        self.auth = (
            SigV4Verifier(d.access_keys, region=d.region, service="events", account_id=d.account_id)
            if d.access_keys
            else None
        )

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        rid = str(uuid.uuid4())
        operation = request.headers.get("X-Amz-Target", "").partition(".")[2]
        try:
            return await self._handle(request, operation, rid)
        except AuthError as exc:
            mark_refused(request, exc.reason)
            return _error(exc.code, exc.message, rid, exc.status)
        except EventsError as exc:
            log.debug(
                "events.rejected",
                extra={"request_id": rid, "operation": operation[:64], "error_type": exc.code},
            )
            return _error(exc.code, exc.message, rid, exc.status)

    async def _handle(
        self, request: web.BaseRequest, operation: str, rid: str
    ) -> web.StreamResponse:
        auth = self.auth
        signed = signed_request(request) if auth is not None else None
        credential = auth.check_headers(signed) if auth is not None and signed else None
        try:
            body = await read_body(request, MAX_EVENTS_BODY)
        except BodyTooLarge:
            mark_refused(request, "body_too_large")
            return _error(
                "RequestEntityTooLargeException",
                f"Request must be smaller than {MAX_EVENTS_BODY} bytes",
                rid,
                413,
            )
        principal: Principal | None = None
        if auth is not None and signed is not None:
            principal = auth.verify_hashed(signed, await payload_sha256(body), credential)
        params = await _parse(body)

        def authorize(action: str, resource_arn: str) -> None:
            if auth is not None and principal is not None:
                auth.authorize(principal, action, resource_arn)

        result = await self.api.call(
            operation, params, authorize, request.headers.get("X-Amzn-Trace-Id")
        )
        return _answer(200, result, rid)


async def _parse(body: bytes) -> Any:
    if not body.strip():
        return {}
    try:
        if len(body) > _PARSE_IN_THREAD:
            return await asyncio.to_thread(orjson.loads, body)
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise EventsError("SerializationException", f"The body is not JSON: {exc}") from None


def events_handler(host: HttpHost, api: EventsApi) -> HttpHandler:
    """The handler of `AWSEvents.*` requests for `api`'s buses."""
    return _EventsHandler(host, api)


def serve_event_buses(
    root_apis: RootApis,
    host: HttpHost,
    buses: Callable[[], Sequence[EventBusConfig]],
) -> EventsApi | None:
    """Serve EventBridge's API on POST / for the buses `buses()` returns (the current config's,
    read on every call so a reload applies); nothing when the config declares none."""
    if not buses():
        return None
    d = host.settings
    api = EventsApi(
        buses,
        region=d.region,
        account_id=d.account_id,
        state=lambda: host.state,
        queues=host.invoke_queues,
        metrics=host.metrics,
    )
    root_apis.add_target(TARGET_PREFIX, events_handler(host, api))
    return api
