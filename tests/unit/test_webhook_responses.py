"""Function response -> HTTP response, per payload format (gotcha 17)."""

from __future__ import annotations

import base64
import json
from typing import Any

import orjson
import pytest

from triggerd.types import InvokeResult, Outcome
from triggerd_webhook.responses import HttpReply, map_result


def ok(value: Any) -> InvokeResult:
    return InvokeResult(Outcome.OK, orjson.dumps(value), "r1")


def mapped(fmt: str, value: Any, **kw: Any) -> HttpReply:
    reply, _ = map_result(fmt, ok(value), **kw)  # type: ignore[arg-type]
    return reply


def header_values(reply: HttpReply, name: str) -> list[str]:
    return [v for k, v in reply.headers if k.lower() == name.lower()]


@pytest.mark.parametrize(
    "value",
    [
        {"statusCode": 200, "body": {"a": 1}},
        {"body": "x"},
        {"statusCode": "200", "body": "x"},
        {"statusCode": True, "body": "x"},
        {"statusCode": 200, "headers": "x"},
        {"statusCode": 200, "multiValueHeaders": {"a": "b"}},
        {"statusCode": 200, "body": "!!", "isBase64Encoded": "yes"},
        {"hello": "world"},
        "plain",
        [1],
    ],
)
def test_v1_malformed_responses_are_502(value: Any) -> None:
    reply, problem = map_result("1.0", ok(value))
    assert reply.status == 502
    assert json.loads(reply.body) == {"message": "Internal server error"}
    assert problem is not None and problem.startswith("malformed response")


def test_v1_structured_response_with_merged_headers() -> None:
    reply = mapped(
        "1.0",
        {
            "statusCode": 201,
            "headers": {"X-A": "1", "X-Both": "h", "Content-Length": "999"},
            "multiValueHeaders": {"Set-Cookie": ["a=1", "b=2"], "X-Both": ["m1", "m2"]},
            "body": "created",
        },
    )
    assert reply.status == 201 and reply.body == b"created"
    assert header_values(reply, "Set-Cookie") == ["a=1", "b=2"]
    assert header_values(reply, "X-Both") == ["m1", "m2"]
    assert header_values(reply, "X-A") == ["1"]
    assert header_values(reply, "Content-Length") == [], "the server computes it"
    assert header_values(reply, "Content-Type") == ["application/json"], "the default"


def test_v1_base64_body_decoded_only_when_binary_media_types_match() -> None:
    doc = {
        "statusCode": 200,
        "headers": {"Content-Type": "image/png"},
        "body": base64.b64encode(b"\x00\x01").decode(),
        "isBase64Encoded": True,
    }
    assert mapped("1.0", doc).body == doc["body"].encode()
    assert mapped("1.0", doc, binary_media_types=["image/png"]).body == b"\x00\x01"
    doc["headers"] = {"Content-Type": "application/json"}
    by_accept = mapped("1.0", doc, accept="image/webp, */*", binary_media_types=["image/*"])
    assert by_accept.body == b"\x00\x01"


def test_v2_plain_values_are_200_json_with_string_bodies_unquoted() -> None:
    for value, body in (
        ({"hello": "world"}, b'{"hello":"world"}'),
        ([1, 2], b"[1,2]"),
        (3, b"3"),
        ("Hello from Lambda!", b"Hello from Lambda!"),
    ):
        reply = mapped("2.0", value)
        assert reply.status == 200 and reply.body == body
        assert header_values(reply, "content-type") == ["application/json"]


def test_v2_object_with_status_code_is_structured() -> None:
    reply = mapped(
        "2.0",
        {
            "statusCode": 302,
            "headers": {"Location": "/x", "X-Multi": ["a", "b"]},
            "cookies": ["a=1; Secure", "b=2"],
            "body": "",
        },
    )
    assert reply.status == 302 and reply.body == b""
    assert header_values(reply, "Set-Cookie") == ["a=1; Secure", "b=2"]
    assert header_values(reply, "X-Multi") == ["a,b"]
    assert header_values(reply, "Location") == ["/x"]


def test_v2_base64_body_is_decoded() -> None:
    body = base64.b64encode(b"\xff\x00").decode()
    reply = mapped("url", {"statusCode": 200, "body": body, "isBase64Encoded": True})
    assert reply.body == b"\xff\x00"


@pytest.mark.parametrize(
    "value",
    [
        {"statusCode": 99},
        {"statusCode": 200, "cookies": "a=1"},
        {"statusCode": 200, "body": "***", "isBase64Encoded": True},
        {"statusCode": 200, "body": 5},
    ],
)
def test_v2_malformed_structured_responses_are_500(value: Any) -> None:
    reply = mapped("2.0", value)
    assert reply.status == 500
    assert json.loads(reply.body) == {"message": "Internal Server Error"}
    assert mapped("url", value).status == 502


def test_outcomes_map_to_gateway_statuses() -> None:
    def status(fmt: str, outcome: Outcome, payload: bytes = b"{}") -> int:
        reply, problem = map_result(fmt, InvokeResult(outcome, payload, "r"))  # type: ignore[arg-type]
        assert problem is not None
        return reply.status

    assert status("1.0", Outcome.FUNCTION_ERROR) == 502
    assert status("2.0", Outcome.FUNCTION_ERROR) == 500
    assert status("url", Outcome.FUNCTION_ERROR) == 502
    assert status("1.0", Outcome.TIMEOUT) == 504
    assert status("2.0", Outcome.TIMEOUT) == 504
    assert status("2.0", Outcome.THROTTLED) == 429
    assert status("1.0", Outcome.INVOKE_ERROR) == 502
    assert status("1.0", Outcome.OK, b"not json") == 502
    assert status("2.0", Outcome.OK, b"not json") == 500
