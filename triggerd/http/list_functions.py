"""Lambda's ListFunctions on the control listener (`GET /2015-03-31/functions/`), so that
`aws lambda list-functions --endpoint-url ...` and boto3's `list_functions` (and its paginator)
show the configured functions: the first call people make to check an endpoint and its keys.

Each function is a FunctionConfiguration with the fields triggerd knows (name, ARN, runtime,
handler, timeout, memory, `$LATEST`); `MaxItems` (1-10000, default 50) and `Marker` page as
AWS's do. Signed with SigV4 when access keys are configured (action `lambda:ListFunctions`,
which IAM grants on resource `*` only)."""

from __future__ import annotations

import uuid

import orjson
from aiohttp import web

from triggerd.http.body import BodyTooLarge, read_body
from triggerd.http.host import HttpHost, InvokeTarget
from triggerd.http.invoke_api import ApiError
from triggerd.http.refusals import mark_refused
from triggerd.http.sigv4 import AuthError, SigV4Verifier, signed_request
from triggerd.types import HttpHandler

LIST_ROUTE = "/2015-03-31/functions/"
DEFAULT_MAX_ITEMS = 50
#: A GET carries no body; a few bytes of slack for clients that send an empty one oddly.
_MAX_BODY = 1024


def _configuration(fn: InvokeTarget, arn: str) -> dict[str, object]:
    config = fn.config
    out: dict[str, object] = {
        "FunctionName": fn.name,
        "FunctionArn": arn,
        "Timeout": int(config.timeout_s),
        "MemorySize": int(config.memory_mb),
        "Version": "$LATEST",
        "PackageType": "Zip",
    }
    for field, key in (("runtime", "Runtime"), ("handler", "Handler")):
        value = getattr(config, field, None)
        if isinstance(value, str):
            out[key] = value
    return out


def _max_items(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_MAX_ITEMS
    if not raw.isdigit() or not 1 <= int(raw) <= 10000:
        raise ApiError(
            400,
            "InvalidParameterValueException",
            "1 validation error detected: Value at 'maxItems' failed to satisfy constraint: "
            "Member must have value between 1 and 10000",
        )
    return int(raw)


def list_functions_handler(host: HttpHost) -> HttpHandler:
    d = host.settings
    auth = (
        SigV4Verifier(d.access_keys, region=d.region, service="lambda", account_id=d.account_id)
        if d.access_keys
        else None
    )

    async def list_functions(request: web.BaseRequest) -> web.StreamResponse:
        rid = str(uuid.uuid4())
        try:
            if auth is not None:
                signed = signed_request(request)
                auth.check_headers(signed)  # refused before the body is read
                try:
                    body = await read_body(request, _MAX_BODY)
                except BodyTooLarge:
                    raise ApiError(
                        413, "RequestEntityTooLargeException", "Body not expected"
                    ) from None
                principal = auth.verify(signed, body)
                auth.authorize(principal, "lambda:ListFunctions", "*")
            return _page(host, request, rid)
        except AuthError as exc:
            mark_refused(request, exc.reason)  # counted and logged by the dispatcher
            return ApiError(exc.status, exc.code, exc.message).response(rid)
        except ApiError as exc:
            return exc.response(rid)

    return list_functions


def _page(host: HttpHost, request: web.BaseRequest, rid: str) -> web.Response:
    d = host.settings
    limit = _max_items(request.query.get("MaxItems"))
    names = sorted(host.functions)
    marker = request.query.get("Marker")
    if marker:
        names = [n for n in names if n > marker]
    page, rest = names[:limit], names[limit:]
    functions = [
        _configuration(host.functions[n], f"arn:aws:lambda:{d.region}:{d.account_id}:function:{n}")
        for n in page
    ]
    body: dict[str, object] = {"Functions": functions}
    if rest:
        body["NextMarker"] = page[-1]
    return web.Response(
        body=orjson.dumps(body),
        content_type="application/json",
        headers={"x-amzn-RequestId": rid},
    )
