"""`python -m bench.markdown RESULTS.json ...`: the rows of one or more result files (what
`python -m bench --json` writes) as the README's Markdown table, in the order given, then one
line per distinct baseline. Running the benchmarks one at a time, each with its own `--json`,
keeps what finished when a later one fails or is stopped; this puts them back into one table.
A benchmark found in a later file replaces its rows and failure from the earlier ones (a
re-run). Exit status 1 when a benchmark in the result failed, 2 when a file is unreadable.

`--merge PATH` also writes the rows into one result file of the same form (the files' run
times and failures combined), as a full `python -m bench` run would have written it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import Row, baselines, figure_cells

_REQUIRED = ("benchmark", "metric", "value")
_NUMBERS = ("value", "baseline", "target")


def load_rows(data: object) -> list[Row]:
    """The rows of one result file (the computed `ratio` and `ok` are computed again);
    ValueError naming what is wrong with it."""
    if not isinstance(data, dict):
        raise ValueError("not a result file (a JSON object with rows)")
    raws = data.get("rows", [])
    if not isinstance(raws, list):
        raise ValueError("its rows are not a list")
    rows: list[Row] = []
    for raw in raws:
        if not isinstance(raw, dict):
            raise ValueError(f"a row that is not an object: {raw!r}")
        kept = {k: v for k, v in raw.items() if k in Row.__dataclass_fields__}
        missing = [f for f in _REQUIRED if kept.get(f) is None]
        if missing:
            raise ValueError(f"a row without {', '.join(missing)}: {raw!r}")
        wrong = [
            f
            for f in _NUMBERS
            if kept.get(f) is not None
            and (isinstance(kept[f], bool) or not isinstance(kept[f], int | float))
        ]
        if wrong:
            raise ValueError(f"a row whose {', '.join(wrong)} is not a number: {raw!r}")
        rows.append(Row(**kept))
    return rows


def _cell(text: str) -> str:
    """A table cell: a `|` would end it, a line break would end the row."""
    return " ".join(text.split("\n")).replace("|", "\\|")


def _target(value: float, digits: int) -> str:
    """A target as the issue states it (5,000, 0.7, 150), at most the figure's decimals."""
    text = f"{value:,.{max(digits, 0)}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def markdown_table(rows: Sequence[Row]) -> str:
    """The README's table: benchmark, metric, triggerd, baseline, ratio, target and whether it
    is met ("met" / "not met"; empty without a target), then the baselines."""
    out = [
        "| benchmark | metric | triggerd | baseline | ratio | target | met? |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        target = "" if r.target is None else f"{r.op} {_target(r.target, r.digits)}"
        if r.target_note:
            target = f"{target} ({r.target_note})".strip()
        met = "" if r.ok is None else ("met" if r.ok else "**not met**")
        value, baseline, ratio = figure_cells(r, "")
        # A missing baseline reads "-" as in the printed table; a missing ratio is left empty.
        cells = (r.benchmark, r.metric, value, baseline or "-", ratio, target, met)
        out.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    notes = baselines(rows)
    if notes:
        out.append("")
        out.append("Baselines:")
        out.append("")
        out.extend(f"- {bench}: {_cell(desc)}" for bench, desc in notes)
    return "\n".join(out)


def merge(files: Sequence[object]) -> dict[str, Any]:
    """One result file from several, in order: a benchmark that a later file ran (its rows,
    run time or failure) takes the place of what earlier files had of it. The first file's
    machine and Python, the latest time. ValueError when one is malformed."""
    if not files:
        raise ValueError("no result files")
    by_benchmark: dict[str, list[Row]] = {}
    seconds: dict[str, float] = {}
    failed: dict[str, str] = {}
    for data in files:
        rows = load_rows(data)
        assert isinstance(data, dict)  # load_rows checked it
        ran: dict[str, list[Row]] = {}
        for row in rows:
            ran.setdefault(row.benchmark, []).append(row)
        names = set(ran) | set(data.get("seconds", {})) | set(data.get("failed", {}))
        for name in names:
            by_benchmark.pop(name, None)  # a re-run moves to its new place
            failed.pop(name, None)
        by_benchmark.update(ran)
        seconds.update(data.get("seconds", {}))
        failed.update(data.get("failed", {}))
    first = files[0]
    assert isinstance(first, dict)
    scales = sorted({str(d.get("scale", "")) for d in files if isinstance(d, dict)})
    times = [str(d.get("created_at", "")) for d in files if isinstance(d, dict)]
    return {
        "created_at": max(times),
        "scale": scales[0] if len(scales) == 1 else "mixed",
        "python": first.get("python", ""),
        "machine": first.get("machine", ""),
        "seconds": seconds,
        "rows": [r.as_json() for rows in by_benchmark.values() for r in rows],
        "failed": failed,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.markdown", description=__doc__)
    parser.add_argument("results", nargs="+", type=Path, help="result files, in table order")
    parser.add_argument("--merge", type=Path, help="also write the rows as one result file")
    args = parser.parse_args(argv)
    files: list[object] = []
    for path in args.results:
        try:
            files.append(json.loads(path.read_text()))
        except (OSError, ValueError) as exc:
            print(f"bench.markdown: cannot read {path}: {exc}", file=sys.stderr)
            return 2
    try:
        merged = merge(files)
    except (ValueError, TypeError) as exc:
        print(f"bench.markdown: {exc}", file=sys.stderr)
        return 2
    print(markdown_table(load_rows(merged)))
    for name, error in merged["failed"].items():
        print(f"\nFAILED {name}: {error}")
    if args.merge is not None:
        args.merge.write_text(json.dumps(merged, indent=2) + "\n")
    return 1 if merged["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
