"""Cold start of the `local` backend: invoke to response on a fresh backend (a new worker
process), against starting and reaping a bare `python -c pass` the same way."""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from dataclasses import dataclass

from bench import BenchError, Row, median, run_async
from bench.warm_invoke import PAYLOAD, new_backend
from triggerd.types import Outcome

NAME = "cold_start"


@dataclass(frozen=True, slots=True)
class Settings:
    #: Fresh backends (and bare interpreters) timed; the median is reported.
    samples: int = 10


QUICK = Settings(samples=5)
SMOKE = Settings(samples=1)


async def triggerd_cold_ms(work_dir: str) -> float:
    backend = new_backend(work_dir, 1)
    await backend.start()
    try:
        t0 = time.perf_counter()
        result = await backend.invoke(PAYLOAD)
        elapsed = (time.perf_counter() - t0) * 1000
        if result.outcome is not Outcome.OK:
            raise BenchError(f"cold invoke failed: {result.outcome.value} {result.payload!r}")
        if backend.stats["cold_starts"] != 1:
            raise BenchError("the first invoke did not start a worker")
        return elapsed
    finally:
        await backend.stop()


async def bare_python_ms() -> float:
    t0 = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
    if await proc.wait() != 0:
        raise BenchError("python -c pass failed")
    return (time.perf_counter() - t0) * 1000


async def measure(settings: Settings) -> list[Row]:
    cold: list[float] = []
    bare: list[float] = []
    with tempfile.TemporaryDirectory(prefix="triggerd-bench-") as work_dir:
        # Interleaved, so both see the same background noise; one untimed round first warms
        # the page cache for both.
        await triggerd_cold_ms(work_dir)
        await bare_python_ms()
        for _ in range(settings.samples):
            cold.append(await triggerd_cold_ms(work_dir))
            bare.append(await bare_python_ms())
    return [
        Row(
            NAME,
            "first invoke, fresh worker (ms, median)",
            median(cold),
            median(bare),
            target=150,
            baseline_desc="`python -c pass` started and reaped as a subprocess",
            digits=1,
        )
    ]


def run(settings: Settings) -> list[Row]:
    return run_async(measure(settings))
