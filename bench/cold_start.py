"""Cold start of the `local` backend: invoke to response on a fresh backend (a new worker
process), against starting and reaping the bare interpreter the same way. Measured for the
bundled Python runtime client, awslambdaric, a custom runtime (`provided`, a Node.js
`bootstrap`) and the nodejs20.x runtime with the bundled Node.js client (both skipped when
node is not installed)."""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import BENCH_DIR, BenchError, Row, median, run_async
from bench.warm_invoke import PAYLOAD, new_backend
from triggerd.functions.backends.local import LocalFunctionConfig
from triggerd.functions.backends.local_python import InterpreterFinder
from triggerd.types import Outcome

NAME = "cold_start"

NODE_DIR = BENCH_DIR / "functions" / "hello_node"
NODEJS_DIR = BENCH_DIR / "functions" / "hello_nodejs"


@dataclass(frozen=True, slots=True)
class Settings:
    #: Fresh backends (and bare interpreters) timed per runtime; the median is reported.
    samples: int = 10


QUICK = Settings(samples=5)
SMOKE = Settings(samples=1)


@dataclass(frozen=True, slots=True)
class Variant:
    metric: str
    options: dict[str, Any]
    #: The bare process started and reaped as the baseline.
    bare: Sequence[str]
    bare_desc: str
    target: float | None = None
    #: The most of the bare process's time the cold start may take (#15), as its own row.
    ratio_target: float | None = None


def variants(python: str = sys.executable) -> list[Variant]:
    """`python`: the interpreter the function runs (its runtime's, isolated), which the
    baseline starts too."""
    python_bare = (python, "-c", "pass")
    out = [
        Variant(
            "first invoke, fresh worker (ms, median)",
            {},
            python_bare,
            "`python -c pass` (the runtime's interpreter) started and reaped as a subprocess",
            target=150,
            ratio_target=1.7,
        ),
        Variant(
            "first invoke, awslambdaric (ms, median)",
            {"runtime_client": "awslambdaric"},
            python_bare,
            "`python -c pass` (the runtime's interpreter) started and reaped as a subprocess",
        ),
    ]
    node = shutil.which("node")
    if node is not None:
        out.append(
            Variant(
                "first invoke, provided (Node.js bootstrap) (ms, median)",
                {"runtime": "provided", "handler": "", "code": str(NODE_DIR)},
                (node, "-e", "0"),
                "`node -e 0` started and reaped as a subprocess",
            )
        )
        out.append(
            Variant(
                "first invoke, nodejs20.x (bundled Node.js client) (ms, median)",
                {"runtime": "nodejs20.x", "handler": "index.handler", "code": str(NODEJS_DIR)},
                (node, "-e", "0"),
                "`node -e 0` started and reaped as a subprocess",
                ratio_target=1.2,
            )
        )
    return out


async def triggerd_cold_ms(work_dir: str, options: dict[str, Any] | None = None) -> float:
    backend = new_backend(work_dir, 1, **(options or {}))
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


async def bare_ms(argv: Sequence[str]) -> float:
    t0 = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(*argv)
    if await proc.wait() != 0:
        raise BenchError(f"{' '.join(argv)} failed")
    return (time.perf_counter() - t0) * 1000


async def measure_variant(work_dir: str, variant: Variant, samples: int) -> list[Row]:
    """The variant's cold start against its bare process, and the ratio's row when #15 set
    a target on it."""
    cold: list[float] = []
    bare: list[float] = []
    # Interleaved, so both see the same background noise; one untimed round first warms
    # the page cache for both.
    await triggerd_cold_ms(work_dir, variant.options)
    await bare_ms(variant.bare)
    for _ in range(samples):
        cold.append(await triggerd_cold_ms(work_dir, variant.options))
        bare.append(await bare_ms(variant.bare))
    row = Row(
        NAME,
        variant.metric,
        median(cold),
        median(bare),
        target=variant.target,
        baseline_desc=variant.bare_desc,
        digits=1,
    )
    if variant.ratio_target is None or row.ratio is None:
        return [row]
    bare_cmd = " ".join([Path(variant.bare[0]).name, *variant.bare[1:]])
    share = Row(
        NAME,
        f"{variant.metric.split(' (')[0]} / `{bare_cmd}`",
        row.ratio,
        target=variant.ratio_target,
        op="<=",
    )
    return [row, share]


async def measure(settings: Settings) -> list[Row]:
    python = (
        await InterpreterFinder().find(LocalFunctionConfig.model_fields["runtime"].default)
    ).path
    with tempfile.TemporaryDirectory(prefix="triggerd-bench-") as work_dir:
        return [
            row
            for v in variants(python)
            for row in await measure_variant(work_dir, v, settings.samples)
        ]


def run(settings: Settings) -> list[Row]:
    return run_async(measure(settings))
