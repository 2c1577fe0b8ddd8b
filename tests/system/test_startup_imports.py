"""The daemon imports what its config uses: the bundled example (a directory, a rate
schedule and a webhook; no event buses, no SNS topics) starts and stops without importing the
modules of the features it does not have, each a measured part of the start-up (#21).
`validate` and `status` on it (its state store made by that start) need no event loop: neither
imports asyncio nor aiohttp (a webhook's route is checked without the HTTP server), and
validate no email parser (triggerd's requirement lines are picked from its METADATA)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.system.conftest import Daemon, free_port

pytestmark = pytest.mark.system

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

#: Modules of features the example does not use.
NOT_USED = (
    "triggerd.http.events_api",  # EventBridge's API: no [[event_buses]]
    "triggerd.fanout.events.buses",
    "triggerd.config.buses",
    "triggerd.config.sns",  # no [sns]
    "triggerd.daemon.sns",
    "apscheduler.triggers.cron",  # rate schedules only: cron ones evaluate with APScheduler
)


#: What each command on the example does not import beyond NOT_USED.
NOT_USED_BY: dict[str, tuple[str, ...]] = {
    "validate": (
        "asyncio",
        "ssl",
        "uvloop",
        "email.parser",
        "packaging",
        "aiohttp",
        "logging",
        "triggerd.state.pgschema",
    ),
    "status": ("asyncio", "uvloop", "aiohttp", "logging", "triggerd.state.pgschema"),
}


def imported(stderr: str) -> set[str]:
    """The modules Python reported importing (-X importtime writes a line for each)."""
    return {
        line.rpartition("|")[2].strip()
        for line in stderr.splitlines()
        if line.startswith("import time:")
    }


def command_imports(workdir: Path, *args: str) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-m", "triggerd", *args],
        cwd=workdir,
        env=dict(os.environ, PYTHONPROFILEIMPORTTIME="1"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode in (0, 9), done.stderr  # status: 9, no daemon answers
    return imported(done.stderr)


def test_the_bundled_example_runs_without_the_modules_of_features_it_does_not_use(
    tmp_path: Path, daemon_factory: Any
) -> None:
    shutil.copytree(EXAMPLES / "functions", tmp_path / "functions")
    (tmp_path / "inbox").mkdir()
    text = (EXAMPLES / "triggerd.toml").read_text()
    text = text.replace("127.0.0.1:9070", f"127.0.0.1:{free_port()}")
    d: Daemon = daemon_factory(text.replace("127.0.0.1:9071", f"127.0.0.1:{free_port()}"))
    # Python writes a line to stderr for every module imported (-X importtime).
    d.start(env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert d.terminate() == 0, d.stderr()
    ran = imported(d.stderr())
    assert "triggerd_schedule.source" in ran  # the lines are there: the source started
    assert sorted(ran & set(NOT_USED)) == []
    for command, args in (("validate", [str(d.config)]), ("status", ["-c", str(d.config)])):
        got = command_imports(tmp_path, command, *args)
        assert "triggerd.config.model" in got  # the lines are there: the config was read
        assert sorted(got & {*NOT_USED, *NOT_USED_BY[command]}) == [], command
