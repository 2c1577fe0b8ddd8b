"""The daemon in-process with fake plugins, seen from its control surface: /readyz names a
trigger whose on-failure destination keeps failing until a delivery succeeds, and the async
queue depth is published only for triggers that have an async queue."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.fakes import FakeBackend, FakeSource, MemDestination, fake_registry, make_record
from triggerd.config.load import validate_data
from triggerd.config.plugins import Registry
from triggerd.daemon.app import Daemon
from triggerd.types import BackendPlugin, DestinationPlugin, SourcePlugin


def _registry(backend: FakeBackend, source: FakeSource, destination: MemDestination) -> Registry:
    reg = fake_registry()
    push = reg.source("fakepush")
    reg.loaded["source"]["fakepush"] = SourcePlugin(push.config_model, lambda c, ctx: source)
    fake = reg.backend("fake")
    reg.loaded["backend"]["fake"] = BackendPlugin(fake.config_model, lambda c, ctx: backend)
    mem = reg.destination("mem")
    reg.loaded["destination"]["mem"] = DestinationPlugin(
        mem.config_model, lambda c, ctx: destination
    )
    return reg


def _fail(event: Any) -> Any:
    raise RuntimeError("function fails")


async def test_readiness_names_a_failing_on_failure_destination_until_it_recovers(
    tmp_path: Path,
) -> None:
    destination = MemDestination(fail_times=1_000_000)  # failing until the test lets it work
    source = FakeSource([make_record("event")])
    reg = _registry(FakeBackend(_fail), source, destination)
    data = {
        "daemon": {"state": f"sqlite:///{tmp_path}/s.db", "listen": "", "control_listen": ""},
        "functions": {"f": {"backend": "fake"}},
        "triggers": [
            {
                "name": "inbox",
                "function": "f",
                "source": {"type": "fakepush"},
                "maximum_retry_attempts": 0,
                "on_failure": {"type": "mem"},
            }
        ],
    }
    daemon = Daemon(validate_data(data, reg, base_dir=tmp_path), reg)
    async with daemon.running(start_timeout_s=10, stop_timeout_s=10), asyncio.timeout(30):
        while daemon.readiness()["status"] != "degraded":
            await asyncio.sleep(0.02)
        [reason] = daemon.readiness()["triggers"]["inbox"]["reasons"]
        assert reason.startswith("on-failure destination failing since 20")
        assert reason.endswith(": OSError: destination down")
        assert not destination.records  # the event is still waiting for its destination
        destination.fail_times = 0
        while not destination.records:
            await asyncio.sleep(0.02)
        assert daemon.readiness()["triggers"]["inbox"] == {"status": "running", "reasons": []}
        assert daemon.readiness()["status"] == "ready"


async def test_async_queue_depth_is_published_only_for_triggers_with_an_async_queue(
    tmp_path: Path,
) -> None:
    reg = _registry(FakeBackend(), FakeSource(), MemDestination())
    data = {
        "daemon": {
            "state": f"sqlite:///{tmp_path}/s.db",
            "listen": "",
            "control_listen": "127.0.0.1:0",
        },
        "functions": {"f": {"backend": "fake"}},
        "triggers": [
            {"name": "inbox", "function": "f", "source": {"type": "fakepush"}},
            {"name": "polled", "function": "f", "source": {"type": "fake"}},
        ],
    }
    daemon = Daemon(validate_data(data, reg, base_dir=tmp_path), reg)
    async with (
        daemon.running(start_timeout_s=10, stop_timeout_s=10),
        aiohttp.ClientSession() as http,
        http.get(f"http://{daemon.control_address}/metrics") as resp,
    ):
        text = await resp.text()
    [family] = [f for f in text_string_to_metric_families(text) if f.name.endswith("queue_depth")]
    assert family.name == "triggerd_async_queue_depth"
    # The push trigger's queue and the function's Invoke API event queue; "polled" has none.
    assert sorted(s.labels["trigger"] for s in family.samples) == ["inbox", "invoke-api:f"]
