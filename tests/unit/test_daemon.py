"""The daemon in-process with fake plugins: deferred source start, drain on stop."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.fakes import (
    FakeAsyncConfig,
    FakeBackend,
    FakeSource,
    FakeSyncConfig,
    fake_registry,
    make_record,
)
from triggerd.config.load import validate_data
from triggerd.daemon.app import Daemon
from triggerd.types import (
    ConfigError,
    InvokeResult,
    Outcome,
    PermanentError,
    Record,
    RetryableError,
    SourcePlugin,
)


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
        "daemon": {"state": f"sqlite:////{tmp_path}/s.db", "listen": "", "control_listen": ""},
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


def _daemon_with(tmp_path: Path, sources: dict[str, FakeSource]) -> tuple[Daemon, FakeBackend]:
    """A daemon with a sync trigger per source (named as in `sources`) calling one function."""
    reg = fake_registry()
    backend = FakeBackend()
    reg.register(
        "source", "fake", SourcePlugin(FakeSyncConfig, lambda c, ctx: sources[ctx.trigger])
    )
    reg.loaded["backend"]["fake"] = type(reg.backend("fake"))(
        reg.backend("fake").config_model, lambda c, ctx: backend
    )
    data = {
        "daemon": {"state": f"sqlite:////{tmp_path}/s.db", "listen": "", "control_listen": ""},
        "functions": {"f": {"backend": "fake"}},
        "triggers": [
            {"name": name, "function": "f", "source": {"type": "fake"}} for name in sources
        ],
    }
    return Daemon(validate_data(data, reg, base_dir=tmp_path), reg), backend


class RefusedLater(FakeSource):
    """Unreachable at first; once reached, refuses the credentials."""

    def __init__(self) -> None:
        super().__init__()
        self.starts = 0

    async def start(self) -> None:
        self.starts += 1
        if self.starts == 1:
            raise RetryableError("broker not reachable yet")
        raise ConfigError(["triggers.late.source: Kafka at b:1: SaslAuthenticationFailed"])


async def test_a_config_error_from_a_deferred_start_stops_the_daemon_with_that_error(
    tmp_path: Path,
) -> None:
    healthy = FakeSource([make_record("hello")])
    daemon, backend = _daemon_with(tmp_path, {"late": RefusedLater(), "ok": healthy})
    with pytest.raises(ConfigError) as info:  # not an ExceptionGroup with a traceback
        await asyncio.wait_for(daemon.run(asyncio.Event()), 20)
    assert str(info.value) == "triggers.late.source: Kafka at b:1: SaslAuthenticationFailed"
    assert healthy.acked and backend.calls, "the other trigger ran and was drained"


class Refused(FakeSource):
    """Hands out nothing: its group's authorisation was withdrawn."""

    def __init__(self) -> None:
        super().__init__()
        self.receives = 0

    async def receive(self, max_records: int, timeout_s: float) -> list[Record]:
        self.receives += 1
        raise PermanentError("Kafka at b:1, group 'g': GroupAuthorizationFailedError")


async def test_a_source_error_restarting_cannot_fix_ends_only_its_trigger(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    refused, healthy = Refused(), FakeSource()
    daemon, backend = _daemon_with(tmp_path, {"refused": refused, "ok": healthy})
    async with daemon.running(start_timeout_s=10, stop_timeout_s=10), asyncio.timeout(10):
        while "trigger.failed" not in caplog.text:
            await asyncio.sleep(0.02)
        healthy.push(make_record("after"))
        while not backend.calls:
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.3)
    assert refused.receives == 1, "not received (and logged) again in a loop"
    failed = [r for r in caplog.records if r.getMessage() == "trigger.failed"]
    assert len(failed) == 1 and failed[0].exc_info is None, "one line, no traceback"
    assert failed[0].__dict__["error"] == "Kafka at b:1, group 'g': GroupAuthorizationFailedError"
    assert "trigger.crashed" not in caplog.text and "source.receive_failed" not in caplog.text


async def test_readiness_names_a_trigger_whose_source_has_not_started(tmp_path: Path) -> None:
    reg = fake_registry()
    source = LateSource()
    backend = FakeBackend()
    reg.register("source", "fakepush", SourcePlugin(FakeAsyncConfig, lambda c, ctx: source))
    reg.loaded["backend"]["fake"] = type(reg.backend("fake"))(
        reg.backend("fake").config_model, lambda c, ctx: backend
    )
    data = {
        "daemon": {"state": f"sqlite:////{tmp_path}/s.db", "listen": "", "control_listen": ""},
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


# ---- a backend's invocations in flight, counted for a reload ----


class _SlowBackend:
    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.workers = ["w1"]

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def invoke(self, payload: bytes, **kwargs: object) -> InvokeResult:
        await self.release.wait()
        return InvokeResult(Outcome.OK, payload, "r1")


async def test_a_counted_backend_is_idle_only_when_no_invocation_is_in_flight() -> None:
    from triggerd.daemon.inflight import CountedBackend

    inner = _SlowBackend()
    backend = CountedBackend(inner)  # type: ignore[arg-type]
    assert await backend.wait_idle(0)
    call = asyncio.create_task(backend.invoke(b"{}", request_id="r1"))
    await asyncio.sleep(0)
    assert backend.in_flight == 1
    assert not await backend.wait_idle(0)
    inner.release.set()
    result = await call
    assert result.payload == b"{}"
    assert await backend.wait_idle(0)
    assert backend.workers == ["w1"], "other attributes are the inner backend's"
