"""Events in the shapes API Gateway and function URLs send: REST proxy (payload 1.0), HTTP API
(payload 2.0) and Lambda function URL. Pure functions of a neutral request description, so every
field is unit-testable without a server.

Path fidelity (as the services do): REST and function URLs pass the path still percent-encoded,
HTTP APIs decode it; path parameters and query strings are always percent-decoded ('+' stays
'+'). 1.0 sends nulls for what is absent, 2.0 and function URLs omit it (gotcha 16).
"""

from __future__ import annotations

import base64
import hashlib
import os
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import unquote

from triggerd.events.tracing import trace_id_for
from triggerd.types import JSONDict

PayloadFormat = Literal["1.0", "2.0", "url"]
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

#: Subtypes of application/* that HTTP APIs and function URLs pass as text.
_TEXT_SUBTYPES = frozenset(
    {
        "json",
        "xml",
        "javascript",
        "ecmascript",
        "x-www-form-urlencoded",
        "yaml",
        "x-yaml",
        "graphql",
        "csv",
        "x-ndjson",
        "ndjson",
    }
)


@dataclass(slots=True)
class HttpRequest:
    """A received request, independent of the HTTP server."""

    method: str
    #: The path as received: percent-encoded, without the query string.
    raw_path: str
    #: The query string as received, still encoded, without the `?` ("" when none).
    raw_query: str
    #: Header (name as sent, value) pairs in arrival order.
    headers: list[tuple[str, str]]
    body: bytes
    source_ip: str
    protocol: str = "HTTP/1.1"
    scheme: str = "http"
    server_port: int = 80


@dataclass(slots=True)
class RouteInfo:
    """The route that matched, and the API it belongs to."""

    #: The route's configured method (may be ANY).
    method: str
    template: str
    #: Path parameters, percent-decoded once.
    params: dict[str, str]
    stage: str
    stage_variables: dict[str, str] = field(default_factory=dict)
    binary_media_types: list[str] = field(default_factory=list)
    api_id: str = "1234567890"
    region: str = "us-east-1"
    account_id: str = "123456789012"


@dataclass(slots=True)
class RequestMeta:
    """Per-request identifiers and the time the request arrived."""

    request_id: str
    time_s: float
    extended_request_id: str
    trace_id: str

    @classmethod
    def new(
        cls,
        fmt: PayloadFormat,
        now_s: float,
        trace_header: str | None = None,
        traceparent: str | None = None,
    ) -> RequestMeta:
        """`trace_header`: the request's `X-Amzn-Trace-Id`, kept when well formed; else its
        W3C `traceparent` as an X-Ray header."""
        short = short_request_id()
        rid = short if fmt == "2.0" else str(uuid.uuid4())
        return cls(rid, now_s, short, trace_id_for(trace_header, now_s, traceparent))


# --------------------------------------------------------------------------------------------
# Identifiers and time


#: Ids only have to be unique, not secret: drawn from a generator seeded by the OS once,
#: rather than a system call per id.
_ids = random.Random(os.urandom(32))


def short_request_id() -> str:
    """API Gateway's 16-character id (`KxKXzGbCIAMFuJg=`): base64 of 11 random bytes."""
    return base64.b64encode(_ids.randbytes(11)).decode()


def api_id(trigger: str, length: int = 10) -> str:
    """A stable lower-case id for the trigger's API (10 chars) or function URL (32 chars)."""
    digest = hashlib.sha256(trigger.encode()).digest()
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    return "".join(alphabet[b % len(alphabet)] for b in digest[:length])


_clf_last: tuple[int, str] = (-1, "")


def clf_time(epoch_s: float) -> str:
    """`09/Apr/2015:12:34:56 +0000` (the English month abbreviations, whatever the locale).
    The text of the last second is kept: requests arrive many to a second."""
    global _clf_last
    second = int(epoch_s)
    if _clf_last[0] == second:
        return _clf_last[1]
    t = time.gmtime(second)
    month = _MONTHS[t.tm_mon - 1]
    clock = f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"
    text = f"{t.tm_mday:02d}/{month}/{t.tm_year}:{clock} +0000"
    _clf_last = (second, text)
    return text


# --------------------------------------------------------------------------------------------
# Parsing helpers


def parse_query(raw: str) -> list[tuple[str, str]]:
    """Decoded (name, value) pairs in order; `a` alone is ("a", "")."""
    pairs: list[tuple[str, str]] = []
    for piece in raw.split("&"):
        if not piece:
            continue
        name, _, value = piece.partition("=")
        pairs.append((unquote(name), unquote(value)))
    return pairs


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def media_matches(mtype: str, patterns: list[str]) -> bool:
    """`image/png` against `image/png`, `image/*` or `*/*`."""
    if not mtype or "/" not in mtype:
        return bool(patterns) and "*/*" in patterns
    main, sub = mtype.split("/", 1)
    for pattern in patterns:
        p_main, _, p_sub = pattern.partition("/")
        if p_main in ("*", main) and p_sub in ("*", sub):
            return True
    return False


def is_text_type(mtype: str) -> bool:
    main, _, sub = mtype.partition("/")
    if main == "text":
        return True
    return main == "application" and (
        sub in _TEXT_SUBTYPES or sub.endswith("+json") or sub.endswith("+xml")
    )


def header(headers: list[tuple[str, str]], name: str) -> str | None:
    """The last value of a header (case-insensitive), or None."""
    lname = name.lower()
    found: str | None = None
    for key, value in headers:
        if key.lower() == lname:
            found = value
    return found


def _safe(text: str) -> str:
    """Header text re-read as Latin-1 if the server left undecodable bytes as surrogates."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("latin-1")
    return text


def _with_gateway_headers(req: HttpRequest, meta: RequestMeta) -> list[tuple[str, str]]:
    """The headers API Gateway and function URLs add: X-Forwarded-For (the client appended),
    -Proto, -Port and X-Amzn-Trace-Id."""
    out: list[tuple[str, str]] = []
    forwarded: str | None = None
    seen: set[str] = set()
    for name, value in req.headers:
        lname = name.lower()
        seen.add(lname)
        if lname == "x-forwarded-for":
            forwarded = value if forwarded is None else f"{forwarded}, {value}"
            continue
        out.append((_safe(name), _safe(value)))
    xff = req.source_ip if forwarded is None else f"{forwarded}, {req.source_ip}"
    out.append(("X-Forwarded-For", _safe(xff)))
    if "x-forwarded-proto" not in seen:
        out.append(("X-Forwarded-Proto", req.scheme))
    if "x-forwarded-port" not in seen:
        out.append(("X-Forwarded-Port", str(req.server_port)))
    if "x-amzn-trace-id" not in seen:
        out.append(("X-Amzn-Trace-Id", meta.trace_id))
    return out


def _host(req: HttpRequest) -> str | None:
    value = header(req.headers, "host")
    return _safe(value) if value else None


# --------------------------------------------------------------------------------------------
# Payload 1.0 (REST API proxy integration)


def _v1_body(req: HttpRequest, route: RouteInfo) -> tuple[str | None, bool]:
    if not req.body:
        return None, False
    mtype = media_type(header(req.headers, "content-type"))
    if route.binary_media_types and media_matches(mtype, route.binary_media_types):
        return base64.b64encode(req.body).decode(), True
    try:
        return req.body.decode("utf-8"), False
    except UnicodeDecodeError:
        # REST would mangle it; we keep every byte (deviation, see the README).
        return base64.b64encode(req.body).decode(), True


def build_v1(req: HttpRequest, route: RouteInfo, meta: RequestMeta) -> JSONDict:
    headers: dict[str, str] = {}
    multi: dict[str, list[str]] = {}
    spelled: dict[str, str] = {}
    for name, value in _with_gateway_headers(req, meta):
        key = spelled.setdefault(name.lower(), name)
        headers[key] = value
        multi.setdefault(key, []).append(value)
    query = parse_query(req.raw_query)
    qs: dict[str, str] = {}
    mqs: dict[str, list[str]] = {}
    for name, value in query:
        qs[name] = value
        mqs.setdefault(name, []).append(value)
    body, b64 = _v1_body(req, route)
    host = _host(req)
    domain = host or f"{route.api_id}.execute-api.{route.region}.amazonaws.com"
    epoch_ms = int(meta.time_s * 1000)
    user_agent = header(req.headers, "user-agent")
    return {
        "resource": route.template,
        "path": req.raw_path,
        "httpMethod": req.method,
        "headers": headers or None,
        "multiValueHeaders": multi or None,
        "queryStringParameters": qs or None,
        "multiValueQueryStringParameters": mqs or None,
        "pathParameters": route.params or None,
        "stageVariables": route.stage_variables or None,
        "requestContext": {
            "accountId": route.account_id,
            "apiId": route.api_id,
            "resourceId": api_id(f"{route.api_id} {route.template}", 6),
            "resourcePath": route.template,
            "httpMethod": req.method,
            "path": f"/{route.stage}{req.raw_path}",
            "stage": route.stage,
            "protocol": req.protocol,
            "requestId": meta.request_id,
            "extendedRequestId": meta.extended_request_id,
            "requestTime": clf_time(meta.time_s),
            "requestTimeEpoch": epoch_ms,
            "domainName": domain,
            "domainPrefix": domain.split(":", 1)[0].split(".", 1)[0],
            "identity": {
                "cognitoIdentityPoolId": None,
                "accountId": None,
                "cognitoIdentityId": None,
                "caller": None,
                "apiKey": None,
                "apiKeyId": None,
                "accessKey": None,
                "sourceIp": req.source_ip,
                "cognitoAuthenticationType": None,
                "cognitoAuthenticationProvider": None,
                "userArn": None,
                "userAgent": _safe(user_agent) if user_agent is not None else None,
                "user": None,
                "principalOrgId": None,
                "clientCert": None,
            },
            "authorizer": None,
        },
        "body": body,
        "isBase64Encoded": b64,
    }


# --------------------------------------------------------------------------------------------
# Payload 2.0 (HTTP API) and function URLs


def _v2_body(req: HttpRequest) -> tuple[str | None, bool]:
    if not req.body:
        return None, False
    ctype = header(req.headers, "content-type")
    mtype = media_type(ctype)
    if ctype is None or is_text_type(mtype):
        try:
            return req.body.decode("utf-8"), False
        except UnicodeDecodeError:
            pass
    return base64.b64encode(req.body).decode(), True


def _v2_headers(req: HttpRequest, meta: RequestMeta) -> tuple[dict[str, str], list[str]]:
    """Lower-cased headers, repeated ones comma-joined, cookies split out, plus the headers
    the gateway adds (as `_with_gateway_headers`, in one pass: this runs on every request)."""
    headers: dict[str, str] = {}
    cookies: list[str] = []
    forwarded: str | None = None
    for name, value in req.headers:
        key = _safe(name).lower()
        if key == "x-forwarded-for":
            forwarded = value if forwarded is None else f"{forwarded}, {value}"
            continue
        value = _safe(value)
        if key == "cookie":
            cookies.extend(c.strip() for c in value.split(";") if c.strip())
            continue
        headers[key] = f"{headers[key]},{value}" if key in headers else value
    xff = req.source_ip if forwarded is None else f"{forwarded}, {req.source_ip}"
    headers["x-forwarded-for"] = _safe(xff)  # never among `headers`: it was set aside above
    if "x-forwarded-proto" not in headers:
        headers["x-forwarded-proto"] = req.scheme
    if "x-forwarded-port" not in headers:
        headers["x-forwarded-port"] = str(req.server_port)
    if "x-amzn-trace-id" not in headers:
        headers["x-amzn-trace-id"] = meta.trace_id
    return headers, cookies


def build_v2(req: HttpRequest, route: RouteInfo, meta: RequestMeta, *, url: bool) -> JSONDict:
    """Payload 2.0; with `url`, the function URL variant ($default route, raw path, no stage)."""
    headers, cookies = _v2_headers(req, meta)
    qs: dict[str, str] = {}
    for name, value in parse_query(req.raw_query):
        qs[name] = f"{qs[name]},{value}" if name in qs else value
    if url:
        stage = "$default"
        route_key = "$default"
        path = req.raw_path
        domain = _host(req) or f"{route.api_id}.lambda-url.{route.region}.on.aws"
        account = "anonymous"
    else:
        stage = route.stage
        route_key = f"{route.method} {route.template}"
        decoded = unquote(req.raw_path)
        path = decoded if stage == "$default" else f"/{stage}{decoded}"
        domain = _host(req) or f"{route.api_id}.execute-api.{route.region}.amazonaws.com"
        account = route.account_id
    event: JSONDict = {
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": path,
        "rawQueryString": req.raw_query,
    }
    if cookies:
        event["cookies"] = cookies
    event["headers"] = headers
    if qs:
        event["queryStringParameters"] = qs
    if not url and route.params:
        event["pathParameters"] = route.params
    if not url and route.stage_variables:
        event["stageVariables"] = route.stage_variables
    user_agent = headers.get("user-agent", "")
    event["requestContext"] = {
        "accountId": account,
        "apiId": route.api_id,
        "domainName": domain,
        "domainPrefix": domain.split(":", 1)[0].split(".", 1)[0],
        "http": {
            "method": req.method,
            "path": path,
            "protocol": req.protocol,
            "sourceIp": req.source_ip,
            "userAgent": user_agent,
        },
        "requestId": meta.request_id,
        "routeKey": route_key,
        "stage": stage,
        "time": clf_time(meta.time_s),
        "timeEpoch": int(meta.time_s * 1000),
    }
    body, b64 = _v2_body(req)
    if body is not None:
        event["body"] = body
    event["isBase64Encoded"] = b64
    return event


def build_event(
    fmt: PayloadFormat, req: HttpRequest, route: RouteInfo, meta: RequestMeta
) -> JSONDict:
    if fmt == "1.0":
        return build_v1(req, route, meta)
    return build_v2(req, route, meta, url=fmt == "url")
