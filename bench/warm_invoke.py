"""Warm invoke overhead and throughput of the `local` backend.

Latency: N sequential invokes of the hello-world handler on a warm worker, against calling the
same handler in-process; the overhead is the difference of the percentiles.
Throughput: invocations/s with 1 worker (one caller) and with 4 workers (4 concurrent callers),
against the raw inter-process floor: the same number of round trips of a line echoed by as
many bare Python child processes over pipes.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import orjson

from bench import HELLO_DIR, BenchError, Row, percentile, run_async
from triggerd.functions.backends.local import LocalBackend, LocalFunctionConfig, plugin
from triggerd.telemetry.logs import JsonFormatter
from triggerd.telemetry.metrics import Metrics
from triggerd.types import BackendContext, Outcome, SystemClock

NAME = "warm_invoke"

PAYLOAD = orjson.dumps({"hello": "bench"})
_ECHO = (
    "import sys\n"
    "r, w = sys.stdin.buffer, sys.stdout.buffer\n"
    "for line in r:\n"
    "    w.write(line)\n"
    "    w.flush()\n"
)


@dataclass(frozen=True, slots=True)
class Settings:
    #: Sequential invokes measured for the latency percentiles.
    invokes: int = 2000
    #: Invokes (and in-process calls) before measuring.
    warmup: int = 200
    #: Invokes per throughput measurement (split between the callers).
    throughput_invokes: int = 4000


QUICK = Settings(invokes=500, warmup=50, throughput_invokes=1000)
SMOKE = Settings(invokes=20, warmup=5, throughput_invokes=40)


def load_handler() -> Callable[[Any, Any], Any]:
    """The hello handler, imported from its file without touching sys.path or sys.modules."""
    spec = importlib.util.spec_from_file_location("bench_hello_app", HELLO_DIR / "app.py")
    if spec is None or spec.loader is None:
        raise BenchError(f"cannot load {HELLO_DIR / 'app.py'}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    handler: Callable[[Any, Any], Any] = module.handler
    return handler


def in_process_latencies_ms(settings: Settings) -> list[float]:
    handler = load_handler()
    event = orjson.loads(PAYLOAD)
    for _ in range(settings.warmup):
        handler(event, None)
    out: list[float] = []
    clock = time.perf_counter_ns
    for _ in range(settings.invokes):
        t0 = clock()
        handler(event, None)
        out.append((clock() - t0) / 1e6)
    return out


@contextmanager
def daemon_function_logs() -> Iterator[None]:
    """The function log lines (START / END / REPORT and the handler's output) formatted as the
    daemon does by default (JSON lines at INFO), written to /dev/null; restored afterwards."""
    logger = logging.getLogger("triggerd.function")
    saved = (logger.level, logger.propagate, list(logger.handlers))
    with open(os.devnull, "w") as sink:
        handler = logging.StreamHandler(sink)
        handler.setFormatter(JsonFormatter())
        logger.handlers = [handler]
        logger.setLevel(logging.INFO)
        logger.propagate = False
        try:
            yield
        finally:
            logger.setLevel(saved[0])
            logger.propagate = saved[1]
            logger.handlers = saved[2]


def new_backend(work_dir: str, concurrency: int, **options: Any) -> LocalBackend:
    """A local backend for the hello function, reporting into metrics as in the daemon.
    `options` override config keys (e.g. runtime, runtime_client, code)."""
    values: dict[str, Any] = {
        "handler": "app.handler",
        "code": str(HELLO_DIR),
        "timeout_s": 30,
        "reserved_concurrency": concurrency,
    }
    config = LocalFunctionConfig(**(values | options))
    ctx = BackendContext(
        function="hello",
        clock=SystemClock(),
        log=logging.getLogger("bench.warm_invoke"),
        work_dir=work_dir,
        metrics=Metrics(),
    )
    backend = plugin.create(config, ctx)
    assert isinstance(backend, LocalBackend)
    return backend


async def invoke_ok(backend: LocalBackend) -> None:
    result = await backend.invoke(PAYLOAD)
    if result.outcome is not Outcome.OK:
        raise BenchError(f"invoke failed: {result.outcome.value} {result.payload[:200]!r}")


async def rate(callers: int, total: int, call: Callable[[int], Awaitable[None]]) -> float:
    """Calls/s of `callers` concurrent loops making `total` calls between them."""
    per_caller = max(1, total // callers)

    async def loop(index: int) -> None:
        for _ in range(per_caller):
            await call(index)

    t0 = time.perf_counter()
    async with asyncio.TaskGroup() as tg:
        for i in range(callers):
            tg.create_task(loop(i))
    return per_caller * callers / (time.perf_counter() - t0)


async def triggerd_latencies_ms(backend: LocalBackend, settings: Settings) -> list[float]:
    for _ in range(settings.warmup):
        await invoke_ok(backend)
    out: list[float] = []
    clock = time.perf_counter_ns
    for _ in range(settings.invokes):
        t0 = clock()
        await invoke_ok(backend)
        out.append((clock() - t0) / 1e6)
    return out


async def triggerd_rate(work_dir: str, workers: int, settings: Settings) -> float:
    backend = new_backend(work_dir, workers)
    await backend.start()
    try:
        # Warm up every worker: `workers` concurrent invokes start one each.
        await rate(
            workers, workers * max(1, settings.warmup // workers), lambda _: invoke_ok(backend)
        )
        if len(backend.workers) != workers:
            raise BenchError(f"expected {workers} warm workers, got {len(backend.workers)}")
        return await rate(workers, settings.throughput_invokes, lambda _: invoke_ok(backend))
    finally:
        await backend.stop()


async def pipe_echo_rate(workers: int, settings: Settings) -> float:
    """Round trips/s of a line through `workers` bare Python child processes over pipes."""
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _ECHO,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        for _ in range(workers)
    ]
    line = PAYLOAD + b"\n"

    async def round_trip(index: int) -> None:
        proc = procs[index]
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(line)
        await proc.stdin.drain()
        if await proc.stdout.readline() != line:
            raise BenchError("pipe echo lost a line")

    try:
        await rate(workers, workers * max(1, settings.warmup // workers), round_trip)
        return await rate(workers, settings.throughput_invokes, round_trip)
    finally:
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.close()
        for proc in procs:
            await proc.wait()


async def measure(settings: Settings) -> list[Row]:
    inproc = in_process_latencies_ms(settings)
    with tempfile.TemporaryDirectory(prefix="triggerd-bench-") as work_dir:
        backend = new_backend(work_dir, 1)
        await backend.start()
        try:
            lat = await triggerd_latencies_ms(backend, settings)
            with daemon_function_logs():
                lat_logged = await triggerd_latencies_ms(backend, settings)
        finally:
            await backend.stop()
        rate1 = await triggerd_rate(work_dir, 1, settings)
        rate4 = await triggerd_rate(work_dir, 4, settings)
    base1 = await pipe_echo_rate(1, settings)
    base4 = await pipe_echo_rate(4, settings)
    p50, p99 = percentile(lat, 50), percentile(lat, 99)
    b50, b99 = percentile(inproc, 50), percentile(inproc, 99)
    inproc_desc = "the same handler called in-process"
    pipe_desc = "round trips of a line echoed over pipes by as many bare python children"
    return [
        Row(NAME, "invoke latency p50 (ms)", p50, b50, baseline_desc=inproc_desc, digits=3),
        Row(NAME, "invoke latency p99 (ms)", p99, b99, baseline_desc=inproc_desc, digits=3),
        Row(
            NAME,
            "overhead p50 (ms)",
            p50 - b50,
            target=0.5,
            digits=3,
        ),
        Row(NAME, "overhead p99 (ms)", p99 - b99, digits=3),
        Row(
            NAME,
            "invoke latency p50, daemon's JSON logs on (ms)",
            percentile(lat_logged, 50),
            b50,
            baseline_desc=inproc_desc,
            digits=3,
        ),
        Row(
            NAME,
            "invocations/s, 1 worker",
            rate1,
            base1,
            target=2000,
            op=">=",
            baseline_desc=pipe_desc,
            digits=0,
        ),
        Row(NAME, "invocations/s, 4 workers", rate4, base4, baseline_desc=pipe_desc, digits=0),
    ]


def run(settings: Settings) -> list[Row]:
    return run_async(measure(settings))
