"""Worker resident memory over many invocations, each with a distinct trace id (as every
invocation has): the bundled Python client; awslambdaric with recycling off (what it leaks);
awslambdaric with the default recycling (a quarter of memory_mb: 32 MB of growth, about
230,000 invocations); and awslambdaric recycled after 4 MB of growth (to see it within a
short run). One warm worker of the no-op hello function, invoked through the local backend;
RSS sampled from /proc every tenth of the run. The baseline is the same worker's RSS after
the warm-up (`warmup` invocations), so the ratio is the growth factor over the run.

`python -m bench.worker_memory --invocations 1000000 [--client bundled]` runs it at other
counts (a run at 100,000 per client takes about a minute on 2 cores).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from bench import HELLO_DIR, BenchError, Row, format_table, run_async, triggerd_logs_at
from triggerd.functions.backends.local import LocalBackend, LocalFunctionConfig
from triggerd.types import BackendContext, Outcome, SystemClock

NAME = "worker_memory"

#: (label, runtime_client, worker_max_rss_growth_mb: None = the default)
CLIENTS: dict[str, tuple[Literal["bundled", "awslambdaric"], int | None]] = {
    "bundled": ("bundled", None),
    "awslambdaric, no recycling": ("awslambdaric", 0),
    "awslambdaric, default recycling": ("awslambdaric", None),
    "awslambdaric, recycling at 4 MB growth": ("awslambdaric", 4),
}


@dataclass(frozen=True, slots=True)
class Settings:
    invocations: int = 200_000
    warmup: int = 2_000
    clients: tuple[str, ...] = tuple(CLIENTS)
    #: Invocations in flight (one worker: they queue for it, which keeps it always busy).
    callers: int = 2
    #: Print each tenth's sample on stderr as it is taken.
    progress: bool = False


QUICK = Settings(invocations=30_000)
SMOKE = Settings(invocations=300, warmup=50, clients=("bundled",))


@dataclass(slots=True)
class Trace:
    label: str
    baseline_kb: int
    samples: list[tuple[int, int]]
    recycled: int
    failed: int
    seconds: float


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/statm", "rb") as f:
        return int(f.read().split()[1]) * 4


async def one_client(tmp: Path, label: str, settings: Settings) -> Trace:
    client, growth = CLIENTS[label]
    config = LocalFunctionConfig(
        handler="app.handler",
        code=str(HELLO_DIR),
        runtime_client=client,
        timeout_s=30,
        reserved_concurrency=1,
        worker_max_rss_growth_mb=growth,
    )
    ctx = BackendContext(
        "hello", SystemClock(), logging.getLogger("bench"), work_dir=str(tmp / "work")
    )
    backend = LocalBackend(config, ctx)
    await backend.start()
    failed = 0

    async def invoke(count: int) -> None:
        nonlocal failed
        for _ in range(count):
            result = await backend.invoke(b"{}", invocation_type="Event")
            if result.outcome is not Outcome.OK:
                failed += 1

    async def run(count: int) -> None:
        per = max(1, count // settings.callers)
        await asyncio.gather(*(invoke(per) for _ in range(settings.callers)))

    def worker_rss() -> int:
        return sum(rss_kb(w.pid) for w in backend.workers if w.alive and w.pid)

    try:
        await run(settings.warmup)
        baseline = worker_rss()
        samples: list[tuple[int, int]] = []
        step = max(1, settings.invocations // 10)
        started = time.perf_counter()
        done = 0
        while done < settings.invocations:
            await run(step)
            done += step
            samples.append((done, worker_rss()))
            if settings.progress:  # a long run (1,000,000) shows its curve as it goes
                print(
                    f"{label}: {done:,} invocations, worker RSS {samples[-1][1] / 1024:.1f} MB "
                    f"(after warm-up {baseline / 1024:.1f}), recycled "
                    f"{int(backend.stats['recycled'])}x, {failed} failed, "
                    f"{time.perf_counter() - started:.0f} s",
                    file=sys.stderr,
                    flush=True,
                )
        seconds = time.perf_counter() - started
    finally:
        await backend.stop()
    if not baseline:
        raise BenchError(f"{label}: no worker to measure")
    return Trace(label, baseline, samples, int(backend.stats["recycled"]), failed, seconds)


async def measure(settings: Settings) -> list[Row]:
    traces: list[Trace] = []
    # START/END/REPORT per invocation are not measured here.
    with (
        triggerd_logs_at(logging.WARNING),
        tempfile.TemporaryDirectory(prefix="triggerd-bench-") as tmp,
    ):
        for label in settings.clients:
            traces.append(await one_client(Path(tmp) / str(len(traces)), label, settings))
    rows: list[Row] = []
    for t in traces:
        final_kb = t.samples[-1][1]
        peak_kb = max(kb for _, kb in t.samples)
        curve = " ".join(f"{kb / 1024:.1f}" for _, kb in t.samples)
        rows.append(
            Row(
                NAME,
                f"worker RSS after {settings.invocations:,} invocations, {t.label} (MB; "
                f"peak {peak_kb / 1024:.1f}, recycled {t.recycled}x, {t.failed} failed, "
                f"{settings.invocations / t.seconds:,.0f}/s; every tenth: {curve})",
                final_kb / 1024,
                t.baseline_kb / 1024,
                baseline_desc=f"the same worker's RSS after {settings.warmup:,} warm-up "
                "invocations",
                digits=1,
            )
        )
    return rows


def run(settings: Settings) -> list[Row]:
    return run_async(measure(settings))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.worker_memory", description=__doc__)
    parser.add_argument("--invocations", type=int, default=Settings().invocations)
    parser.add_argument(
        "--client", action="append", choices=list(CLIENTS), help="repeatable; default all"
    )
    args = parser.parse_args(argv)
    settings: Any = replace(Settings(), invocations=args.invocations, progress=True)
    if args.client:
        settings = replace(settings, clients=tuple(args.client))
    print(format_table(run(settings)))


if __name__ == "__main__":
    main()
