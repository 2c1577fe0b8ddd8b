"""The webhook source end to end: a daemon started in-process on a free loopback port, real
HTTP requests with aiohttp, real local Python functions (tests/integration/functions/webhook_*).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import io
import json
import logging
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from triggerd.config.load import validate_data
from triggerd.config.plugins import Registry
from triggerd.daemon.app import Daemon
from triggerd.telemetry.logs import JsonFormatter

pytestmark = [
    pytest.mark.integration,
    # One daemon for the module (each test uses its own routes).
    pytest.mark.asyncio(loop_scope="module"),
]

FUNCTIONS = Path(__file__).parent / "functions"
GITHUB_SECRET = "gh-s3cret-value-123"
STRIPE_SECRET = "whsec_stripe-secret-456"
BEARER_TOKEN = "bearer-t0ken-789"


def route(name: str, path: str, function: str = "actions", **source: Any) -> dict[str, Any]:
    trigger = {
        "name": name,
        "function": function,
        "source": {"type": "webhook", "path": path, **source},
    }
    if source.get("invocation") == "event":  # sync mode never retries: no delay to set
        trigger["retry_base_delay_s"] = 0.2
    return trigger


def triggers(tmp: Path) -> list[dict[str, Any]]:
    return [
        route(
            "v1-orders",
            "/v1/orders/{id}",
            method="POST",
            payload_format="1.0",
            stage_variables={"env": "test"},
        ),
        route(
            "v1-files",
            "/v1/files/{proxy+}",
            payload_format="1.0",
            binary_media_types=["image/*"],
        ),
        route("v2-orders", "/v2/orders/{id}", stage="beta", stage_variables={"env": "test"}),
        route("v2-files", "/v2/files/{proxy+}"),
        route("url", "/url/{proxy+}", payload_format="url"),
        route(
            "github",
            "/hooks/github",
            method="POST",
            auth={"type": "hmac", "secret": GITHUB_SECRET},
        ),
        route(
            "stripe",
            "/hooks/stripe",
            method="POST",
            auth={"type": "hmac", "style": "stripe", "secret": STRIPE_SECRET},
        ),
        route("bearer", "/hooks/bearer", auth={"type": "bearer", "token": BEARER_TOKEN}),
        route(
            "limits",
            "/limits",
            method="POST",
            max_body_bytes=1024,
            max_headers=20,
            max_header_bytes=2048,
        ),
        route("rate", "/rate", rate_limit_per_s=0.01, burst=2),
        route("slow", "/slow", max_concurrency=1),
        route(
            "cors",
            "/cors",
            method="POST",
            cors={"allow_origins": ["https://app.example"], "max_age_s": 600},
        ),
        route("route-timeout", "/timeout", timeout_s=0.5),
        route("fn-timeout", "/fn-timeout", function="short"),
        route("events", "/events", function="recorder", invocation="event"),
        {
            **route("events-dlq", "/events-dlq", function="recorder", invocation="event"),
            "maximum_retry_attempts": 0,
            "on_failure": {"type": "file", "path": str(tmp / "dlq.jsonl")},
        },
    ]


@dataclass
class Running:
    daemon: Daemon
    url: str
    http: aiohttp.ClientSession
    tmp: Path

    def source(self, trigger: str) -> Any:
        return self.daemon.triggers[trigger].rt.source  # type: ignore[attr-defined]

    def recorded(self) -> list[dict[str, Any]]:
        path = self.tmp / "calls.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def config(tmp: Path) -> dict[str, Any]:
    actions = {"handler": "app.handler", "code": str(FUNCTIONS / "webhook_actions")}
    return {
        "daemon": {
            "state": f"sqlite:///{tmp / 'state.db'}",
            "listen": "127.0.0.1:0",
            "control_listen": "",
            "control_on_public": True,
        },
        "functions": {
            "actions": {**actions, "timeout_s": 10},
            "short": {**actions, "timeout_s": 1},
            "recorder": {
                "handler": "app.handler",
                "code": str(FUNCTIONS / "webhook_recorder"),
                "environment": {"RECORD_FILE": str(tmp / "calls.jsonl")},
            },
        },
        "triggers": triggers(tmp),
    }


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def running(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Running]:
    tmp_path = tmp_path_factory.mktemp("webhook")
    registry = Registry.discover()
    cfg = validate_data(config(tmp_path), registry, base_dir=tmp_path)
    async with (
        Daemon(cfg, registry).running(stop_timeout_s=60) as daemon,
        aiohttp.ClientSession() as http,
    ):
        yield Running(daemon, f"http://{daemon.listen_address}", http, tmp_path)


async def call(
    r: Running, method: str, path: str, **kw: Any
) -> tuple[int, aiohttp.typedefs.LooseHeaders, bytes]:
    async with r.http.request(method, r.url + path, **kw) as resp:
        return resp.status, resp.headers, await resp.read()


async def event_of(r: Running, method: str, path: str, **kw: Any) -> dict[str, Any]:
    status, _, body = await call(r, method, path, **kw)
    assert status == 200, body
    doc: dict[str, Any] = json.loads(body)
    return doc


# ---- events ---------------------------------------------------------------------------------


async def test_v1_event_has_every_field_with_nulls_and_multi_values(running: Running) -> None:
    ev = await event_of(
        running,
        "POST",
        "/v1/orders/4%202?q=1&q=2&x=a%20b",
        data=b'{"qty":1}',
        headers=[("Content-Type", "application/json"), ("X-Trace", "a"), ("X-Trace", "b")],
    )
    assert ev["resource"] == "/v1/orders/{id}"
    assert ev["path"] == "/v1/orders/4%202", "REST keeps the path percent-encoded"
    assert ev["httpMethod"] == "POST"
    assert ev["headers"]["X-Trace"] == "b", "last value wins, case as sent"
    assert ev["multiValueHeaders"]["X-Trace"] == ["a", "b"]
    assert ev["headers"]["Content-Type"] == "application/json"
    assert ev["queryStringParameters"] == {"q": "2", "x": "a b"}
    assert ev["multiValueQueryStringParameters"] == {"q": ["1", "2"], "x": ["a b"]}
    assert ev["pathParameters"] == {"id": "4 2"}
    assert ev["stageVariables"] == {"env": "test"}
    assert ev["body"] == '{"qty":1}' and ev["isBase64Encoded"] is False
    ctx = ev["requestContext"]
    assert ctx["stage"] == "prod" and ctx["path"] == "/prod/v1/orders/4%202"
    assert ctx["resourcePath"] == "/v1/orders/{id}" and ctx["httpMethod"] == "POST"
    assert ctx["identity"]["sourceIp"] == "127.0.0.1"
    assert ctx["identity"]["userAgent"].startswith("Python/")
    assert ctx["protocol"] == "HTTP/1.1"
    assert len(ctx["requestId"]) == 36
    assert abs(ctx["requestTimeEpoch"] / 1000 - time.time()) < 60
    assert (
        time.strftime("%d/%b/%Y", time.gmtime(ctx["requestTimeEpoch"] / 1000))
        in (ctx["requestTime"])
    )
    assert ctx["accountId"] == "123456789012" and ctx["authorizer"] is None


async def test_v1_event_sends_null_for_absent_query_params_stage_variables_and_body(
    running: Running,
) -> None:
    ev = await event_of(running, "GET", "/v1/files/a/b%2Fc.txt")
    assert ev["queryStringParameters"] is None
    assert ev["multiValueQueryStringParameters"] is None
    assert ev["stageVariables"] is None
    assert ev["body"] is None and ev["isBase64Encoded"] is False
    assert ev["pathParameters"] == {"proxy": "a/b/c.txt"}


async def test_v1_binary_media_type_body_arrives_base64(running: Running) -> None:
    data = bytes(range(256))
    ev = await event_of(
        running, "PUT", "/v1/files/img.png", data=data, headers={"Content-Type": "image/png"}
    )
    assert ev["isBase64Encoded"] is True
    assert base64.b64decode(ev["body"]) == data


async def test_v2_event_lowercases_joins_headers_and_moves_cookies(running: Running) -> None:
    ev = await event_of(
        running,
        "POST",
        "/v2/orders/42?q=1&q=2&x=a%20b",
        data=b'{"qty":1}',
        headers=[
            ("Content-Type", "application/json"),
            ("X-Trace", "a"),
            ("X-Trace", "b"),
            ("Cookie", "session=abc; theme=dark"),
            ("Cookie", "c=3"),
        ],
    )
    assert ev["version"] == "2.0"
    assert ev["routeKey"] == "ANY /v2/orders/{id}"
    assert ev["rawPath"] == "/beta/v2/orders/42"
    assert ev["rawQueryString"] == "q=1&q=2&x=a%20b"
    assert ev["cookies"] == ["session=abc", "theme=dark", "c=3"]
    assert "cookie" not in ev["headers"]
    assert ev["headers"]["x-trace"] == "a,b"
    assert ev["headers"]["content-type"] == "application/json"
    assert all(k == k.lower() for k in ev["headers"])
    assert ev["queryStringParameters"] == {"q": "1,2", "x": "a b"}
    assert ev["pathParameters"] == {"id": "42"}
    assert ev["stageVariables"] == {"env": "test"}
    assert ev["body"] == '{"qty":1}' and ev["isBase64Encoded"] is False
    for absent in ("multiValueHeaders", "multiValueQueryStringParameters", "resource"):
        assert absent not in ev
    ctx = ev["requestContext"]
    assert ctx["routeKey"] == "ANY /v2/orders/{id}" and ctx["stage"] == "beta"
    assert ctx["http"]["method"] == "POST" and ctx["http"]["path"] == "/beta/v2/orders/42"
    assert ctx["http"]["sourceIp"] == "127.0.0.1"
    assert ctx["http"]["userAgent"].startswith("Python/")
    assert len(ctx["requestId"]) == 16 and ctx["requestId"].endswith("=")
    assert isinstance(ctx["timeEpoch"], int) and "+0000" in ctx["time"]


async def test_v2_event_omits_absent_fields_and_base64s_binary(running: Running) -> None:
    data = b"\x00\xff\xfe binary"
    ev = await event_of(
        running,
        "POST",
        "/v2/files/a/b",
        data=data,
        headers={"Content-Type": "application/octet-stream"},
    )
    for absent in ("cookies", "queryStringParameters", "stageVariables"):
        assert absent not in ev
    assert ev["rawQueryString"] == ""
    assert ev["pathParameters"] == {"proxy": "a/b"}
    assert ev["isBase64Encoded"] is True and base64.b64decode(ev["body"]) == data
    ev = await event_of(running, "GET", "/v2/files/x")
    assert "body" not in ev and ev["isBase64Encoded"] is False


async def test_function_url_event_has_default_route_and_no_stage(running: Running) -> None:
    ev = await event_of(running, "GET", "/url/a%20b/c?x=1", headers={"X-Forwarded-For": "1.2.3.4"})
    assert ev["routeKey"] == "$default"
    assert ev["rawPath"] == "/url/a%20b/c"
    assert "pathParameters" not in ev and "stageVariables" not in ev
    ctx = ev["requestContext"]
    assert ctx["stage"] == "$default" and ctx["routeKey"] == "$default"
    assert ctx["accountId"] == "anonymous"
    assert len(ctx["apiId"]) == 32
    assert ev["headers"]["x-forwarded-for"] == "1.2.3.4, 127.0.0.1"
    assert ev["headers"]["x-amzn-trace-id"].startswith("Root=1-")
    assert ev["headers"]["x-forwarded-proto"] == "http"


# ---- responses ------------------------------------------------------------------------------


async def test_v1_non_string_body_and_missing_status_are_502(running: Running) -> None:
    for action in ("dictbody", "nostatus", "badstatus", "plain", "raise"):
        status, _, body = await call(running, "POST", f"/v1/orders/1?action={action}")
        assert status == 502, action
        assert json.loads(body) == {"message": "Internal server error"}


async def test_v1_merges_headers_and_multi_value_headers(running: Running) -> None:
    status, headers, body = await call(running, "POST", "/v1/orders/1?action=multi")
    assert status == 200 and body == b"ok"
    assert headers.getall("Set-Cookie") == ["a=1", "b=2"]  # type: ignore[union-attr]
    assert headers.getall("X-Both") == ["m1", "m2"]  # type: ignore[union-attr]
    assert headers["X-One"] == "1"  # type: ignore[index]


async def test_v1_base64_body_is_decoded_only_for_binary_media_types(running: Running) -> None:
    status, _, body = await call(running, "GET", "/v1/files/x?action=b64")
    assert status == 200 and body == b"\x89PNG\x00\xff"
    status, _, body = await call(running, "POST", "/v1/orders/1?action=b64")
    assert status == 200 and base64.b64decode(body) == b"\x89PNG\x00\xff"


async def test_v2_plain_values_become_200_json(running: Running) -> None:
    for action, expected in (
        ("plain", {"hello": "world"}),
        ("plainlist", [1, 2]),
    ):
        status, headers, body = await call(running, "GET", f"/v2/files/x?action={action}")
        assert status == 200
        assert headers["Content-Type"] == "application/json"  # type: ignore[index]
        assert json.loads(body) == expected
    status, _, body = await call(running, "GET", "/url/x?action=plainstr")
    assert status == 200 and body == b"hello"


async def test_v2_cookies_become_set_cookie_headers(running: Running) -> None:
    status, headers, body = await call(running, "GET", "/v2/files/x?action=cookies")
    assert status == 201 and body == b"ok"
    assert headers.getall("Set-Cookie") == ["a=1; Path=/", "b=2"]  # type: ignore[union-attr]
    assert headers["x-h"] == "v"  # type: ignore[index]
    status, headers, body = await call(running, "GET", "/v2/files/x?action=b64")
    assert status == 200 and body == b"\x89PNG\x00\xff"
    assert headers["Content-Type"] == "image/png"  # type: ignore[index]


async def test_function_error_and_malformed_response_are_internal_errors(
    running: Running,
) -> None:
    status, _, body = await call(running, "GET", "/v2/files/x?action=raise")
    assert status == 500 and json.loads(body) == {"message": "Internal Server Error"}
    status, _, body = await call(running, "GET", "/v2/files/x?action=badstatus")
    assert status == 500
    status, _, body = await call(running, "GET", "/url/x?action=raise")
    assert status == 502 and json.loads(body) == {"message": "Internal Server Error"}


async def test_route_timeout_and_function_timeout_are_504(running: Running) -> None:
    status, _, _ = await call(running, "GET", "/timeout?action=sleep&s=3")
    assert status == 504
    status, _, _ = await call(running, "GET", "/fn-timeout?action=sleep&s=3")
    assert status == 504


# ---- security -------------------------------------------------------------------------------


def github_sig(body: bytes, secret: str = GITHUB_SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


async def test_hmac_github_signature_missing_401_bad_403_good_200(running: Running) -> None:
    body = b'{"action":"opened"}'
    json_ = {"Content-Type": "application/json"}
    status, _, resp = await call(running, "POST", "/hooks/github", data=body, headers=json_)
    assert status == 401 and json.loads(resp) == {"message": "Unauthorized"}
    bad = github_sig(body, "wrong")
    status, _, resp = await call(
        running, "POST", "/hooks/github", data=body, headers={**json_, "X-Hub-Signature-256": bad}
    )
    assert status == 403 and json.loads(resp) == {"message": "Forbidden"}
    good = github_sig(body)
    status, _, resp = await call(
        running, "POST", "/hooks/github", data=body, headers={**json_, "X-Hub-Signature-256": good}
    )
    assert status == 200
    assert json.loads(resp)["body"] == body.decode()


async def test_hmac_stripe_signature_checks_timestamp_tolerance(running: Running) -> None:
    body = b'{"type":"charge.succeeded"}'

    def header(ts: int) -> str:
        mac = hmac.new(STRIPE_SECRET.encode(), f"{ts}.".encode() + body, hashlib.sha256)
        return f"t={ts},v1={mac.hexdigest()}"

    now = int(time.time())
    status, _, _ = await call(
        running, "POST", "/hooks/stripe", data=body, headers={"Stripe-Signature": header(now)}
    )
    assert status == 200
    status, _, _ = await call(
        running,
        "POST",
        "/hooks/stripe",
        data=body,
        headers={"Stripe-Signature": header(now - 3600)},
    )
    assert status == 403


async def test_bearer_token_missing_401_wrong_403_right_200(running: Running) -> None:
    status, _, _ = await call(running, "GET", "/hooks/bearer")
    assert status == 401
    status, _, _ = await call(
        running, "GET", "/hooks/bearer", headers={"Authorization": "Bearer nope"}
    )
    assert status == 403
    status, _, _ = await call(
        running, "GET", "/hooks/bearer", headers={"Authorization": f"Bearer {BEARER_TOKEN}"}
    )
    assert status == 200


async def test_secrets_never_appear_in_logs(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    body = b"x"
    await call(running, "POST", "/hooks/github", data=body, headers={"X-Hub-Signature-256": "a"})
    await call(running, "POST", "/hooks/github", data=body, headers={"X-Hub-Signature-256": "b"})
    await call(running, "GET", "/hooks/bearer", headers={"Authorization": f"Bearer {BEARER_TOKEN}"})
    await call(running, "GET", "/hooks/bearer", headers={"Authorization": "Bearer guess-123"})
    fmt = JsonFormatter()
    text = "\n".join(fmt.format(r) for r in caplog.records)
    assert "webhook.refused" in text
    for secret in (GITHUB_SECRET, STRIPE_SECRET, BEARER_TOKEN, "guess-123"):
        assert secret not in text
    assert GITHUB_SECRET not in repr(running.daemon.config)


async def test_oversize_body_is_413(running: Running) -> None:
    status, _, body = await call(running, "POST", "/limits", data=b"x" * 1025)
    assert status == 413 and json.loads(body) == {"message": "Request Too Long"}

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(4):
            yield b"y" * 400

    status, _, _ = await call(running, "POST", "/limits", data=chunks())
    assert status == 413, "a chunked body is counted as it arrives"
    status, _, _ = await call(running, "POST", "/limits", data=b"x" * 1024)
    assert status == 200


async def test_too_many_or_too_large_headers_are_431(running: Running) -> None:
    many = [(f"X-H{i}", "v") for i in range(25)]
    status, _, _ = await call(running, "POST", "/limits", headers=many)
    assert status == 431
    status, _, _ = await call(running, "POST", "/limits", headers={"X-Big": "v" * 3000})
    assert status == 431


async def test_malformed_http_request_is_400(running: Running) -> None:
    host, port = running.daemon.listen_address.split(":")  # type: ignore[union-attr]
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"POST /v2/files/x HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n")
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), 10)
    writer.close()
    await writer.wait_closed()
    assert status_line.startswith(b"HTTP/1.") and b" 400 " in status_line


async def test_rate_limit_answers_429_after_the_burst(running: Running) -> None:
    statuses = [(await call(running, "GET", "/rate?action=plain"))[0] for _ in range(3)]
    assert statuses == [200, 200, 429]
    _, headers, _ = await call(running, "GET", "/rate")
    assert int(headers["Retry-After"]) >= 1  # type: ignore[index]


async def test_concurrency_limit_answers_429_while_one_is_in_flight(running: Running) -> None:
    first = asyncio.create_task(call(running, "GET", "/slow?action=sleep&s=1.5"))
    source = running.source("slow")
    deadline = time.monotonic() + 10
    while source.in_flight < 1 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    status, _, _ = await call(running, "GET", "/slow?action=plain")
    assert status == 429
    assert (await first)[0] == 200


async def test_cors_preflight_and_actual_response_headers(running: Running) -> None:
    origin = "https://app.example"
    status, headers, _ = await call(
        running,
        "OPTIONS",
        "/cors",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,x-sig",
        },
    )
    assert status == 204
    assert headers["Access-Control-Allow-Origin"] == origin  # type: ignore[index]
    assert headers["Access-Control-Allow-Methods"] == "POST"  # type: ignore[index]
    assert headers["Access-Control-Allow-Headers"] == "content-type,x-sig"  # type: ignore[index]
    assert headers["Access-Control-Max-Age"] == "600"  # type: ignore[index]
    status, _, _ = await call(
        running,
        "OPTIONS",
        "/cors",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert status == 403
    status, headers, _ = await call(
        running, "POST", "/cors?action=plain", headers={"Origin": origin}
    )
    assert status == 200
    assert headers["Access-Control-Allow-Origin"] == origin  # type: ignore[index]
    assert headers["Vary"] == "Origin"  # type: ignore[index]


async def test_unknown_path_404_and_wrong_method_405(running: Running) -> None:
    assert (await call(running, "GET", "/nope"))[0] == 404
    assert (await call(running, "GET", "/v1/orders/1"))[0] == 405


async def raw_exchange(
    r: Running, head: bytes
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = r.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(head)
    return reader, writer


async def test_expect_100_continue_is_answered_before_the_body_is_sent(running: Running) -> None:
    body = b'{"big": "' + b"x" * 100_000 + b'"}'
    head = (
        "POST /v2/files/upload HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n"
    ).encode()
    reader, writer = await raw_exchange(running, head)
    try:
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(body)
        final = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert final.startswith(b"HTTP/1.1 200 ")
    finally:
        writer.close()


async def test_an_unknown_expectation_is_417(running: Running) -> None:
    status, _, _ = await call(
        running, "POST", "/v2/files/x", data=b"{}", headers={"Expect": "something-else"}
    )
    assert status == 417


async def test_requests_write_no_access_log(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="aiohttp.access"):
        assert (await call(running, "GET", "/healthz"))[0] == 200
        assert (await call(running, "POST", "/v2/files/a", data=b"{}"))[0] == 200
    assert [r for r in caplog.records if r.name == "aiohttp.access"] == []


async def test_head_on_the_daemon_endpoints_answers_without_a_body(running: Running) -> None:
    for path in ("/healthz", "/metrics"):
        status, headers, body = await call(running, "HEAD", path)
        assert status == 200 and body == b""
        assert int(headers["Content-Length"]) > 0  # type: ignore[index]


# ---- event mode -----------------------------------------------------------------------------


async def test_event_mode_answers_202_and_delivers_the_event(running: Running) -> None:
    status, headers, body = await call(
        running, "POST", "/events?n=1", data=b'{"n":1}', headers={"Content-Type": "text/plain"}
    )
    assert status == 202 and body == b""
    rid = headers["Apigw-Requestid"]  # type: ignore[index]
    deadline = time.monotonic() + 20
    while not running.recorded() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    [call_] = running.recorded()
    ev = call_["event"]
    assert ev["requestContext"]["requestId"] == rid
    assert ev["body"] == '{"n":1}' and ev["queryStringParameters"] == {"n": "1"}


async def test_event_mode_over_the_async_payload_cap_is_413(running: Running) -> None:
    status, _, _ = await call(running, "POST", "/events", data=io.BytesIO(b"x" * (1024 * 1024 + 1)))
    assert status == 413
    status, _, _ = await call(running, "POST", "/events?after=1", data=b"small")
    assert status == 202
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if any(c["event"]["queryStringParameters"] == {"after": "1"} for c in running.recorded()):
            break
        await asyncio.sleep(0.05)
    assert all(len(c["event"].get("body") or "") < 1024 for c in running.recorded())


async def test_event_mode_poison_goes_to_the_on_failure_destination_and_others_pass(
    running: Running,
) -> None:
    text = {"Content-Type": "text/plain"}
    for body in (b"poison pill", b"fine-1", b"fine-2"):
        status, _, _ = await call(running, "POST", "/events-dlq", data=body, headers=text)
        assert status == 202
    dlq = running.tmp / "dlq.jsonl"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        bodies = {c["event"].get("body") for c in running.recorded()}
        if {"fine-1", "fine-2"} <= bodies and dlq.exists() and dlq.read_text().strip():
            break
        await asyncio.sleep(0.05)
    [record] = [json.loads(line) for line in dlq.read_text().splitlines()]
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert record["requestPayload"]["body"] == "poison pill"
    assert record["requestPayload"]["requestContext"]["routeKey"] == "ANY /events-dlq"
    assert record["responsePayload"]["errorType"] == "ValueError"
    assert {"fine-1", "fine-2"} <= {c["event"].get("body") for c in running.recorded()}


async def test_a_bug_in_the_handler_still_answers_like_a_gateway(
    running: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any) -> Any:
        raise RuntimeError("bug")

    monkeypatch.setattr(running.source("v1-orders"), "build", broken)
    status, _, body = await call(running, "POST", "/v1/orders/1")
    assert status == 502 and json.loads(body) == {"message": "Internal server error"}


# ---- tracing --------------------------------------------------------------------------------

TRACE = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
FRESH_TRACE = re.compile(r"Root=1-[0-9a-f]{8}-[0-9a-f]{24};Parent=[0-9a-f]{16};Sampled=0")


async def test_incoming_trace_header_is_the_functions_trace_id(running: Running) -> None:
    status, _, body = await call(
        running, "GET", "/v2/orders/1?action=trace", headers={"X-Amzn-Trace-Id": TRACE}
    )
    assert status == 200 and body.decode() == TRACE


async def test_trace_header_without_parent_gets_one(running: Running) -> None:
    root = "Root=1-5759e988-bd862e3fe1be46a994272793"
    _, _, body = await call(
        running, "GET", "/v2/orders/1?action=trace", headers={"X-Amzn-Trace-Id": root}
    )
    assert re.fullmatch(root + r";Parent=[0-9a-f]{16}", body.decode())


@pytest.mark.parametrize(
    "header",
    [
        "Root=1-5759e988-bd862e3fe1be46a994272793;Evil=<script>",
        "Root=1-zzzz;Sampled=1",
        "Sampled=1",
        "Root=1-5759e988-bd862e3fe1be46a994272793;Pad=" + "a" * 300,
    ],
)
async def test_malformed_trace_header_is_replaced_by_a_fresh_id(
    running: Running, header: str
) -> None:
    _, _, body = await call(
        running, "GET", "/v2/orders/1?action=trace", headers={"X-Amzn-Trace-Id": header}
    )
    assert FRESH_TRACE.fullmatch(body.decode()), body


async def test_without_trace_header_each_request_gets_a_fresh_id(running: Running) -> None:
    ids = [(await call(running, "GET", "/v2/orders/1?action=trace"))[2].decode() for _ in "ab"]
    assert all(FRESH_TRACE.fullmatch(i) for i in ids) and ids[0] != ids[1]


async def test_event_mode_keeps_the_incoming_trace_across_the_queue(running: Running) -> None:
    status, _, _ = await call(
        running,
        "POST",
        "/events",
        data=b"traced",
        headers={"X-Amzn-Trace-Id": TRACE, "Content-Type": "text/plain"},
    )
    assert status == 202
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        traced = [c for c in running.recorded() if c["event"].get("body") == "traced"]
        if traced:
            break
        await asyncio.sleep(0.05)
    assert [c["trace"] for c in traced] == [TRACE]
