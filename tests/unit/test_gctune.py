"""The daemon's garbage collector settings."""

from __future__ import annotations

import gc
from pathlib import Path

from click.testing import CliRunner

from triggerd.cli.main import main
from triggerd.daemon.gctune import YOUNG_THRESHOLD, defer_gc, tune_gc


def test_tune_gc_collects_young_objects_less_often_and_freezes_start_up_objects() -> None:
    before = gc.get_threshold()
    try:
        tune_gc()
        young, middle, old = gc.get_threshold()
        assert young >= YOUNG_THRESHOLD
        assert (middle, old) == before[1:]
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_defer_gc_freezes_what_exists_and_collects_young_objects_less_often() -> None:
    before = gc.get_threshold()
    gc.unfreeze()
    try:
        defer_gc()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (max(YOUNG_THRESHOLD, before[0]), *before[1:])
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_run_defers_collections_before_it_loads_the_config(tmp_path: Path) -> None:
    """`run` on a config that does not validate stops after loading it: by then the
    imports are frozen."""
    config = tmp_path / "t.toml"
    config.write_text("[daemon]\nno_such_key = 1\n")
    before = gc.get_threshold()
    gc.unfreeze()
    try:
        result = CliRunner().invoke(main, ["run", str(config)])
        frozen, threshold = gc.get_freeze_count(), gc.get_threshold()
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
    assert result.exit_code == 2, result.output
    assert "daemon.no_such_key: unknown key" in result.output
    assert frozen > 0 and threshold[0] >= YOUNG_THRESHOLD


def test_the_command_defers_collections_before_its_first_import() -> None:
    """`python -m triggerd` (and the console script, the same function) sets the collector
    before the command line's modules are imported: their long-lived objects are not walked
    every 700 allocations (23 collections while `generate-event` starts with the default)."""
    import subprocess
    import sys
    import tomllib

    root = Path(__file__).resolve().parents[2]
    scripts = tomllib.loads((root / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["triggerd"] == "triggerd.cli.entry:main"
    code = """
import gc, runpy, sys
starts = []
gc.callbacks.append(lambda phase, info: starts.append(phase) if phase == "start" else None)
sys.argv = ["triggerd", "generate-event", "directory"]
try:
    runpy.run_module("triggerd", run_name="__main__")
except SystemExit:
    pass
print(len(starts), gc.get_threshold()[0], file=sys.stderr)
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=60
    )
    assert done.returncode == 0, done.stderr
    collections, threshold = (int(x) for x in done.stderr.split())
    assert threshold >= YOUNG_THRESHOLD and collections < 3, done.stderr
