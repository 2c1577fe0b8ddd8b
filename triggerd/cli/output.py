"""How list commands print: a rich table for people (plain text, never cut short, when stdout
is not a terminal) or `--output json` for scripts; an empty result says so."""

from __future__ import annotations

import json
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
        if records is None:
            records = [dict(zip(columns, row, strict=True)) for row in rows]
        click.echo(json.dumps(records, indent=2, default=str))
        return
    if not rows:
        click.echo(empty)
        return
    out = console()
    out.print(table(title, columns, rows, plain=not out.is_terminal))
