"""Pieces several benchmarks share: a moto_server process and a trigger runtime built the way
the daemon builds one."""

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
