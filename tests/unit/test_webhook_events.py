"""Webhook event builders: every field of API Gateway 1.0, 2.0 and function URL events."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from triggerd.types import ConfigError
from triggerd_webhook.events import (
    HttpRequest,
    RequestMeta,
    RouteInfo,
    api_id,
    build_event,
    build_v1,
    build_v2,
    clf_time,
    media_matches,
    parse_query,
)
from triggerd_webhook.samples import sample_event

META = RequestMeta("rid-1", 1583348638.390, "KxKXzGbCIAMFuJg=", "Root=1-abc")


def request(**kw: Any) -> HttpRequest:
    base: dict[str, Any] = {
        "method": "POST",
        "raw_path": "/orders/42",
        "raw_query": "",
        "headers": [("Host", "api.example.com"), ("User-Agent", "curl/8.0")],
        "body": b"",
        "source_ip": "203.0.113.7",
    }
    base.update(kw)
    return HttpRequest(**base)


def route(**kw: Any) -> RouteInfo:
    base: dict[str, Any] = {
        "method": "POST",
        "template": "/orders/{id}",
        "params": {"id": "42"},
        "stage": "prod",
    }
    base.update(kw)
    return RouteInfo(**base)


def test_clf_time_is_the_common_log_format_in_utc() -> None:
    assert clf_time(1428582896.0) == "09/Apr/2015:12:34:56 +0000"


def test_parse_query_decodes_percent_keeps_plus_and_blank_values() -> None:
    assert parse_query("q=1&q=2&x=a%20b&flag&y=c+d&&z=") == [
        ("q", "1"),
        ("q", "2"),
        ("x", "a b"),
        ("flag", ""),
        ("y", "c+d"),
        ("z", ""),
    ]


def test_media_type_patterns_match_wildcards() -> None:
    assert media_matches("image/png", ["image/*"])
    assert media_matches("image/png", ["*/*"])
    assert not media_matches("text/plain", ["image/*"])
    assert media_matches("", ["*/*"]) and not media_matches("", ["image/*"])


def test_api_ids_are_stable_per_trigger() -> None:
    assert api_id("t1") == api_id("t1") != api_id("t2")
    assert len(api_id("t1")) == 10 and len(api_id("t1", 32)) == 32


# ---- 1.0 ------------------------------------------------------------------------------------


def test_v1_absent_values_are_null() -> None:
    ev = build_v1(request(), route(params={}), META)
    for key in (
        "queryStringParameters",
        "multiValueQueryStringParameters",
        "pathParameters",
        "stageVariables",
        "body",
    ):
        assert ev[key] is None, key
    assert ev["isBase64Encoded"] is False
    assert ev["requestContext"]["authorizer"] is None


def test_v1_headers_keep_case_last_value_wins_and_list_every_value() -> None:
    hdrs = [("Host", "h"), ("X-Trace", "a"), ("x-trace", "b")]
    ev = build_v1(request(headers=hdrs), route(), META)
    assert ev["headers"]["X-Trace"] == "b"
    assert ev["multiValueHeaders"]["X-Trace"] == ["a", "b"]
    assert ev["headers"]["X-Forwarded-For"] == "203.0.113.7"
    assert ev["headers"]["X-Amzn-Trace-Id"] == "Root=1-abc"


def test_v1_request_context_fields() -> None:
    ev = build_v1(request(raw_path="/orders/4%202"), route(stage="v1"), META)
    ctx = ev["requestContext"]
    assert ev["path"] == "/orders/4%202"
    assert ctx["path"] == "/v1/orders/4%202"
    assert ctx["stage"] == "v1"
    assert ctx["requestId"] == "rid-1"
    assert ctx["extendedRequestId"] == "KxKXzGbCIAMFuJg="
    assert ctx["requestTime"] == "04/Mar/2020:19:03:58 +0000"
    assert ctx["requestTimeEpoch"] == 1583348638390
    assert ctx["identity"]["sourceIp"] == "203.0.113.7"
    assert ctx["identity"]["userAgent"] == "curl/8.0"
    assert ctx["domainName"] == "api.example.com" and ctx["domainPrefix"] == "api"
    assert ctx["resourcePath"] == "/orders/{id}" and ev["resource"] == "/orders/{id}"


def test_v1_binary_body_only_for_binary_media_types() -> None:
    png = request(body=b"\x89PNG\xff", headers=[("Content-Type", "image/png")])
    ev = build_v1(png, route(binary_media_types=["image/*"]), META)
    assert ev["isBase64Encoded"] is True and base64.b64decode(ev["body"]) == b"\x89PNG\xff"
    text = request(body="héllo".encode(), headers=[("Content-Type", "image/png")])
    ev = build_v1(text, route(), META)
    assert ev["body"] == "héllo" and ev["isBase64Encoded"] is False


def test_v1_invalid_utf8_body_is_kept_as_base64() -> None:
    ev = build_v1(request(body=b"\xff\xfe"), route(), META)
    assert ev["isBase64Encoded"] is True and base64.b64decode(ev["body"]) == b"\xff\xfe"


# ---- 2.0 and function URLs ------------------------------------------------------------------


def test_v2_absent_values_are_omitted() -> None:
    ev = build_v2(request(), route(params={}, stage="$default"), META, url=False)
    for key in ("cookies", "queryStringParameters", "pathParameters", "stageVariables", "body"):
        assert key not in ev, key
    assert ev["rawQueryString"] == "" and ev["isBase64Encoded"] is False
    assert ev["rawPath"] == "/orders/42"
    assert "authorizer" not in ev["requestContext"]


def test_v2_headers_lowercased_comma_joined_and_cookies_split() -> None:
    hdrs = [
        ("X-Trace", "a"),
        ("x-trace", "b"),
        ("Cookie", "s=1; t=2"),
        ("cookie", "u=3;"),
    ]
    ev = build_v2(request(headers=hdrs), route(), META, url=False)
    assert ev["headers"]["x-trace"] == "a,b"
    assert ev["cookies"] == ["s=1", "t=2", "u=3"]
    assert "cookie" not in ev["headers"]


def test_v2_query_joined_raw_kept_encoded_and_stage_prefixed_decoded_path() -> None:
    req = request(raw_query="q=1&q=2&x=a%20b", raw_path="/orders/4%202")
    ev = build_v2(req, route(stage="prod", stage_variables={"e": "p"}), META, url=False)
    assert ev["rawQueryString"] == "q=1&q=2&x=a%20b"
    assert ev["queryStringParameters"] == {"q": "1,2", "x": "a b"}
    assert ev["rawPath"] == "/prod/orders/4 2", "HTTP APIs decode the path"
    assert ev["requestContext"]["http"]["path"] == "/prod/orders/4 2"
    assert ev["routeKey"] == "POST /orders/{id}" == ev["requestContext"]["routeKey"]
    assert ev["stageVariables"] == {"e": "p"}
    assert ev["requestContext"]["time"] == "04/Mar/2020:19:03:58 +0000"
    assert ev["requestContext"]["timeEpoch"] == 1583348638390


@pytest.mark.parametrize(
    ("ctype", "body", "text"),
    [
        ("application/json", b'{"a":1}', True),
        ("text/plain; charset=utf-8", b"hi", True),
        ("application/vnd.api+json", b"{}", True),
        ("application/x-www-form-urlencoded", b"a=1", True),
        (None, b"plain", True),
        (None, b"\xff\x00", False),
        ("application/octet-stream", b"abc", False),
        ("image/png", b"abc", False),
        ("application/json", b"\xff", False),
    ],
)
def test_v2_body_is_text_or_base64_by_content_type(
    ctype: str | None, body: bytes, text: bool
) -> None:
    hdrs = [("Content-Type", ctype)] if ctype else []
    ev = build_v2(request(headers=hdrs, body=body), route(), META, url=False)
    assert ev["isBase64Encoded"] is (not text)
    got = ev["body"].encode() if text else base64.b64decode(ev["body"])
    assert got == body


def test_function_url_event_differences() -> None:
    req = request(raw_path="/a%20b", raw_query="x=1")
    ev = build_event("url", req, route(stage="prod", stage_variables={"e": "1"}), META)
    assert ev["routeKey"] == "$default"
    assert ev["rawPath"] == "/a%20b"
    assert "pathParameters" not in ev and "stageVariables" not in ev
    ctx = ev["requestContext"]
    assert ctx["stage"] == "$default" and ctx["routeKey"] == "$default"
    assert ctx["accountId"] == "anonymous"
    assert ev["headers"]["x-forwarded-proto"] == "http"
    assert ev["headers"]["x-forwarded-port"] == "80"


def test_sample_events_for_each_format_and_bad_options() -> None:
    assert sample_event({"format": "1.0"})["requestContext"]["stage"] == "prod"
    assert sample_event({})["version"] == "2.0"
    assert sample_event({"format": "url"})["routeKey"] == "$default"
    v1 = sample_event({"format": "1.0", "template": "/orders/{id}"})
    assert v1["pathParameters"] == {"id": "42"}
    with pytest.raises(ConfigError):
        sample_event({"format": "3.0"})
    with pytest.raises(ConfigError):
        sample_event({"path": "/a", "template": "/b/{x}"})
    with pytest.raises(ConfigError, match="must start with /"):
        sample_event({"path": "/a", "template": "a"})
