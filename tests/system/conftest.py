"""Run `triggerd run` as a subprocess on a temporary config, and stop it by PID."""

from __future__ import annotations

import functools
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Hashable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

if TYPE_CHECKING:
    from botocore.config import Config

T = TypeVar("T", bound=Hashable)

FUNCTIONS = Path(__file__).parent / "functions"
#: Appends each event's "id" to the file its "record" names (after sleeping its "sleep" s).
INVOKE_API_FUNCTION = (
    Path(__file__).resolve().parents[1] / "integration" / "functions" / "invoke_api"
)


def control_daemon_table(port: int) -> str:
    """The [daemon] table of a daemon killed and restarted in its directory: SQLite state
    there, no data listener, the control listener (Invoke API, SNS, EventBridge) on `port`,
    JSON logs."""
    return f"""
[daemon]
state = "sqlite:///state/state.db"
listen = ""
control_listen = "127.0.0.1:{port}"
shutdown_timeout_s = 5
log_format = "json"
"""


def public_daemon_table(port: int) -> str:
    """The [daemon] table of a daemon serving its public listener (webhooks, sns_http) on
    `port`, without a control listener: SQLite state in its directory, JSON logs."""
    return f"""
[daemon]
state = "sqlite:///state/state.db"
listen = "127.0.0.1:{port}"
control_listen = ""
shutdown_timeout_s = 5
log_format = "json"
"""


def invoke_api_function_table(name: str, reserved_concurrency: int) -> str:
    """A [functions.NAME] table running INVOKE_API_FUNCTION, 10 s a call at most."""
    return f"""
[functions.{name}]
handler = "app.handler"
code = "{INVOKE_API_FUNCTION}"
timeout_s = 10
reserved_concurrency = {reserved_concurrency}
"""


def aws_client(service: str, port: int, config: Config) -> Any:
    """A boto3 client of `service` for the daemon's control listener on `port` (any keys)."""
    import boto3  # only the tests that use it pay for the import

    return boto3.client(
        service,
        endpoint_url=f"http://127.0.0.1:{port}",
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="y",
        config=config,
    )


def recorded_ids(path: Path) -> set[int]:
    """The ids INVOKE_API_FUNCTION recorded in `path` (a line cut short by kill -9 skipped)."""
    if not path.exists():
        return set()
    lines = path.read_text().splitlines()
    return {int(json.loads(line)["id"]) for line in lines if line.endswith("}")}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def _limit_nofile(limit: int | tuple[int, int]) -> None:
    soft, hard = limit if isinstance(limit, tuple) else (limit, limit)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


class Daemon:
    """One `triggerd run` process with its logs under the test's temp dir."""

    def __init__(self, workdir: Path, config_text: str) -> None:
        self.workdir = workdir
        self.config = workdir / "triggerd.toml"
        self.config.write_text(config_text)
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0

    @property
    def stdout_path(self) -> Path:
        return self.workdir / f"stdout.{self.runs}.log"

    @property
    def stderr_path(self) -> Path:
        return self.workdir / f"stderr.{self.runs}.log"

    def start(
        self,
        ready_timeout: float = 90,
        nofile: int | tuple[int, int] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        """`nofile`: start with that RLIMIT_NOFILE (soft and hard, or a (soft, hard) pair), as
        a unit's LimitNOFILE (LimitNOFILE=soft:hard);
        `env`: variables added to the daemon's environment;
        `ready_timeout`: a wide "did not hang" bound: under load, a first start that builds a
        function's runtime (pip installing into the runtime cache) takes far longer than the
        usual second or two."""
        self.runs += 1
        env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "triggerd", "run", str(self.config)],
            cwd=self.workdir,
            stdout=self.stdout_path.open("wb"),
            stderr=self.stderr_path.open("wb"),
            env=env,
            preexec_fn=None if nofile is None else functools.partial(_limit_nofile, nofile),
        )
        wait_for(
            lambda: "trigger(s)" in self.stdout() or self.proc.poll() is not None,
            ready_timeout,
            "the daemon to report ready",
        )
        if self.proc.poll() is not None:
            raise AssertionError(f"daemon exited {self.proc.returncode}:\n{self.stderr()}")

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace") if self.stdout_path.exists() else ""

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    def events(self) -> list[dict[str, object]]:
        """The daemon's JSON log lines of the current run."""
        out = []
        for line in self.stderr().splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return out

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self._reap_children()

    def terminate(self, timeout: float = 30) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def _reap_children(self) -> None:
        """Workers of a SIGKILLed daemon notice their parent is gone; give them a moment."""
        time.sleep(0.2)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def daemon_factory(tmp_path: Path) -> Iterator[Callable[[str], Daemon]]:
    made: list[Daemon] = []

    def make(config_text: str) -> Daemon:
        d = Daemon(tmp_path, config_text)
        made.append(d)
        return d

    yield make
    for d in made:
        d.stop()


def kill9_during_burst(
    d: Daemon, send: Callable[[int], T | None], *, burst: int, callers: int, kill_after: int
) -> set[T]:
    """Calls `send(0)` .. `send(burst - 1)` from `callers` threads and kills the daemon with
    SIGKILL once `kill_after` of them were acknowledged, while others are still under way
    (calls not begun by then are not made). `send` returns what was acknowledged, or None
    when nothing was (the daemon died under it); the acknowledged values."""
    accepted: set[T] = set()
    lock = threading.Lock()
    enough = threading.Event()
    killed = threading.Event()

    def call(i: int) -> None:
        if killed.is_set():
            return
        acked = send(i)
        if acked is None:
            return
        with lock:
            accepted.add(acked)
            if len(accepted) >= kill_after:
                enough.set()

    with ThreadPoolExecutor(callers) as pool:
        futures = [pool.submit(call, i) for i in range(burst)]
        assert enough.wait(60), "the burst did not get going"
        d.kill9()
        killed.set()
        for f in futures:
            f.result()
    with lock:
        return set(accepted)
