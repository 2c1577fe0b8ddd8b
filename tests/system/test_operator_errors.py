"""`triggerd run` as a subprocess facing an operator's mistakes and a damaged state store:
each gives one line on stderr naming the problem, no traceback, and its own exit status
(README, "Exit codes"; the unit's RestartPreventExitStatus)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tests.system.conftest import FUNCTIONS, free_port, public_daemon_table, wait_for
from triggerd.types import ExitCode

pytestmark = pytest.mark.system


def config_text(port: int) -> str:
    return (
        public_daemon_table(port)
        + f"""
[functions.recorder]
handler = "app.handler"
code = "{FUNCTIONS / "recorder"}"
"""
    )


@pytest.fixture
def workdir() -> Iterator[Path]:
    """World-readable (not pytest's 0700 tmp dir): one test runs the daemon as nobody."""
    path = Path(tempfile.mkdtemp(prefix="triggerd-operr-"))
    path.chmod(0o755)
    (path / "triggerd.toml").write_text(config_text(free_port()))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def command(workdir: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "triggerd", "run", str(workdir / "triggerd.toml"), *args]


def run_to_exit(
    workdir: Path, *args: str, config: Path | None = None, wrapper: Sequence[str] = ()
) -> tuple[int, str]:
    cmd = command(workdir, *args)
    if config is not None:
        cmd[4] = str(config)
    proc = subprocess.run(
        [*wrapper, *cmd], cwd=workdir, capture_output=True, timeout=60, check=False
    )
    return proc.returncode, proc.stderr.decode(errors="replace")


def read_only_mount(directory: Path) -> list[str]:
    """A command prefix running the rest with `directory` bind-mounted read-only in a private
    mount namespace (root writes through file modes; this is what ProtectSystem= does)."""
    script = 'mount --bind -o ro "$0" "$0" && exec "$@"'
    prefix = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, str(directory)]
    probe = subprocess.run([*prefix, "true"], capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip(f"root, and a read-only bind mount is not possible: {probe.stderr!r}")
    return prefix


class Running:
    def __init__(
        self, workdir: Path, args: Sequence[str] = (), env: dict[str, str] | None = None
    ) -> None:
        self.out = workdir / "stdout.log"
        self.proc = subprocess.Popen(
            command(workdir, *args),
            cwd=workdir,
            env={**os.environ, **(env or {})},
            stdout=self.out.open("wb"),
            stderr=subprocess.DEVNULL,
        )
        wait_for(
            lambda: "trigger(s)" in self.out.read_text() or self.proc.poll() is not None,
            90,
            "the daemon to start",
        )
        assert self.proc.poll() is None, "the daemon exited"

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def one_line(stderr: str, *expected: str) -> str:
    """The single `triggerd:` line (log lines are JSON objects), with no traceback."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if not line.startswith("{")]
    assert len(lines) == 1, stderr
    line = lines[0]
    assert line.startswith("triggerd: "), line
    for text in expected:
        assert text in line, line
    return line


def start_and_stop(workdir: Path) -> None:
    running = Running(workdir)
    assert running.stop() == 0


def store(workdir: Path) -> Path:
    return workdir / "state" / "state.db"


def test_a_corrupt_store(workdir: Path) -> None:
    start_and_stop(workdir)
    store(workdir).write_bytes(b"garbage, not a database\n" * 500)
    code, err = run_to_exit(workdir)
    assert code == ExitCode.STATE_CORRUPT
    one_line(err, str(store(workdir)), "corrupt")


def test_a_truncated_store(workdir: Path) -> None:
    start_and_stop(workdir)
    data = store(workdir).read_bytes()
    store(workdir).write_bytes(data[: len(data) // 2])
    code, err = run_to_exit(workdir)
    assert code == ExitCode.STATE_CORRUPT
    one_line(err, "truncated")


def test_a_deleted_store_needs_a_fresh_start_to_be_accepted(workdir: Path) -> None:
    start_and_stop(workdir)
    for path in store(workdir).parent.glob("state.db*"):
        if not path.name.endswith(".lock"):
            path.unlink()
    code, err = run_to_exit(workdir)
    assert code == ExitCode.STATE_MISSING
    one_line(err, "does not exist", "--accept-fresh-state")
    running = Running(workdir, ["--accept-fresh-state"])
    assert running.stop() == 0
    start_and_stop(workdir)  # the new store is the one remembered


def test_a_fresh_start_is_accepted_from_the_environment_too(workdir: Path) -> None:
    # The shipped unit's ExecStart is fixed: the operator sets the variable in the unit's
    # EnvironmentFile for one start instead of adding the flag.
    start_and_stop(workdir)
    store(workdir).write_bytes(b"")
    assert run_to_exit(workdir)[0] == ExitCode.STATE_MISSING
    running = Running(workdir, env={"TRIGGERD_ACCEPT_FRESH_STATE": "1"})
    assert running.stop() == 0
    start_and_stop(workdir)  # the new store is the one remembered


def test_a_zero_byte_store(workdir: Path) -> None:
    start_and_stop(workdir)
    store(workdir).write_bytes(b"")
    code, err = run_to_exit(workdir)
    assert code == ExitCode.STATE_MISSING
    one_line(err, "is empty")


def test_a_read_only_store(workdir: Path) -> None:
    start_and_stop(workdir)
    state_dir = store(workdir).parent
    if os.geteuid() == 0:
        code, err = run_to_exit(workdir, wrapper=read_only_mount(state_dir))
    else:
        modes = {path: path.stat().st_mode for path in [*state_dir.rglob("*"), state_dir]}
        for path in modes:
            path.chmod(0o555 if path.is_dir() else 0o444)
        try:
            code, err = run_to_exit(workdir)
        finally:
            for path, mode in modes.items():
                path.chmod(mode)
    assert code == ExitCode.STATE_UNWRITABLE
    one_line(err, "cannot be written")


def test_a_store_in_use_by_another_daemon(workdir: Path) -> None:
    first = Running(workdir)
    try:
        code, err = run_to_exit(workdir)
        assert code == ExitCode.STATE_LOCKED
        one_line(err, f"pid {first.proc.pid}")
    finally:
        assert first.stop() == 0


@pytest.mark.parametrize("key", ["listen", "control_listen"])
def test_the_listen_address_in_use(workdir: Path, key: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        text = config_text(port)
        if key == "control_listen":  # the public listener free, the control one taken
            text = text.replace(f'listen = "127.0.0.1:{port}"', 'listen = "127.0.0.1:0"', 1)
            text = text.replace('control_listen = ""', f'control_listen = "127.0.0.1:{port}"')
        (workdir / "triggerd.toml").write_text(text)
        code, err = run_to_exit(workdir)
    assert code == ExitCode.LISTEN_FAILED
    one_line(err, f"127.0.0.1:{port}", "already in use", f"[daemon] {key}")


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_an_unreadable_config(workdir: Path, kind: str) -> None:
    config = workdir / ("absent.toml" if kind == "missing" else "state")
    config.mkdir(exist_ok=True) if kind == "directory" else None
    code, err = run_to_exit(workdir, config=config)
    assert code == ExitCode.CONFIG_UNREADABLE
    one_line(err, "cannot read the config file", str(config))
