"""The daemon imports what its config uses: the bundled example (a directory and a rate
schedule, no event buses, no SNS topics) starts and stops without importing the modules of
the features it does not have, each a measured part of the start-up (#21)."""

from __future__ import annotations

import shutil
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
    imported = {
        line.rpartition("|")[2].strip()
        for line in d.stderr().splitlines()
        if line.startswith("import time:")
    }
    assert "triggerd_schedule.source" in imported  # the lines are there: the source started
    assert sorted(imported & set(NOT_USED)) == []
