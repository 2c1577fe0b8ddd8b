"""`triggerd status` on a config with a SQLite store and no source that reports a status
line is shown without an event loop, and shows what the loop's version shows."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from triggerd.cli.status import needs_loop, run_status, run_status_now
from triggerd.config.load import load_config
from triggerd.config.plugins import Registry

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "triggerd.toml"


def example(tmp_path: Path, state: str) -> Path:
    shutil.copytree(EXAMPLE.parent / "functions", tmp_path / "functions")
    config = tmp_path / "triggerd.toml"
    config.write_text(
        EXAMPLE.read_text()
        .replace("127.0.0.1:9070", "127.0.0.1:7")
        .replace("127.0.0.1:9071", "127.0.0.1:9")
        .replace('"sqlite:///state/triggerd.db"', f'"{state}"')
    )
    return config


@pytest.mark.parametrize("output", ["table", "json"])
def test_status_without_a_loop_shows_what_the_loop_shows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], output: str
) -> None:
    registry = Registry.discover()
    cfg = load_config(example(tmp_path, "sqlite:///state/none.db"), registry)
    assert not needs_loop(cfg, registry)
    code = run_status_now(cfg, output)
    now = capsys.readouterr()
    assert (code, now) == (asyncio.run(run_status(cfg, registry, output)), capsys.readouterr())
    assert code == 9 and "not reachable" in now.out and "does not exist" in now.err


def test_a_postgresql_store_needs_the_loop(tmp_path: Path) -> None:
    registry = Registry.discover()
    url = "postgresql://triggerd@127.0.0.1:9/triggerd"
    cfg = load_config(example(tmp_path, url), registry)
    assert needs_loop(cfg, registry)
