"""What source plugins add to the daemon and the command line: `triggerd <type> <command>
TRIGGER`, a status line per trigger, checks in `triggerd validate`, and lag metrics of
sources that report them."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tests.fakes import FakeSource, FakeSyncConfig, fake_registry
from triggerd.cli.main import main
from triggerd.config.plugins import Registry
from triggerd.state.sqlite import SQLiteStateStore
from triggerd.telemetry.metrics import Metrics
from triggerd.types import (
    ConfigError,
    PartitionStats,
    RetryableError,
    SourceCommand,
    SourcePlugin,
    SourceStats,
)

CONFIG = """
[daemon]
state = "sqlite:///state.db"
listen = ""
control_listen = ""

[functions.f]
backend = "fake"

[[triggers]]
name = "{name}"
function = "f"
source = {{ type = "fake" }}
"""


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    seen: list[Any] = []

    async def run(cfg: Any, trigger: str, state: Any) -> str:
        seen.append(("run", trigger, type(cfg).__name__))
        await state.set_checkpoints(trigger, {"k": "v"})
        return f"did it for {trigger}"

    async def status(cfg: Any, trigger: str) -> str:
        seen.append(("status", trigger))
        if trigger == "down":
            raise RetryableError("connection refused")
        return "slot lag 1 kB"

    async def check(cfg: Any, trigger: str) -> None:
        seen.append(("check", trigger))
        if trigger == "bad":
            raise ConfigError(["trigger 'bad': wal_level is 'replica'"])
        if trigger == "down":
            raise RetryableError("connection refused")
        if trigger == "boom":
            raise RuntimeError("amqp://user:secret@host")

    reg = fake_registry()
    reg.register(
        "source",
        "fake",
        SourcePlugin(
            FakeSyncConfig,
            lambda c, ctx: FakeSource(),
            status=status,
            check=check,
            commands={"do-it": SourceCommand(help="Does it.", run=run)},
        ),
    )
    monkeypatch.setattr(Registry, "discover", classmethod(lambda cls: reg))
    return seen


def write(tmp_path: Path, name: str = "orders") -> str:
    path = tmp_path / "triggerd.toml"
    path.write_text(CONFIG.format(name=name))
    return str(path)


def test_plugin_command_runs_on_the_named_trigger(tmp_path: Path, calls: list[Any]) -> None:
    cfg = write(tmp_path)
    out = CliRunner().invoke(main, ["fake", "do-it", "orders", "-c", cfg])
    assert out.exit_code == 0, out.output
    assert "did it for orders" in out.output
    assert calls == [("run", "orders", "FakeSyncConfig")]


def test_help_lists_the_source_types_with_commands(calls: list[Any]) -> None:
    out = CliRunner().invoke(main, ["--help"])
    assert out.exit_code == 0 and "\n  fake " in out.output
    out = CliRunner().invoke(main, ["fake", "--help"])
    assert "do-it" in out.output and "Does it." in out.output


def test_plugin_command_errors(tmp_path: Path, calls: list[Any]) -> None:
    cfg = write(tmp_path)
    out = CliRunner().invoke(main, ["fake", "do-it", "nope", "-c", cfg])
    assert out.exit_code == 2 and "no trigger 'nope'" in out.output
    assert CliRunner().invoke(main, ["nosuch", "do-it"]).exit_code == 2
    assert calls == []


def test_status_prints_the_plugin_line_or_that_it_is_unreachable(
    tmp_path: Path, calls: list[Any]
) -> None:
    asyncio.run(_create_store(tmp_path / "state.db"))
    out = CliRunner().invoke(main, ["status", "-c", write(tmp_path)])
    assert out.exit_code == 0, out.output
    assert "orders: slot lag 1 kB" in out.output
    out = CliRunner().invoke(main, ["status", "-c", write(tmp_path, "down")])
    assert "down: not reachable: connection refused" in out.output


async def _create_store(path: Path) -> None:
    store = SQLiteStateStore(str(path))
    await store.open()
    await store.close()


def test_validate_connect_reports_live_problems_and_unreachable_servers(
    tmp_path: Path, calls: list[Any]
) -> None:
    ok = CliRunner().invoke(main, ["validate", "--connect", write(tmp_path)])
    assert ok.exit_code == 0 and ("check", "orders") in calls
    assert "trigger 'orders' (fake): connected, ok" in ok.output
    bad = CliRunner().invoke(main, ["validate", "--connect", write(tmp_path, "bad")])
    assert bad.exit_code == 2 and "wal_level is 'replica'" in bad.output
    down = CliRunner().invoke(main, ["validate", "--connect", write(tmp_path, "down")])
    assert down.exit_code == 11
    assert "trigger 'down' (fake): not reachable: connection refused" in down.output


def test_an_unexpected_check_error_is_one_line_without_its_text(
    tmp_path: Path, calls: list[Any]
) -> None:
    out = CliRunner().invoke(main, ["validate", "--connect", write(tmp_path, "boom")])
    assert out.exit_code == 11, out.output
    assert "trigger 'boom' (fake): not reachable: the check failed: RuntimeError" in out.output
    assert "secret" not in out.output


def test_validate_without_connect_contacts_no_server(tmp_path: Path, calls: list[Any]) -> None:
    out = CliRunner().invoke(main, ["validate", write(tmp_path, "down")])
    assert out.exit_code == 0, out.output
    assert calls == []


def test_byte_lag_of_reporting_sources_is_exposed_as_metrics() -> None:
    stats = SourceStats(
        partitions=(
            PartitionStats("slot_a", None, 2.5, 4242, lag_bytes=100, retained_bytes=4096),
            PartitionStats("p1", 3, 0.0, 7),
        )
    )
    metrics = Metrics()
    metrics.sources.register("orders", lambda: stats)
    text = metrics.exposition().decode()
    assert 'triggerd_source_lag_seconds{partition="slot_a",trigger="orders"} 2.5' in text
    assert 'triggerd_source_lag_bytes{partition="slot_a",trigger="orders"} 100.0' in text
    assert 'triggerd_source_retained_bytes{partition="slot_a",trigger="orders"} 4096.0' in text
    assert 'triggerd_source_committed_offset{partition="slot_a",trigger="orders"} 4242.0' in text
    assert 'triggerd_source_lag_records{partition="slot_a"' not in text
    assert 'triggerd_source_lag_records{partition="p1",trigger="orders"} 3.0' in text
    assert 'triggerd_source_lag_bytes{partition="p1"' not in text


def test_validate_connect_gives_a_regional_check_the_daemons_region(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[str, str]] = []

    async def regional(cfg: Any, trigger: str, region: str) -> None:
        seen.append((trigger, region))

    async def unused(cfg: Any, trigger: str) -> None:
        raise AssertionError("check_in_region is preferred")

    reg = fake_registry()
    plugin = SourcePlugin(
        FakeSyncConfig, lambda c, ctx: FakeSource(), check=unused, check_in_region=regional
    )
    reg.register("source", "fake", plugin)
    monkeypatch.setattr(Registry, "discover", classmethod(lambda cls: reg))
    path = tmp_path / "triggerd.toml"
    text = CONFIG.format(name="orders").replace("[daemon]", '[daemon]\nregion = "eu-west-3"')
    path.write_text(text)
    out = CliRunner().invoke(main, ["validate", "--connect", str(path)])
    assert out.exit_code == 0, out.output
    assert "trigger 'orders' (fake): connected, ok" in out.output
    assert seen == [("orders", "eu-west-3")]
