"""The public listener under attack: a daemon started in-process with short [daemon] http_*
timeouts, raw sockets for what well-behaved clients never send (half heads, trickled bodies,
HTTP/0.9, chunked HTTP/1.0, non-UTF-8 request lines, malformed signature headers, early
`Expect: 100-continue`). Each test fails on a listener without the limits (it hangs, is
answered 429/500, or logs a traceback)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
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

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

FUNCTIONS = Path(__file__).parent / "functions"
GITHUB_SECRET = "gh-listener-s3cret"
STRIPE_SECRET = "whsec_listener"
TOKEN = "listener-t0ken"
#: How long a test waits for the daemon to answer or close before calling it a hang.
HANG_S = 15.0


def webhook(name: str, path: str, function: str = "actions", **source: Any) -> dict[str, Any]:
    return {
        "name": name,
        "function": function,
        "source": {"type": "webhook", "path": path, **source},
    }


def config(tmp: Path) -> dict[str, Any]:
    actions = {"handler": "app.handler", "code": str(FUNCTIONS / "webhook_actions")}
    recorder = {
        "handler": "app.handler",
        "code": str(FUNCTIONS / "webhook_recorder"),
        "environment": {"RECORD_FILE": str(tmp / "calls.jsonl")},
    }
    return {
        "daemon": {
            "state": f"sqlite:///{tmp / 'state.db'}",
            "listen": "127.0.0.1:0",
            "control_listen": "",
            "control_on_public": True,
            "http_header_timeout_s": 1,
            "http_body_timeout_s": 1,
            "http_body_min_bytes_per_s": 1_000_000,
            "http_idle_timeout_s": 1,
        },
        "functions": {"actions": {**actions, "timeout_s": 10}, "recorder": recorder},
        "triggers": [
            webhook("open", "/open", max_concurrency=1),
            webhook(
                "github",
                "/github",
                method="POST",
                max_concurrency=1,
                auth={"type": "hmac", "secret": GITHUB_SECRET},
            ),
            webhook(
                "stripe",
                "/stripe",
                method="POST",
                auth={"type": "hmac", "style": "stripe", "secret": STRIPE_SECRET},
            ),
            webhook(
                "bearer",
                "/bearer",
                method="POST",
                max_body_bytes=1024,
                auth={"type": "bearer", "token": TOKEN},
            ),
            webhook("limited", "/limited", method="POST", max_body_bytes=1024),
            webhook("recorded", "/recorded/{proxy+}", function="recorder"),
        ],
    }


@dataclass
class Running:
    daemon: Daemon
    host: str
    port: int
    tmp: Path

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def recorded(self) -> list[dict[str, Any]]:
        path = self.tmp / "calls.jsonl"
        if not path.exists():
            return []
        lines = path.read_text().splitlines()
        return [json.loads(line)["event"] for line in lines if line.endswith("}")]

    def recorded_paths(self) -> list[str]:
        return [event["rawPath"] for event in self.recorded()]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def running(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Running]:
    tmp = tmp_path_factory.mktemp("listener")
    registry = Registry.discover()
    cfg = validate_data(config(tmp), registry, base_dir=tmp)
    async with Daemon(cfg, registry).running(stop_timeout_s=60) as daemon:
        assert daemon.listen_address is not None
        host, port = daemon.listen_address.rsplit(":", 1)
        yield Running(daemon, host, int(port), tmp)


async def request(r: Running, method: str, path: str, **kw: Any) -> tuple[int, bytes]:
    """A well-behaved client (a new connection each time: the listener closes idle ones)."""
    connector = aiohttp.TCPConnector(force_close=True)
    async with (
        aiohttp.ClientSession(connector=connector) as http,
        http.request(method, r.url + path, **kw) as resp,
    ):
        return resp.status, await resp.read()


@contextlib.asynccontextmanager
async def connection(
    r: Running,
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection(r.host, r.port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def until_closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the daemon sends until it closes the connection."""
    try:
        return await asyncio.wait_for(reader.read(), HANG_S)
    except TimeoutError:
        raise AssertionError(f"the daemon kept the connection open for {HANG_S} s") from None
    except ConnectionResetError:
        return b""


async def head(reader: asyncio.StreamReader) -> bytes:
    """The next response head (status line and headers)."""
    try:
        return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HANG_S)
    except TimeoutError:
        raise AssertionError(f"no answer within {HANG_S} s") from None


async def exchange(r: Running, data: bytes) -> bytes:
    async with connection(r) as (reader, writer):
        writer.write(data)
        return await until_closed(reader)


def status_of(response: bytes) -> int:
    match = re.match(rb"HTTP/1\.[01] (\d{3}) ", response)
    assert match, response[:200]
    return int(match.group(1))


async def refused_count(r: Running, reason: str, listener: str = "public") -> float:
    _, body = await request(r, "GET", "/metrics")
    labels = f'listener="{listener}",reason="{reason}"'.encode()
    pattern = rb"triggerd_http_refused_total\{" + re.escape(labels) + rb"\} (\S+)"
    match = re.search(pattern, body)
    return float(match.group(1)) if match else 0.0


def refusal_lines(caplog: pytest.LogCaptureFixture, reason: str) -> list[logging.LogRecord]:
    return [
        rec
        for rec in caplog.records
        if rec.getMessage() == "http.refused" and getattr(rec, "reason", None) == reason
    ]


@contextlib.asynccontextmanager
async def trickling(
    r: Running, heads: list[bytes], every_s: float = 0.2
) -> AsyncIterator[list[asyncio.StreamReader]]:
    """Connections that send a head announcing 100 bytes of body, then one byte every
    `every_s` seconds."""
    streams = [await asyncio.open_connection(r.host, r.port) for _ in heads]
    for (_, writer), first in zip(streams, heads, strict=True):
        writer.write(first + b"x")

    async def trickle() -> None:
        while True:
            await asyncio.sleep(every_s)
            for _, writer in streams:
                if not writer.is_closing():
                    writer.write(b"x")

    task = asyncio.create_task(trickle())
    try:
        yield [reader for reader, _ in streams]
    finally:
        task.cancel()
        for _, writer in streams:
            writer.close()


def stripe_signature(ts: int, body: bytes, secret: str = STRIPE_SECRET) -> str:
    mac = hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={ts},v1={mac}"


def github_signature(body: bytes, secret: str = GITHUB_SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


# ---- slow and idle connections ---------------------------------------------------------------


async def test_a_half_sent_head_is_answered_408_and_closed_after_the_header_timeout(
    running: Running,
) -> None:
    response = await exchange(running, b"GET /open HTTP/1.1\r\nHost: x\r\n")
    assert status_of(response) == 408
    assert b"Connection: close" in response


async def test_a_connection_that_sends_nothing_is_closed_after_the_header_timeout(
    running: Running,
) -> None:
    assert await exchange(running, b"") == b""


async def test_an_idle_kept_alive_connection_is_closed(running: Running) -> None:
    async with connection(running) as (reader, writer):
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        first = await head(reader)
        assert status_of(first) == 200 and b"Connection: close" not in first
        length = int(re.search(rb"Content-Length: (\d+)", first).group(1))  # type: ignore[union-attr]
        await reader.readexactly(length)
        assert await until_closed(reader) == b""


async def test_a_kept_alive_connection_serves_a_second_request_within_the_idle_timeout(
    running: Running,
) -> None:
    async with connection(running) as (reader, writer):
        for _ in range(2):
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = await head(reader)
            assert status_of(answer) == 200
            length = int(re.search(rb"Content-Length: (\d+)", answer).group(1))  # type: ignore[union-attr]
            await reader.readexactly(length)


async def test_trickled_bodies_hold_no_slot_and_are_cut_off_with_408(running: Running) -> None:
    head_ = b"POST /open HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"
    async with trickling(running, [head_] * 3) as readers:
        # max_concurrency = 1, and three bodies are arriving one byte at a time:
        status, body = await request(running, "POST", "/open?action=plain", data=b"{}")
        assert status == 200, body
        for reader in readers:
            assert status_of(await until_closed(reader)) == 408


async def test_an_hmac_route_with_a_trickled_body_leaves_its_slot_to_signed_requests(
    running: Running,
) -> None:
    signed = b"POST /github HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\nX-Hub-Signature-256: "
    trickler = signed + github_signature(b"x" * 100).encode() + b"\r\n\r\n"
    async with trickling(running, [trickler]) as [reader]:
        body = b'{"ok":1}'
        headers = {"X-Hub-Signature-256": github_signature(body)}
        status, answer = await request(running, "POST", "/github", data=body, headers=headers)
        assert status == 200, answer
        assert status_of(await until_closed(reader)) == 408


@pytest.mark.parametrize(
    ("path", "auth_header", "status"),
    [
        ("/bearer", b"Authorization: Bearer wrong", 403),
        ("/bearer", b"X-Nothing: 1", 401),
        ("/github", b"X-Nothing: 1", 401),
        ("/github", b"X-Hub-Signature-256: sha256=zz", 403),
        ("/stripe", b"Stripe-Signature: t=1000000000,v1=" + b"0" * 64, 403),  # stale
    ],
)
async def test_authentication_is_refused_before_the_body_is_sent(
    running: Running, path: str, auth_header: bytes, status: int
) -> None:
    data = b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n%s\r\n\r\n" % (
        path.encode(),
        auth_header,
    )
    async with connection(running) as (reader, writer):
        writer.write(data)  # and no body at all
        assert status_of(await head(reader)) == status


# ---- malformed authentication headers ------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "t=²,v1=00".encode(),
        b"t=" + b"9" * 5000 + b",v1=" + b"0" * 64,
        # Arabic-Indic digits: str.isdigit() says yes, int() takes them.
        "t=\u0661\u0667\u0660\u0660,v1=".encode() + b"0" * 64,
        b"t=\xff\xfe,v1=00",
        b"t=1,v1=\xff",
        b"t=,v1=",
        b",,,",
        b"t=1=2=3,v1",
    ],
)
async def test_a_malformed_stripe_signature_is_4xx_never_500(
    running: Running, value: bytes
) -> None:
    body = b'{"a":1}'
    response = await exchange(
        running,
        b"POST /stripe HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 7\r\n"
        b"Stripe-Signature: " + value + b"\r\n\r\n" + body,
    )
    assert status_of(response) in (400, 401, 403)


@pytest.mark.parametrize(
    "value",
    [b"sha256=\xff", b"sha256=" + "é".encode() * 64, b"sha256=", b"md5=00", b"\xc3"],
)
async def test_a_malformed_github_signature_is_4xx_never_500(
    running: Running, value: bytes
) -> None:
    response = await exchange(
        running,
        b"POST /github HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 2\r\n"
        b"X-Hub-Signature-256: " + value + b"\r\n\r\n{}",
    )
    assert status_of(response) in (400, 401, 403)


async def test_a_fresh_stripe_signature_still_passes(running: Running) -> None:
    body = b'{"a":1}'
    headers = {"Stripe-Signature": stripe_signature(int(time.time()), body)}
    status, answer = await request(running, "POST", "/stripe", data=body, headers=headers)
    assert status == 200, answer


# ---- malformed requests: one log line, counted by reason ---------------------------------------


async def test_non_utf8_request_lines_are_400_with_one_log_line_and_no_traceback(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    before = await refused_count(running, "bad_url")
    for _ in range(20):
        response = await exchange(running, b"GET /\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status_of(response) == 400
    assert await refused_count(running, "bad_url") == before + 20
    assert len(refusal_lines(caplog, "bad_url")) == 1
    assert [rec for rec in caplog.records if rec.exc_info] == []
    assert [rec for rec in caplog.records if rec.levelno >= logging.ERROR] == []


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (b"No colon here", "bad_request"),
        (b"X-Long: " + b"a" * 9000, "line_too_long"),
    ],  # llhttp: a generic bad message
)
async def test_a_malformed_header_is_400_counted_by_reason_without_a_traceback(
    running: Running, caplog: pytest.LogCaptureFixture, header: bytes, reason: str
) -> None:
    caplog.set_level(logging.DEBUG)
    before = await refused_count(running, reason)
    response = await exchange(running, b"GET /open HTTP/1.1\r\nHost: x\r\n" + header + b"\r\n\r\n")
    assert status_of(response) == 400
    assert await refused_count(running, reason) == before + 1
    assert [rec for rec in caplog.records if rec.exc_info] == []


#: What aiohttp's C parser (llhttp) refuses, and the reason each is counted under: the table
#: of reasons in docs/listener.md.
PARSER_REFUSALS = [
    (b"G\xffT /open HTTP/1.1\r\nHost: x\r\n\r\n", "bad_method"),
    (b"G(T /open HTTP/1.1\r\nHost: x\r\n\r\n", "bad_method"),
    (b"\x00\x01\r\n\r\n", "bad_method"),
    (b"GET /\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n", "bad_url"),
    (b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n", "bad_request_line"),
    (b"GET /open HTTP/1.x\r\nHost: x\r\n\r\n", "bad_request_line"),
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", "line_too_long"),
    (b"GET /open HTTP/1.1\r\nHost: x\r\nX(y: 1\r\n\r\n", "bad_request"),
    (b"POST /open HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", "bad_request"),
    (
        b"POST /open HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        "bad_request",
    ),
    (b"POST /open HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", "bad_request"),
]


@pytest.mark.parametrize(("data", "reason"), PARSER_REFUSALS)
async def test_parser_refusals_are_400_counted_under_the_documented_reason(
    running: Running, data: bytes, reason: str
) -> None:
    before = await refused_count(running, reason)
    assert status_of(await exchange(running, data)) == 400
    assert await refused_count(running, reason) == before + 1
    documented = (Path(__file__).parents[2] / "docs" / "listener.md").read_text()
    assert f"`{reason}`" in documented


# Refused authentication counted and logged once per burst: test_listener_control.py, whose
# daemon has logged no auth_failed before (here, earlier tests' lines are within the interval).


# ---- protocol ----------------------------------------------------------------------------------


async def test_http_0_9_is_refused_and_never_runs_the_function(running: Running) -> None:
    assert status_of(await exchange(running, b"GET /recorded/zero-nine\r\n\r\n")) == 400
    status, _ = await request(running, "GET", "/recorded/control")
    assert status == 200
    assert running.recorded_paths() == ["/recorded/control"]


@pytest.mark.parametrize(
    ("version", "status"),
    [(b"HTTP/2.0", b"HTTP/1.1 505 "), (b"HTTP/1.2", b"HTTP/1.0 400 ")],  # 1.2: aiohttp's parser
)
async def test_other_http_versions_are_refused_and_never_run_the_function(
    running: Running, version: bytes, status: bytes
) -> None:
    response = await exchange(running, b"GET /recorded/v " + version + b"\r\nHost: x\r\n\r\n")
    assert response.startswith(status)
    assert "/recorded/v" not in running.recorded_paths()


async def test_chunked_http_1_0_is_refused_and_never_runs_the_function(running: Running) -> None:
    response = await exchange(
        running,
        b"POST /recorded/chunked HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n0\r\n\r\n",
    )
    assert status_of(response) == 400
    assert "/recorded/chunked" not in running.recorded_paths()


@pytest.mark.parametrize(
    "path", [b"/recorded/..%2F..%2Fetc%2Fpasswd", b"/recorded/../../etc/passwd"]
)
async def test_route_parameters_reach_the_function_decoded_as_api_gateway_sends_them(
    running: Running, path: bytes
) -> None:
    response = await exchange(
        running, b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert status_of(response) == 200
    event = running.recorded()[-1]  # the function answered, so it recorded this request last
    assert event["rawPath"] == "/recorded/../../etc/passwd"
    assert event["pathParameters"] == {"proxy": "../../etc/passwd"}


async def test_expect_100_continue_gets_413_first_when_the_declared_body_is_too_large(
    running: Running,
) -> None:
    async with connection(running) as (reader, writer):
        writer.write(
            b"POST /limited HTTP/1.1\r\nHost: x\r\nContent-Length: 7000000\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        assert status_of(await head(reader)) == 413


@pytest.mark.parametrize(("token", "status"), [(b"wrong", 403), (b"", 401)])
async def test_expect_100_continue_gets_the_auth_refusal_first(
    running: Running, token: bytes, status: int
) -> None:
    async with connection(running) as (reader, writer):
        writer.write(
            b"POST /bearer HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n"
            b"Authorization: Bearer " + token + b"\r\nExpect: 100-continue\r\n\r\n"
        )
        assert status_of(await head(reader)) == status


async def test_expect_100_continue_is_answered_once_the_headers_pass(running: Running) -> None:
    async with connection(running) as (reader, writer):
        writer.write(
            b"POST /bearer HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
            b"Authorization: Bearer " + TOKEN.encode() + b"\r\nExpect: 100-continue\r\n\r\n"
        )
        assert await head(reader) == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"{}")
        assert status_of(await head(reader)) == 200


async def test_a_declared_body_that_never_comes_after_100_continue_is_408(
    running: Running,
) -> None:
    async with connection(running) as (reader, writer):
        writer.write(
            b"POST /limited HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        assert await head(reader) == b"HTTP/1.1 100 Continue\r\n\r\n"
        assert status_of(await until_closed(reader)) == 408


async def test_the_invoke_api_gets_413_before_100_continue_for_an_oversized_payload(
    running: Running,
) -> None:
    async with connection(running) as (reader, writer):
        writer.write(
            b"POST /2015-03-31/functions/actions/invocations HTTP/1.1\r\nHost: x\r\n"
            b"Content-Length: 7000000\r\nExpect: 100-continue\r\n\r\n"
        )
        assert status_of(await head(reader)) == 413


async def test_a_broken_chunk_is_400(running: Running) -> None:
    async with connection(running) as (reader, writer):
        writer.write(b"POST /limited HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        await writer.drain()
        writer.write(b"zz\r\nabc\r\n0\r\n\r\n")
        assert status_of(await until_closed(reader)) == 400
