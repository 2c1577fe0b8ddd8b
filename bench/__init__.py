"""triggerd's benchmarks: `python -m bench` runs them all and prints one table.

These machines are noisy, so no benchmark asserts a time. Each one measures triggerd and a raw
baseline doing the same work in the same run, and reports both and their ratio; the absolute
figure is also compared with the issue's target (the `ok?` column).

Every benchmark module exposes `NAME`, a frozen `Settings` dataclass whose defaults are the
full run, `QUICK` and `SMOKE` instances with smaller counts, and `run(settings) -> list[Row]`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import statistics
from collections.abc import Coroutine, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

T = TypeVar("T")

BENCH_DIR = Path(__file__).resolve().parent
#: The hello-world handler the invoke benchmarks call.
HELLO_DIR = BENCH_DIR / "functions" / "hello"

Op = Literal["<=", ">="]


class BenchError(Exception):
    """A benchmark could not produce its figure (say, events never arrived)."""


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the results table."""

    benchmark: str
    metric: str
    #: triggerd's figure.
    value: float
    #: The raw baseline's figure for the same metric, measured in the same run.
    baseline: float | None = None
    #: The absolute target for `value`, judged with `op`.
    target: float | None = None
    op: Op = "<="
    #: Shown after the target, e.g. a later, stricter target.
    target_note: str = ""
    #: What the baseline is (printed under the table).
    baseline_desc: str = ""
    #: Decimals shown in the table.
    digits: int = 2

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or self.baseline == 0:
            return None
        return self.value / self.baseline

    @property
    def ok(self) -> bool | None:
        if self.target is None:
            return None
        return self.value <= self.target if self.op == "<=" else self.value >= self.target

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["ratio"] = self.ratio
        data["ok"] = self.ok
        return data


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by the nearest-rank method."""
    if not values:
        raise BenchError("no samples")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    if not values:
        raise BenchError("no samples")
    return statistics.median(values)


@contextmanager
def triggerd_logs_at(level: int) -> Iterator[None]:
    """triggerd's loggers at `level` (WARNING hides the function's START/END/REPORT lines)
    until the block ends, then as they were: the harness and its smoke test run other work
    afterwards."""
    logger = logging.getLogger("triggerd")
    saved = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(saved)


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run a benchmark coroutine on the event loop the daemon uses (uvloop when installed),
    with the garbage collector set as `triggerd run` sets it."""
    from triggerd.daemon.gctune import tune_gc

    tune_gc()
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    result: T = uvloop.run(coro)
    return result


def format_value(value: float | None, digits: int) -> str:
    if value is None:
        return "-"
    if abs(value) >= 10_000:
        return f"{value:,.0f}"
    if value != 0 and abs(value) < 10.0**-digits * 10:
        return f"{value:.2g}"  # tiny figures (an in-process call) keep two significant digits
    return f"{value:.{digits}f}"


def figure_cells(row: Row, missing: str) -> tuple[str, str, str]:
    """A row's figure, its baseline's and their ratio as table cells (`missing` where there
    is none)."""
    ratio = row.ratio
    return (
        format_value(row.value, row.digits),
        missing if row.baseline is None else format_value(row.baseline, row.digits),
        missing if ratio is None else f"{ratio:.2f}x",
    )


def baselines(rows: Sequence[Row]) -> list[tuple[str, str]]:
    """Each distinct (benchmark, baseline description) of `rows`, in order."""
    return list(dict.fromkeys((r.benchmark, r.baseline_desc) for r in rows if r.baseline_desc))


def format_table(rows: Sequence[Row]) -> str:
    """The plain-text results table, then one line per distinct baseline."""
    header = ("benchmark", "metric", "triggerd", "baseline", "ratio", "target", "ok?")
    lines: list[tuple[str, ...]] = [header]
    for r in rows:
        target = "-" if r.target is None else f"{r.op} {format_value(r.target, 0)}"
        if r.target_note:
            target += f" ({r.target_note})"
        ok = "-" if r.ok is None else ("yes" if r.ok else "NO")
        lines.append((r.benchmark, r.metric, *figure_cells(r, "-"), target, ok))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    numeric = {2, 3, 4}
    out: list[str] = []
    for n, line in enumerate(lines):
        cells = [
            cell.rjust(widths[i]) if i in numeric else cell.ljust(widths[i])
            for i, cell in enumerate(line)
        ]
        out.append("  ".join(cells).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    notes = baselines(rows)
    if notes:
        out.append("")
        out.append("baselines:")
        out.extend(f"  {bench}: {desc}" for bench, desc in notes)
    return "\n".join(out)
