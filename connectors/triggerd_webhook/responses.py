"""The function's response -> the HTTP response, as API Gateway and function URLs map it.

1.0 (REST): an object with an int `statusCode`, string (or absent / null) `body`, `headers`
and `multiValueHeaders` merged (a key in both takes the multiValueHeaders values), and a base64
body decoded only when the request's Accept or the response's Content-Type matches
`binary_media_types`. Anything else is 502 `{"message": "Internal server error"}` (gotcha 17).

2.0 and function URLs: an object containing `statusCode` is a structured response (headers,
cookies -> one Set-Cookie each, body, isBase64Encoded); any other valid JSON is data: 200,
`application/json`, body = the returned string itself, or the JSON text of anything else.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import Any

import orjson

from triggerd.types import InvokeResult, Outcome
from triggerd_webhook.events import PayloadFormat, media_matches, media_type

#: Headers the server computes itself; a function's values for them are dropped.
_HOP_BY_HOP = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive"})


class MalformedResponse(ValueError):
    """The function's response does not fit the payload format's response shape."""


@dataclass(slots=True)
class HttpReply:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""


def message(status: int, text: str, headers: list[tuple[str, str]] | None = None) -> HttpReply:
    """A gateway-generated answer: `{"message": text}` as JSON."""
    hdrs = [("Content-Type", "application/json")] + (headers or [])
    return HttpReply(status, hdrs, orjson.dumps({"message": text}))


def internal_error(fmt: PayloadFormat) -> HttpReply:
    """What the service answers for a function error or a malformed response."""
    if fmt == "1.0":
        return message(502, "Internal server error")
    if fmt == "2.0":
        return message(500, "Internal Server Error")
    return message(502, "Internal Server Error")


def gateway_timeout(fmt: PayloadFormat) -> HttpReply:
    return message(504, "Endpoint request timed out" if fmt == "1.0" else "Gateway Timeout")


def throttled(retry_after_s: float | None) -> HttpReply:
    seconds = max(1, round(retry_after_s or 1))
    return message(429, "Too Many Requests", [("Retry-After", str(seconds))])


def _scalar(value: Any, where: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise MalformedResponse(f"{where} must be a string")


def _status(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 100 <= value <= 599:
        raise MalformedResponse("statusCode must be an integer 100-599")
    return value


def _body(doc: dict[str, Any], accept_binary: bool) -> bytes:
    body = doc.get("body")
    if body is None:
        return b""
    if not isinstance(body, str):
        raise MalformedResponse("body must be a string")
    b64 = doc.get("isBase64Encoded", False)
    if not isinstance(b64, bool):
        raise MalformedResponse("isBase64Encoded must be a boolean")
    if b64 and accept_binary:
        try:
            return base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise MalformedResponse("body is not valid base64") from None
    return body.encode("utf-8")


def _mapping(doc: dict[str, Any], key: str) -> dict[str, Any]:
    value = doc.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise MalformedResponse(f"{key} must be an object")
    return value


def _finish(status: int, headers: list[tuple[str, str]], body: bytes) -> HttpReply:
    kept = [(k, v) for k, v in headers if k.lower() not in _HOP_BY_HOP]
    if body and not any(k.lower() == "content-type" for k, _ in kept):
        kept.append(("Content-Type", "application/json"))
    return HttpReply(status, kept, body)


def map_v1(doc: Any, accept: str | None, binary_media_types: list[str]) -> HttpReply:
    if not isinstance(doc, dict):
        raise MalformedResponse("the response must be an object")
    status = _status(doc.get("statusCode"))
    single = _mapping(doc, "headers")
    multi = _mapping(doc, "multiValueHeaders")
    headers: list[tuple[str, str]] = []
    multi_keys = {k.lower() for k in multi}
    for key, value in single.items():
        if key.lower() not in multi_keys:
            headers.append((key, _scalar(value, f"headers.{key}")))
    for key, values in multi.items():
        if not isinstance(values, list):
            raise MalformedResponse(f"multiValueHeaders.{key} must be a list")
        headers.extend((key, _scalar(v, f"multiValueHeaders.{key}")) for v in values)
    ctype = media_type(next((v for k, v in headers if k.lower() == "content-type"), None))
    accepts = [media_type(a) for a in (accept or "").split(",") if a.strip()]
    binary = bool(binary_media_types) and (
        media_matches(ctype, binary_media_types)
        or any(media_matches(a, binary_media_types) for a in accepts if a != "*/*")
    )
    return _finish(status, headers, _body(doc, binary))


def map_v2(doc: Any, raw: bytes) -> HttpReply:
    if not (isinstance(doc, dict) and "statusCode" in doc):
        body = doc.encode("utf-8") if isinstance(doc, str) else raw.strip()
        return HttpReply(200, [("Content-Type", "application/json")], body)
    status = _status(doc["statusCode"])
    headers: list[tuple[str, str]] = []
    for key, value in _mapping(doc, "headers").items():
        if isinstance(value, list):
            value = ",".join(_scalar(v, f"headers.{key}") for v in value)
        headers.append((key, _scalar(value, f"headers.{key}")))
    cookies = doc.get("cookies") or []
    if not isinstance(cookies, list):
        raise MalformedResponse("cookies must be a list of strings")
    for cookie in cookies:
        if not isinstance(cookie, str):
            raise MalformedResponse("cookies must be a list of strings")
        headers.append(("Set-Cookie", cookie))
    return _finish(status, headers, _body(doc, True))


def map_result(
    fmt: PayloadFormat,
    result: InvokeResult,
    *,
    accept: str | None = None,
    binary_media_types: list[str] | None = None,
) -> tuple[HttpReply, str | None]:
    """The HTTP answer for an invocation result, and why it is an error answer (for the log;
    None when the function's response was used). Raises nothing."""
    if result.outcome is Outcome.TIMEOUT:
        return gateway_timeout(fmt), "function timed out"
    if result.outcome is Outcome.THROTTLED:
        return throttled(result.retry_after_s), "function throttled"
    if result.outcome is Outcome.FUNCTION_ERROR:
        return internal_error(fmt), "function error"
    if result.outcome is not Outcome.OK:
        return internal_error(fmt), "function could not be invoked"
    try:
        doc = orjson.loads(result.payload)
    except orjson.JSONDecodeError:
        return internal_error(fmt), "malformed response: not JSON"
    try:
        if fmt == "1.0":
            return map_v1(doc, accept, binary_media_types or []), None
        return map_v2(doc, result.payload), None
    except MalformedResponse as exc:
        return internal_error(fmt), f"malformed response: {exc}"
