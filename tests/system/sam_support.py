"""What the `triggerd run --sam` / `--serverless` system tests share: the overrides file's
daemon section, starting the daemon on a template with it, stopping it, calling its HTTP
listener and reading what the recorder function wrote."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

from tests.system.conftest import wait_for


def daemon_overrides(
    state_dir: Path, port: int, control: int | None = None, extra: str = ""
) -> str:
    """The `daemon:` section of an overrides file: the public listener on `port`, the control
    listener on `control` (off when None), a SQLite store under `state_dir`, a 5 s shutdown;
    `extra` adds lines to the section (indented by two spaces)."""
    control_listen = "" if control is None else f"127.0.0.1:{control}"
    return (
        f'daemon:\n  listen: "127.0.0.1:{port}"\n  control_listen: "{control_listen}"\n'
        f"{extra}"
        f"  state: sqlite:///{state_dir}/state/state.db\n  shutdown_timeout_s: 5\n"
    )


def start_with_overrides(
    cwd: Path, overrides: str, kind: str, template: str, *args: str
) -> subprocess.Popen[bytes]:
    """Write `overrides` to cwd/overrides.yaml and start `triggerd run --KIND TEMPLATE
    --overrides overrides.yaml ARGS` there."""
    (cwd / "overrides.yaml").write_text(overrides)
    return start_run(cwd, f"--{kind}", template, "--overrides", "overrides.yaml", *args)


def start_run(cwd: Path, *args: str) -> subprocess.Popen[bytes]:
    """`triggerd run ARGS` in `cwd` (stdout.log, stderr.log there), once it reports ready."""
    out = cwd / "stdout.log"
    err = cwd / "stderr.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "triggerd", "run", *args],
        cwd=cwd,
        stdout=out.open("wb"),
        stderr=err.open("wb"),
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    try:
        wait_for(
            lambda: "trigger(s)" in out.read_text() or proc.poll() is not None,
            60,
            "the daemon to report ready",
        )
        assert proc.poll() is None, err.read_text()
    except BaseException:
        stop(proc)
        raise
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (then SIGKILL) to a daemon this test started, by its PID."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def get(url: str, data: bytes | None = None) -> tuple[int, Any]:
    """GET `url` (POST when there is `data`): the status and the JSON body."""
    request = urllib.request.Request(url, data=data, method="POST" if data else "GET")
    with urllib.request.urlopen(request, timeout=20) as response:
        return response.status, json.loads(response.read())


def recorded(path: Path) -> list[dict[str, Any]]:
    """The events the recorder function wrote to `path`, in order (complete lines only)."""
    if not path.exists():
        return []
    return [json.loads(x)["event"] for x in path.read_text().splitlines() if x.endswith("}")]
