"""`triggerd reload|pause|resume` without a daemon: what they say and their exit statuses."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from click.testing import CliRunner

from triggerd.cli.control import running_pid
from triggerd.cli.main import main

CONFIG = """
[daemon]
state = "sqlite:///state/state.db"
listen = ""
control_listen = ""

[functions.f]
handler = "app.handler"
code = "code"

[[triggers]]
name = "inbox"
function = "f"
source = { type = "directory", path = "inbox" }
"""


def setup(tmp_path: Path) -> Path:
    (tmp_path / "code").mkdir()
    (tmp_path / "inbox").mkdir()
    path = tmp_path / "triggerd.toml"
    path.write_text(CONFIG)
    return path


def test_running_pid_is_the_lock_holders_and_none_when_nobody_holds_it(tmp_path: Path) -> None:
    db = str(tmp_path / "state.db")
    assert running_pid(db) is None, "no lock file"
    fd = os.open(db + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.write(fd, b"4242\n")
        assert running_pid(db) is None, "a lock file nobody holds"
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert running_pid(db) == 4242
    finally:
        os.close(fd)


def test_reload_without_a_daemon_says_so_in_one_line(tmp_path: Path) -> None:
    path = setup(tmp_path)
    result = CliRunner().invoke(main, ["reload", "-c", str(path)])
    assert result.exit_code == 9
    assert result.output.strip().startswith("triggerd: no triggerd is running on the state store")
    assert len(result.output.strip().splitlines()) == 1


def test_reload_of_a_broken_file_exits_2_before_signalling(tmp_path: Path) -> None:
    path = setup(tmp_path)
    path.write_text(CONFIG.replace('name = "inbox"', 'name = "inbox"\nbatch = 3'))
    result = CliRunner().invoke(main, ["reload", str(path)])
    assert result.exit_code == 2
    assert "batch" in result.output and "Traceback" not in result.output


def test_pause_of_an_unknown_trigger_exits_2_naming_the_triggers(tmp_path: Path) -> None:
    path = setup(tmp_path)
    result = CliRunner().invoke(main, ["pause", "nope", "-c", str(path)])
    assert result.exit_code == 2
    assert "no enabled trigger 'nope'" in result.output and "inbox" in result.output


def test_pause_before_the_first_run_does_not_create_a_store(tmp_path: Path) -> None:
    path = setup(tmp_path)
    result = CliRunner().invoke(main, ["pause", "inbox", "-c", str(path)])
    assert result.exit_code == 1
    assert "does not exist (triggerd never ran" in result.output
    assert not (tmp_path / "state").exists()


def test_pause_of_a_running_daemon_that_does_not_answer_says_so(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = setup(tmp_path)
    path.write_text(CONFIG.replace('control_listen = ""', f'control_listen = "127.0.0.1:{port}"'))
    (tmp_path / "state").mkdir()
    fd = os.open(tmp_path / "state" / "state.db.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.write(fd, b"4242\n")
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = CliRunner().invoke(main, ["resume", "inbox", "-c", str(path)])
    finally:
        os.close(fd)
    assert result.exit_code == 9
    assert result.output.startswith(
        f"triggerd: triggerd (pid 4242) is running, but cannot be reached at http://127.0.0.1:{port}"
    )
    assert not (tmp_path / "state" / "state.db").exists(), "the store was left alone"


def test_pause_of_an_unnamed_trigger_exits_2_asking_for_a_name(tmp_path: Path) -> None:
    path = setup(tmp_path)
    path.write_text(CONFIG.replace('name = "inbox"\n', ""))
    result = CliRunner().invoke(main, ["pause", "f-0", "-c", str(path)])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "trigger f-0 has no name: give it a `name`" in lines[0]
    assert not (tmp_path / "state").exists(), "nothing recorded"
