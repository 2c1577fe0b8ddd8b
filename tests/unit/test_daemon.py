"""The daemon in-process with fake plugins: deferred source start, drain on stop."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.fakes import FakeAsyncConfig, FakeBackend, FakeSource, fake_registry, make_record
from triggerd.config.model import validate_data
from triggerd.daemon.app import Daemon
from triggerd.types import RetryableError, SourcePlugin


class LateSource(FakeSource):
    """Unreachable for its first two starts."""

    def __init__(self) -> None:
        super().__init__([make_record("hello")])
        self.starts = 0

    async def start(self) -> None:
        self.starts += 1
        if self.starts <= 2:
            raise RetryableError("broker not reachable yet")


async def test_a_source_that_cannot_start_yet_is_retried_in_the_background(
    tmp_path: Path,
) -> None:
    reg = fake_registry()
    source = LateSource()
    backend = FakeBackend()
    reg.register("source", "fakepush", SourcePlugin(FakeAsyncConfig, lambda c, ctx: source))
    reg.loaded["backend"]["fake"] = type(reg.backend("fake"))(
        reg.backend("fake").config_model, lambda c, ctx: backend
    )
    data = {
        "daemon": {"state": f"sqlite:////{tmp_path}/s.db", "listen": ""},
        "functions": {"f": {"backend": "fake"}},
        "triggers": [{"function": "f", "source": {"type": "fakepush"}}],
    }
    daemon = Daemon(validate_data(data, reg, base_dir=tmp_path), reg)
    # ready although the source is not
    async with daemon.running(start_timeout_s=10, stop_timeout_s=10), asyncio.timeout(20):
        while not backend.calls:
            await asyncio.sleep(0.05)
    assert source.starts == 3
    assert backend.calls[0]["Records"][0]["body"] == "hello"


async def test_readiness_names_a_trigger_whose_source_has_not_started(tmp_path: Path) -> None:
    reg = fake_registry()
    source = LateSource()
    backend = FakeBackend()
    reg.register("source", "fakepush", SourcePlugin(FakeAsyncConfig, lambda c, ctx: source))
    reg.loaded["backend"]["fake"] = type(reg.backend("fake"))(
        reg.backend("fake").config_model, lambda c, ctx: backend
    )
    data = {
        "daemon": {"state": f"sqlite:////{tmp_path}/s.db", "listen": ""},
        "functions": {"f": {"backend": "fake"}},
        "triggers": [{"name": "late", "function": "f", "source": {"type": "fakepush"}}],
    }
    daemon = Daemon(validate_data(data, reg, base_dir=tmp_path), reg)
    async with daemon.running(start_timeout_s=10, stop_timeout_s=10), asyncio.timeout(20):
        doc = daemon.readiness()
        assert doc["status"] == "degraded" and doc["state_store"] == {"status": "ok"}
        assert doc["triggers"]["late"] == {
            "status": "degraded",
            "reasons": ["source not started: broker not reachable yet"],
        }
        while not backend.calls:
            await asyncio.sleep(0.05)
        assert daemon.readiness() == {
            "status": "ready",
            "state_store": {"status": "ok"},
            "triggers": {"late": {"status": "running", "reasons": []}},
        }
