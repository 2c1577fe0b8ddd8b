"""Reload and pause/resume inside one event loop, with fake sources and backends: which
triggers and backends are rebuilt, stopped or left alone."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from pathlib import Path

import pytest

from tests.fakes import FakeBackend, FakeSource, FakeSyncConfig, fake_registry, make_record
from triggerd.config.load import load_config
from triggerd.config.model import ConfigBase
from triggerd.config.plugins import Registry
from triggerd.daemon.app import Daemon, DaemonStoppingError
from triggerd.http.pausing import ConfigMismatchError, TriggerNotFoundError, TriggerUnnamedError
from triggerd.types import ConfigError, SourcePlugin


class TrackedSource(FakeSource):
    def __init__(self) -> None:
        super().__init__()
        self.started = False
        self.stopped = False

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True


class TrackedBackend(FakeBackend):
    def __init__(self) -> None:
        super().__init__()
        self.stopped = False

    async def stop(self) -> None:
        self.stopped = True


class World:
    """Every source and backend the daemon built, per trigger / function, in build order."""

    def __init__(self) -> None:
        self.sources: dict[str, list[TrackedSource]] = defaultdict(list)
        self.backends: dict[str, list[TrackedBackend]] = defaultdict(list)
        self.registry: Registry = fake_registry()

        def source(config: object, ctx: object) -> TrackedSource:
            made = TrackedSource()
            self.sources[ctx.trigger].append(made)  # type: ignore[attr-defined]
            return made

        def backend(config: object, ctx: object) -> TrackedBackend:
            made = TrackedBackend()
            self.backends[ctx.function].append(made)  # type: ignore[attr-defined]
            return made

        self.registry.register("source", "fake", SourcePlugin(FakeSyncConfig, source))
        plugin = self.registry.backend("fake")
        self.registry.loaded["backend"]["fake"] = type(plugin)(plugin.config_model, backend)


def config_text(tmp_path: Path, triggers: dict[str, str], *, timeout_s: int = 3) -> str:
    text = f"""
[daemon]
state = "sqlite:///{tmp_path}/s.db"
listen = ""
control_listen = ""
shutdown_timeout_s = 5

[functions.f]
backend = "fake"
timeout_s = {timeout_s}

[functions.g]
backend = "fake"
"""
    for name, extra in triggers.items():
        fn = "g" if name.startswith("g") else "f"
        text += f'\n[[triggers]]\nname = "{name}"\nfunction = "{fn}"\n'
        text += f'source = {{ type = "fake" }}\n{extra}\n'
    return text


def make(tmp_path: Path, world: World, text: str) -> Daemon:
    path = tmp_path / "triggerd.toml"
    path.write_text(text)
    cfg = load_config(path, world.registry, {})
    return Daemon(cfg, world.registry, config_path=str(path))


async def test_reload_rebuilds_only_changed_triggers_and_keeps_the_others_running(
    tmp_path: Path,
) -> None:
    world = World()
    before = {"keep": "", "tune": "batch_size = 5", "drop": ""}
    daemon = make(tmp_path, world, config_text(tmp_path, before))
    async with daemon.running(start_timeout_s=10, stop_timeout_s=10):
        keep = daemon.triggers["keep"]
        after = {"keep": "", "tune": "batch_size = 7", "add": ""}
        (tmp_path / "triggerd.toml").write_text(config_text(tmp_path, after))
        assert await daemon.reload()
        assert daemon.triggers["keep"] is keep, "untouched"
        assert set(daemon.triggers) == {"keep", "tune", "add"}
        assert [s.stopped for s in world.sources["tune"]] == [True, False]
        assert world.sources["drop"][0].stopped
        assert world.sources["add"][0].started
        assert not world.sources["keep"][0].stopped
        assert len(world.sources["keep"]) == 1
        # The rebuilt trigger delivers with its new settings.
        world.sources["tune"][1].push(make_record("after"))
        async with asyncio.timeout(10):
            while not world.backends["f"][0].calls:
                await asyncio.sleep(0.01)
        assert daemon.readiness()["status"] == "ready"
    assert all(s.stopped for s in (world.sources["keep"][0], world.sources["tune"][1]))


async def test_a_changed_function_gets_a_new_backend_and_its_triggers_restart(
    tmp_path: Path,
) -> None:
    world = World()
    triggers = {"on-f": "", "g-side": ""}
    daemon = make(tmp_path, world, config_text(tmp_path, triggers))
    async with daemon.running(start_timeout_s=10, stop_timeout_s=10):
        g_side = daemon.triggers["g-side"]
        (tmp_path / "triggerd.toml").write_text(config_text(tmp_path, triggers, timeout_s=4))
        assert await daemon.reload()
        assert [b.stopped for b in world.backends["f"]] == [True, False]
        assert len(world.sources["on-f"]) == 2, "its trigger was rebuilt on the new backend"
        assert daemon.triggers["g-side"] is g_side
        assert len(world.backends["g"]) == 1 and not world.backends["g"][0].stopped


async def test_a_reload_looks_for_the_daemon_s_credentials_again_before_new_backends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The credentials chain is shared by the functions (one lookup for the daemon): a reload
    # forgets it first, so the new and changed functions find credentials written since.
    from triggerd.daemon import reload as reload_module

    world = World()
    backends_when_forgotten: list[int] = []
    monkeypatch.setattr(
        reload_module,
        "forget_daemon_chain",
        lambda: backends_when_forgotten.append(len(world.backends["f"])),
    )
    triggers = {"on-f": ""}
    daemon = make(tmp_path, world, config_text(tmp_path, triggers))
    async with daemon.running(start_timeout_s=10, stop_timeout_s=10):
        assert backends_when_forgotten == []  # not at start
        (tmp_path / "triggerd.toml").write_text(config_text(tmp_path, triggers, timeout_s=4))
        assert await daemon.reload()
        assert backends_when_forgotten == [1]  # before f's new backend was built
        assert len(world.backends["f"]) == 2


async def test_a_broken_file_keeps_the_running_config(tmp_path: Path) -> None:
    world = World()
    daemon = make(tmp_path, world, config_text(tmp_path, {"keep": ""}))
    async with daemon.running(start_timeout_s=10, stop_timeout_s=10):
        running = daemon.config
        (tmp_path / "triggerd.toml").write_text("[[triggers]]\nfunction = 'nope'\n")
        assert not await daemon.reload()
        assert daemon.config is running
        assert set(daemon.triggers) == {"keep"}
        assert not world.sources["keep"][0].stopped


async def test_pause_and_resume_rebuild_the_trigger_and_persist_across_a_restart(
    tmp_path: Path,
) -> None:
    world = World()
    text = config_text(tmp_path, {"keep": "", "hold": ""})
    daemon = make(tmp_path, world, text)
    async with daemon.running(start_timeout_s=10, stop_timeout_s=10):
        assert await daemon.pause_trigger("hold")
        assert not await daemon.pause_trigger("hold"), "already paused"
        assert world.sources["hold"][0].stopped
        assert "hold" not in daemon.triggers
        ready = daemon.readiness()
        assert ready["triggers"]["hold"] == {"status": "paused", "reasons": []}
        assert ready["status"] == "ready"
        assert daemon.status_line() == "1 trigger running, 1 paused, 0 failing"
        with pytest.raises(TriggerNotFoundError):
            await daemon.pause_trigger("nope")

    again = make(tmp_path, world, text)
    async with again.running(start_timeout_s=10, stop_timeout_s=10):
        assert len(world.sources["hold"]) == 1, "not built while paused"
        assert again.readiness()["triggers"]["hold"]["status"] == "paused"
        assert await again.resume_trigger("hold")
        assert not await again.resume_trigger("hold"), "not paused"
        assert world.sources["hold"][1].started
        assert again.status_line() == "2 triggers running, 0 paused, 0 failing"


async def test_a_file_that_is_not_text_is_rejected_in_one_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    world = World()
    daemon = make(tmp_path, world, config_text(tmp_path, {"keep": ""}))
    async with daemon.running(start_timeout_s=10, stop_timeout_s=10):
        (tmp_path / "triggerd.toml").write_bytes(b"\xff\xfe\x00garbage")
        assert not await daemon.reload()
        [record] = [r for r in caplog.records if r.getMessage() == "daemon.reload_rejected"]
        assert "keeping the running config" in record.error  # type: ignore[attr-defined]
        assert record.exc_info is None
        assert set(daemon.triggers) == {"keep"}


async def test_a_trigger_that_failed_to_start_is_tried_again_at_the_next_reload(
    tmp_path: Path,
) -> None:
    world = World()
    failures = {"flaky": 1}

    class FailOnce(TrackedSource):
        async def start(self) -> None:
            if failures["flaky"]:
                failures["flaky"] -= 1
                raise ConfigError(["trigger flaky: /missing is not a directory"])
            await super().start()

    def source(config: object, ctx: object) -> TrackedSource:
        made = FailOnce() if ctx.trigger == "flaky" else TrackedSource()  # type: ignore[attr-defined]
        world.sources[ctx.trigger].append(made)  # type: ignore[attr-defined]
        return made

    world.registry.register("source", "fake", SourcePlugin(FakeSyncConfig, source))
    daemon = make(tmp_path, world, config_text(tmp_path, {"keep": ""}))
    async with daemon.running(start_timeout_s=10, stop_timeout_s=10):
        (tmp_path / "triggerd.toml").write_text(config_text(tmp_path, {"keep": "", "flaky": ""}))
        assert not await daemon.reload(), "the added trigger could not start"
        ready = daemon.readiness()
        assert ready["status"] == "degraded"
        assert ready["triggers"]["flaky"]["reasons"] == [
            "failed to start: trigger flaky: /missing is not a directory"
        ]
        assert daemon.status_line() == "1 trigger running, 0 paused, 1 failing"
        assert await daemon.reload(), "the same file again: the failed trigger is retried"
        assert "flaky" in daemon.triggers
        assert daemon.readiness()["status"] == "ready"


async def test_a_trigger_being_restarted_is_restarting_not_degraded(tmp_path: Path) -> None:
    world = World()
    release = asyncio.Event()
    closing = asyncio.Event()

    class SlowStop(TrackedSource):
        async def stop(self) -> None:
            closing.set()
            await release.wait()
            await super().stop()

    def source(config: object, ctx: object) -> TrackedSource:
        made = SlowStop() if ctx.trigger == "tune" else TrackedSource()  # type: ignore[attr-defined]
        world.sources[ctx.trigger].append(made)  # type: ignore[attr-defined]
        return made

    world.registry.register("source", "fake", SourcePlugin(FakeSyncConfig, source))
    daemon = make(tmp_path, world, config_text(tmp_path, {"keep": "", "tune": "batch_size = 5"}))
    async with daemon.running(start_timeout_s=10, stop_timeout_s=10):
        after = config_text(tmp_path, {"keep": "", "tune": "batch_size = 6"})
        (tmp_path / "triggerd.toml").write_text(after)
        reload = asyncio.create_task(daemon.reload())
        await asyncio.wait_for(closing.wait(), 10)
        ready = daemon.readiness()
        assert ready["triggers"]["tune"] == {"status": "restarting", "reasons": []}
        assert ready["status"] == "ready"
        assert daemon.status_line() == "1 trigger running, 0 paused, 0 failing"
        release.set()
        assert await reload
        assert daemon.status_line() == "2 triggers running, 0 paused, 0 failing"


async def test_an_unnamed_trigger_cannot_be_paused(tmp_path: Path) -> None:
    world = World()
    text = config_text(tmp_path, {"keep": ""}) + '\n[[triggers]]\nfunction = "f"\n'
    text += 'source = { type = "fake" }\n'
    daemon = make(tmp_path, world, text)
    async with daemon.running(start_timeout_s=10, stop_timeout_s=10):
        with pytest.raises(TriggerUnnamedError, match="give it a `name`"):
            await daemon.pause_trigger("f-1")
        assert "f-1" in daemon.triggers and not daemon.paused


async def test_nothing_starts_once_the_daemon_is_stopping(tmp_path: Path) -> None:
    world = World()
    daemon = make(tmp_path, world, config_text(tmp_path, {"keep": "", "hold": ""}))
    async with daemon.running(start_timeout_s=10, stop_timeout_s=10):
        assert await daemon.pause_trigger("hold")
        assert daemon._stop is not None
        daemon._stop.set()
        with pytest.raises(DaemonStoppingError):
            await daemon.resume_trigger("hold")
        with pytest.raises(DaemonStoppingError):
            await daemon.pause_trigger("keep")
        assert not await daemon.reload()
    assert len(world.sources["hold"]) == 1, "not built again"


async def test_reload_config_refuses_another_file_and_answers_the_summary(
    tmp_path: Path,
) -> None:
    world = World()
    daemon = make(tmp_path, world, config_text(tmp_path, {"keep": "", "drop": ""}))
    async with daemon.running(start_timeout_s=10, stop_timeout_s=10):
        for other in (str(tmp_path / "other.toml"), "bad\0path"):
            with pytest.raises(ConfigMismatchError):
                await daemon.reload_config(other)
        assert set(daemon.triggers) == {"keep", "drop"}, "nothing reloaded"
        (tmp_path / "triggerd.toml").write_text(config_text(tmp_path, {"keep": ""}))
        summary = await daemon.reload_config(str(tmp_path / "." / "triggerd.toml"))
        assert summary["status"] == "reloaded"
        assert summary["triggers_removed"] == ["drop"]
        assert summary["config"] == str(tmp_path / "triggerd.toml")
        (tmp_path / "triggerd.toml").write_text("[[triggers]]\nfunction = 'nope'\n")
        rejected = await daemon.reload_config(None)
        assert rejected["status"] == "rejected" and "source: Field required" in rejected["error"]


async def test_a_loader_replaces_the_file_for_translated_definitions(tmp_path: Path) -> None:
    """`run --sam/--serverless`: a reload calls the loader (the translation made again);
    a translation the loader refuses keeps the running config, naming the definition."""
    world = World()
    daemon = make(tmp_path, world, config_text(tmp_path, {"keep": ""}))
    daemon.config_path = None
    answers: list[str] = [config_text(tmp_path, {"keep": "", "added": ""})]

    def loader() -> ConfigBase:
        if not answers:
            raise ConfigError(["functions.f.memory_mb: too small"])
        path = tmp_path / "translated.toml"
        path.write_text(answers.pop())
        return load_config(path, world.registry, {})

    daemon.config_loader, daemon.config_source = loader, "template.yaml"
    async with daemon.running(start_timeout_s=10, stop_timeout_s=10):
        assert await daemon.reload()
        assert set(daemon.triggers) == {"keep", "added"}
        running = daemon.config
        assert not await daemon.reload()
        assert daemon.config is running
        assert daemon.last_reload["error"] == "template.yaml: functions.f.memory_mb: too small"
