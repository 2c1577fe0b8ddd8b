"""`triggerd run` under systemd with its stderr on the journal (`JOURNAL_STREAM` names the
stderr file's device and inode, as systemd sets it): every line starts with its syslog
priority, so `journalctl -p` can select them."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.system.conftest import FUNCTIONS, free_port, wait_for

pytestmark = pytest.mark.system


def test_every_line_carries_its_priority_when_stderr_is_the_journal(tmp_path: Path) -> None:
    config = tmp_path / "triggerd.toml"
    config.write_text(
        f"""
[daemon]
state = "sqlite:///state/state.db"
listen = "127.0.0.1:{free_port()}"
control_listen = ""

[functions.recorder]
handler = "app.handler"
code = "{FUNCTIONS / "recorder"}"
"""
    )
    err = tmp_path / "stderr.log"
    with err.open("wb") as stream:
        st = os.fstat(stream.fileno())
        env = dict(os.environ, JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}", PYTHONUNBUFFERED="1")
        proc = subprocess.Popen(
            [sys.executable, "-m", "triggerd", "run", str(config)],
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=stream,
            env=env,
        )
        try:
            wait_for(lambda: "daemon.ready" in err.read_text(), 90, "the daemon to start")
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    lines = err.read_text().splitlines()
    assert len(lines) >= 3
    events = {}
    for line in lines:
        match = re.fullmatch(r"<([0-7])>(\{.*\})", line)
        assert match, line
        events[json.loads(match.group(2))["event"]] = int(match.group(1))
    assert events["daemon.ready"] == 6 and events["daemon.stopped"] == 6
