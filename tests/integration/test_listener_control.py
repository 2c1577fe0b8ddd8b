"""Refusals on the control listener are its own: with `control_listen` beside `listen`, a
half-sent head and a trickled Invoke API body on the control listener are counted and logged
as `control`, not as the public listener's, and answered in AWS's error shape (the public
listener keeps its plain one). And a fresh daemon's authentication refusals are logged
exactly once for a burst (rate-limited, not silent)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from tests.integration.test_listener_hardening import (
    Running,
    exchange,
    refusal_lines,
    refused_count,
    request,
    status_of,
    trickling,
    until_closed,
)
from triggerd.config.load import validate_data
from triggerd.config.plugins import Registry
from triggerd.daemon.app import Daemon

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

TOKEN = "control-t0ken"


def config(tmp: Path) -> dict[str, Any]:
    return {
        "daemon": {
            "state": f"sqlite:///{tmp / 'state.db'}",
            "listen": "127.0.0.1:0",
            "control_listen": "127.0.0.1:0",
            "http_header_timeout_s": 1,
            "http_body_timeout_s": 1,
            "http_body_min_bytes_per_s": 1_000_000,
            "http_idle_timeout_s": 1,
        },
        # Never invoked: every request in these tests is refused before a function runs.
        "functions": {"remote": {"backend": "http", "url": "http://127.0.0.1:9/"}},
        "triggers": [
            {
                "name": "bearer",
                "function": "remote",
                "source": {
                    "type": "webhook",
                    "path": "/bearer",
                    "method": "POST",
                    "auth": {"type": "bearer", "token": TOKEN},
                },
            }
        ],
    }


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def listeners(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[dict[str, Running]]:
    tmp = tmp_path_factory.mktemp("control")
    registry = Registry.discover()
    cfg = validate_data(config(tmp), registry, base_dir=tmp)
    async with Daemon(cfg, registry).running(stop_timeout_s=60) as daemon:
        out = {}
        for name, address in (
            ("public", daemon.listen_address),
            ("control", daemon.control_address),
        ):
            assert address is not None
            host, port = address.rsplit(":", 1)
            out[name] = Running(daemon, host, int(port), tmp)
        yield out


async def counts(control: Running, reason: str) -> tuple[float, float]:
    """(public, control) counts of `reason`, read from the control listener's /metrics."""
    return (
        await refused_count(control, reason, listener="public"),
        await refused_count(control, reason, listener="control"),
    )


async def test_a_half_sent_head_on_the_control_listener_is_the_control_listeners_refusal(
    listeners: dict[str, Running], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="triggerd.http")
    control = listeners["control"]
    public_before, control_before = await counts(control, "header_timeout")
    response = await exchange(
        control, b"POST /2015-03-31/functions/remote/invocations HTTP/1.1\r\n"
    )
    assert status_of(response) == 408
    assert b"x-amzn-ErrorType: RequestTimeoutException\r\n" in response
    assert response.endswith(b'{"Type":"User","message":"Request Timeout"}')
    assert await counts(control, "header_timeout") == (public_before, control_before + 1)
    [line] = refusal_lines(caplog, "header_timeout")
    assert line.__dict__["listener"] == "control"


async def test_a_trickled_invoke_body_on_the_control_listener_is_the_control_listeners_refusal(
    listeners: dict[str, Running], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="triggerd.http")
    control = listeners["control"]
    public_before, control_before = await counts(control, "body_timeout")
    invoke = (
        b"POST /2015-03-31/functions/remote/invocations HTTP/1.1\r\nHost: x\r\n"
        b"Content-Length: 100\r\n\r\n"
    )
    async with trickling(control, [invoke]) as [reader]:
        response = await until_closed(reader)
    assert status_of(response) == 408
    assert b"x-amzn-ErrorType: RequestTimeoutException\r\n" in response
    assert response.endswith(b'{"Type":"User","message":"Request Timeout"}')
    assert await counts(control, "body_timeout") == (public_before, control_before + 1)
    [line] = refusal_lines(caplog, "body_timeout")
    assert line.__dict__["listener"] == "control"


async def test_the_public_listener_keeps_its_plain_408(listeners: dict[str, Running]) -> None:
    response = await exchange(listeners["public"], b"POST /bearer HTTP/1.1\r\n")
    assert status_of(response) == 408
    assert b"x-amzn-ErrorType" not in response
    assert response.endswith(b'{"message":"Request Timeout"}')


async def test_refused_authentication_is_counted_and_logged_once_for_a_burst(
    listeners: dict[str, Running], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="triggerd.http")
    public, control = listeners["public"], listeners["control"]
    # The daemon's first auth_failed (no other test of this module has one): logged once,
    # the 29 that follow within the interval counted and left out of the log.
    assert await refused_count(control, "auth_failed") == 0
    for _ in range(30):
        status, _ = await request(
            public, "POST", "/bearer", data=b"{}", headers={"Authorization": "Bearer no"}
        )
        assert status == 403
    assert await refused_count(control, "auth_failed") == 30
    [line] = refusal_lines(caplog, "auth_failed")
    assert line.levelno == logging.INFO
    assert line.__dict__["listener"] == "public" and line.__dict__["not_logged"] == 0
