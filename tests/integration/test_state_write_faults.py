"""A state store whose writes fail (a full disk, injected through the store's write hook, which
raises the error SQLite gives for a full disk): /readyz and /healthz say so, an event-mode
webhook answers 503 with Retry-After, the Invoke API answers AWS's ServiceException JSON; all
recover once writes succeed again, and nothing acknowledged was lost."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from tests.integration.invoke_daemon import local_fn, wait_until
from triggerd.config.load import validate_data
from triggerd.config.plugins import Registry
from triggerd.daemon.app import Daemon

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]


@dataclass
class Disk:
    full: bool = False

    def before_write(self, conn: sqlite3.Connection) -> None:
        if self.full:
            raise sqlite3.OperationalError("database or disk is full")


@dataclass
class Running:
    daemon: Daemon
    base: str
    disk: Disk
    records: Path


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def running(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Running]:
    tmp = tmp_path_factory.mktemp("faults")
    registry = Registry.discover()
    data: dict[str, Any] = {
        "daemon": {
            "state": f"sqlite:///{tmp / 'state.db'}",
            "listen": "127.0.0.1:0",
            # the webhook and the control endpoints (/readyz, Invoke API) on one address
            "control_listen": "",
            "control_on_public": True,
            "work_dir": str(tmp / "run"),
            "shutdown_timeout_s": 5,
        },
        "functions": {"fn": local_fn()},
        "triggers": [
            {
                "name": "hook",
                "function": "fn",
                "source": {
                    "type": "webhook",
                    "path": "/hook",
                    "invocation": "event",
                    "accept_timeout_s": 5,
                },
            }
        ],
    }
    disk = Disk()
    daemon = Daemon(
        validate_data(data, registry, base_dir=tmp), registry, state_write_hook=disk.before_write
    )
    async with daemon.running() as d:
        yield Running(d, f"http://{d.listen_address}", disk, tmp / "records.jsonl")


async def request(
    r: Running, method: str, path: str, **kw: Any
) -> tuple[int, dict[str, str], bytes]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, r.base + path, **kw) as resp,
    ):
        return resp.status, dict(resp.headers), await resp.read()


def invoke_event(r: Running, ident: int) -> tuple[str, dict[str, Any]]:
    body = json.dumps({"record": str(r.records), "id": ident})
    headers = {"X-Amz-Invocation-Type": "Event"}
    return "/2015-03-31/functions/fn/invocations", {"data": body, "headers": headers}


def recorded_ids(r: Running) -> list[int]:
    if not r.records.exists():
        return []
    return [json.loads(line)["id"] for line in r.records.read_text().splitlines()]


async def test_ready_and_healthy_while_writes_succeed(running: Running) -> None:
    status, _, body = await request(running, "GET", "/readyz")
    doc = json.loads(body)
    assert status == 200
    assert doc["status"] == "ready" and doc["state_store"] == {"status": "ok"}
    assert doc["triggers"]["hook"] == {"status": "running", "reasons": []}
    status, _, body = await request(running, "GET", "/healthz")
    assert status == 200 and json.loads(body)["status"] == "ok"


async def test_a_full_disk_is_reported_refused_in_aws_shape_and_recovers(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    path, kw = invoke_event(running, 1)
    running.disk.full = True
    try:
        # The Invoke API: AWS's ServiceException, not aiohttp's text/plain 500.
        status, headers, body = await request(running, "POST", path, **kw)
        assert status == 500
        assert headers["x-amzn-ErrorType"] == "ServiceException"
        assert headers["Content-Type"].startswith("application/json")
        assert json.loads(body)["__type"] == "ServiceException"
        assert "x-amzn-RequestId" in headers

        # A push source: 503 with Retry-After; the caller keeps the event.
        status, headers, _ = await request(running, "POST", "/hook", data=b'{"n":1}')
        assert status == 503 and headers["Retry-After"].isdigit()

        status, _, body = await request(running, "GET", "/readyz")
        doc = json.loads(body)
        assert status == 503 and doc["status"] == "degraded"
        assert doc["state_store"] == {"status": "failing", "error": "database or disk is full"}
        assert doc["triggers"]["hook"]["status"] == "degraded"
        assert "database or disk is full" in doc["triggers"]["hook"]["reasons"][0]

        status, _, body = await request(running, "GET", "/healthz")
        assert status == 503 and json.loads(body)["status"] == "state_store_failing"

        # The push source's accept loop reports the failing store in one line per retry, with
        # its reason, not a traceback each time.
        failed = [r for r in caplog.records if r.getMessage() == "source.accept_failed"]
        assert failed, [r.getMessage() for r in caplog.records]
        assert all(r.exc_info is None for r in failed)
        assert "database or disk is full" in str(getattr(failed[0], "error", ""))
    finally:
        running.disk.full = False

    # Writes work again: the retried event is accepted, invoked once, and all is ready.
    path, kw = invoke_event(running, 2)
    status, _, _ = await request(running, "POST", path, **kw)
    assert status == 202
    await wait_until(lambda: recorded_ids(running) == [2], 60, "the event after recovery")
    status, _, body = await request(running, "GET", "/readyz")
    assert status == 200 and json.loads(body)["status"] == "ready"
    status, _, _ = await request(running, "POST", "/hook", data=b'{"n":2}')
    assert status == 202
