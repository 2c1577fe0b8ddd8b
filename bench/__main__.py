"""`python -m bench [--only NAME ...] [--quick] [--json PATH]`: run the benchmarks, print one
table, and write the rows as JSON (default bench/results.json, overwritten)."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench import (
    BENCH_DIR,
    Row,
    async_queue,
    cluster,
    cold_start,
    directory,
    eventbridge,
    format_table,
    http_backend,
    idle_rss,
    inner_loop,
    invoke_event,
    kafka,
    kinesis,
    logs,
    pg_state,
    postgres,
    rabbitmq,
    s3_poll,
    scale,
    sigv4,
    sns,
    sqs,
    startup,
    warm_invoke,
    webhook,
    webhook_wrk,
    worker_memory,
)

Runner = Callable[[str], list[Row]]


def _runner(module: Any) -> Runner:
    def run(scale: str) -> list[Row]:
        settings = {"full": module.Settings(), "quick": module.QUICK, "smoke": module.SMOKE}[scale]
        rows: list[Row] = module.run(settings)
        return rows

    return run


#: In the order they run and print.
BENCHMARKS: dict[str, Runner] = {
    warm_invoke.NAME: _runner(warm_invoke),
    cold_start.NAME: _runner(cold_start),
    directory.NAME: _runner(directory),
    idle_rss.NAME: _runner(idle_rss),
    s3_poll.NAME: _runner(s3_poll),
    sqs.NAME: _runner(sqs),
    rabbitmq.NAME: _runner(rabbitmq),
    kafka.NAME: _runner(kafka),
    postgres.NAME: _runner(postgres),
    kinesis.NAME: _runner(kinesis),
    webhook.NAME: _runner(webhook),
    webhook_wrk.NAME: _runner(webhook_wrk),
    logs.NAME: _runner(logs),
    startup.NAME: _runner(startup),
    http_backend.NAME: _runner(http_backend),
    sigv4.NAME: _runner(sigv4),
    async_queue.NAME: _runner(async_queue),
    pg_state.NAME: _runner(pg_state),
    invoke_event.NAME: _runner(invoke_event),
    eventbridge.NAME: _runner(eventbridge),
    sns.NAME: _runner(sns),
    worker_memory.NAME: _runner(worker_memory),
    inner_loop.NAME: _runner(inner_loop),
    scale.NAME: _runner(scale),
    cluster.NAME: _runner(cluster),
}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME",
        help=f"run only this benchmark (repeatable, or comma-separated): {', '.join(BENCHMARKS)}",
    )
    parser.add_argument("--quick", action="store_true", help="smaller counts")
    parser.add_argument(
        "--json",
        type=Path,
        default=BENCH_DIR / "results.json",
        help="where to write the results (default: bench/results.json)",
    )
    args = parser.parse_args(argv)
    names = [n.strip() for item in args.only for n in item.split(",") if n.strip()]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)} (known: {', '.join(BENCHMARKS)})")
    args.names = names or list(BENCHMARKS)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # The packages Python runtimes provide (boto3) are installed once, not per benchmark.
    os.environ.setdefault("TRIGGERD_RUNTIMES_DIR", str(BENCH_DIR / ".runtimes"))
    scale = "quick" if args.quick else "full"
    rows: list[Row] = []
    failed: dict[str, str] = {}
    seconds: dict[str, float] = {}
    for name in args.names:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        try:
            rows.extend(BENCHMARKS[name](scale))
        except Exception as exc:  # one broken benchmark must not hide the others' figures
            traceback.print_exc()
            failed[name] = f"{type(exc).__name__}: {exc}"
        seconds[name] = round(time.perf_counter() - t0, 2)
    print(format_table(rows))
    for name, error in failed.items():
        print(f"FAILED {name}: {error}")
    results = {
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "scale": scale,
        "python": platform.python_version(),
        "machine": f"{platform.system()} {platform.machine()}, {_cpus()} CPUs",
        "seconds": seconds,
        "rows": [r.as_json() for r in rows],
        "failed": failed,
    }
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 1 if failed else 0


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


if __name__ == "__main__":
    sys.exit(main())
