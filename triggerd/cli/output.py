"""How list commands print: a rich table for people (plain text, never cut short, when stdout
is not a terminal) or `--output json` for scripts; an empty result says so."""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

__all__ = ["OUTPUT_FORMATS", "console", "emit", "output_option"]

OUTPUT_FORMATS = ("table", "json")

output_option = click.option(
    "--output",
    "-o",
    "output",
    type=click.Choice(OUTPUT_FORMATS),
    default="table",
    show_default=True,
    help="table for people, json for scripts",
)


def console(*, stderr: bool = False) -> Console:
    """A console on stdout (or stderr). Not a terminal: no colours and no width limit, so a
    piped table keeps every character of every cell (rich would wrap it at 80 columns)."""
    from rich.console import Console  # imported by the commands that print tables

    stream = sys.stderr if stderr else sys.stdout
    if stream.isatty():
        return Console(file=stream, stderr=stderr)
    return Console(file=stream, width=100_000, no_color=True, highlight=False, soft_wrap=True)


def _text(value: Any) -> str:
    return "-" if value is None else str(value)


def table(
    title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]], *, plain: bool
) -> Table:
    """`plain` (not a terminal): no box characters, columns separated by spaces."""
    from rich import box
    from rich.table import Table

    t = Table(
        title=title,
        title_justify="left",
        show_edge=False,
        pad_edge=False,
        box=None if plain else box.HEAVY_HEAD,
    )
    for i, name in enumerate(columns):
        numeric = bool(rows) and all(isinstance(row[i], int | float) for row in rows)
        t.add_column(name, overflow="fold", no_wrap=False, justify="right" if numeric else "left")
    for row in rows:
        t.add_row(*(_text(v) for v in row))
    return t


def emit(
    output: str,
    *,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    empty: str,
    records: Any = None,
    title: str | None = None,
) -> None:
    """Print `rows` as a table, or `records` (default: one object per row keyed by column)
    as JSON; `empty` is the line a table prints instead of nothing."""
    if output == "json":
        import json  # not for a table (`status` prints one on every start)

        if records is None:
            records = [dict(zip(columns, row, strict=True)) for row in rows]
        click.echo(json.dumps(records, indent=2, default=str))
        return
    if not rows:
        click.echo(empty)
        return
    if title is None and not sys.stdout.isatty():
        lines = plain_table(columns, rows)
        if lines is not None:
            click.echo("\n".join(lines))
            return
    out = console()
    out.print(table(title, columns, rows, plain=not out.is_terminal))


#: Cells rich renders other than as their characters: markup tags (`[bold]`), emoji codes
#: (`:smile:`), anything but printable ASCII (tabs, control and wide characters).
_RICH_SPECIAL = re.compile(r"[^\x20-\x7e]|\[|:\S*?:")
#: Wider than this, rich's table (on a console 100,000 columns wide) is left to fold it.
_PLAIN_MAX_WIDTH = 10_000


def plain_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str] | None:
    """The lines rich prints for `table(None, columns, rows, plain=True)` on a console that
    is not a terminal (no box, columns two spaces apart, each padded to its width, numbers
    right-justified), without importing rich (about a fifth of `triggerd status`'s CPU when
    piped). None when a cell or header is one rich would render differently: then rich
    prints it."""
    cells = [[str(c) for c in columns], *([_text(v) for v in row] for row in rows)]
    if any(_RICH_SPECIAL.search(cell) for line in cells for cell in line):
        return None
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    if not all(widths) or sum(widths) + 2 * len(widths) > _PLAIN_MAX_WIDTH:
        return None
    right = [
        bool(rows) and all(isinstance(row[i], int | float) for row in rows)
        for i in range(len(columns))
    ]
    return [
        "  ".join(
            cell.rjust(w) if r else cell.ljust(w)
            for cell, w, r in zip(line, widths, right, strict=True)
        )
        for line in cells
    ]
