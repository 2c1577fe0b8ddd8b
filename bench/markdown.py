"""`python -m bench.markdown RESULTS.json ...`: the rows of one or more result files (what
`python -m bench --json` writes) as the README's Markdown table, in the order given, then one
line per distinct baseline. Running the benchmarks one at a time, each with its own `--json`,
keeps what finished when a later one fails or is stopped; this puts them back into one table.

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

from bench import Row, format_value

_FIELDS = ("benchmark", "metric", "value", "baseline", "target", "op", "target_note")


def load_rows(data: dict[str, Any]) -> list[Row]:
    """The rows of one result file (the computed `ratio` and `ok` are computed again)."""
    rows: list[Row] = []
    for raw in data.get("rows", []):
        kept = {k: v for k, v in raw.items() if k in Row.__dataclass_fields__}
        missing = [f for f in _FIELDS[:3] if f not in kept]
        if missing:
            raise ValueError(f"a row without {', '.join(missing)}: {raw!r}")
        rows.append(Row(**kept))
    return rows


def _cell(text: str) -> str:
    """A table cell: a `|` inside would end it."""
    return text.replace("|", "\\|")


def markdown_table(rows: Sequence[Row]) -> str:
    """The README's table: benchmark, metric, triggerd, baseline, ratio, target and whether it
    is met ("met" / "not met"; empty without a target), then the baselines."""
    out = [
        "| benchmark | metric | triggerd | baseline | ratio | target | met? |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        target = "" if r.target is None else f"{r.op} {format_value(r.target, r.digits)}"
        if r.target_note:
            target = f"{target} ({r.target_note})".strip()
        met = "" if r.ok is None else ("met" if r.ok else "**not met**")
        ratio = r.ratio
        cells = (
            r.benchmark,
            r.metric,
            format_value(r.value, r.digits),
            format_value(r.baseline, r.digits),
            "" if ratio is None else f"{ratio:.2f}x",
            target,
            met,
        )
        out.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    notes: dict[tuple[str, str], None] = {}
    for r in rows:
        if r.baseline_desc:
            notes[(r.benchmark, r.baseline_desc)] = None
    if notes:
        out.append("")
        out.append("Baselines:")
        out.append("")
        out.extend(f"- {bench}: {_cell(desc)}" for bench, desc in notes)
    return "\n".join(out)


def merge(files: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One result file from several: the rows in order, run times and failures combined, the
    first file's machine and Python, the last file's time."""
    if not files:
        raise ValueError("no result files")
    seconds: dict[str, float] = {}
    failed: dict[str, str] = {}
    rows: list[dict[str, Any]] = []
    for data in files:
        seconds.update(data.get("seconds", {}))
        failed.update(data.get("failed", {}))
        rows.extend(r.as_json() for r in load_rows(data))
    scales = sorted({str(d.get("scale", "")) for d in files})
    return {
        "created_at": files[-1].get("created_at", ""),
        "scale": scales[0] if len(scales) == 1 else "mixed",
        "python": files[0].get("python", ""),
        "machine": files[0].get("machine", ""),
        "seconds": seconds,
        "rows": rows,
        "failed": failed,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.markdown", description=__doc__)
    parser.add_argument("results", nargs="+", type=Path, help="result files, in table order")
    parser.add_argument("--merge", type=Path, help="also write the rows as one result file")
    args = parser.parse_args(argv)
    files: list[dict[str, Any]] = []
    for path in args.results:
        try:
            files.append(json.loads(path.read_text()))
        except (OSError, ValueError) as exc:
            print(f"bench.markdown: cannot read {path}: {exc}", file=sys.stderr)
            return 2
    try:
        merged = merge(files)
    except ValueError as exc:
        print(f"bench.markdown: {exc}", file=sys.stderr)
        return 2
    print(markdown_table(load_rows(merged)))
    for name, error in merged["failed"].items():
        print(f"\nFAILED {name}: {error}")
    if args.merge is not None:
        args.merge.write_text(json.dumps(merged, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
