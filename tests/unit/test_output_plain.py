"""A piped table is printed without rich when rich would print exactly its characters: the
lines must be rich's own, byte for byte."""

from __future__ import annotations

import io
import random
from typing import Any

import pytest
from rich.console import Console

from triggerd.cli import output
from triggerd.cli.output import plain_table, table


def rich_lines(columns: list[str], rows: list[list[Any]]) -> str:
    """What `emit` printed before: rich's table on a console that is not a terminal."""
    buf = io.StringIO()
    console = Console(file=buf, width=100_000, no_color=True, highlight=False, soft_wrap=True)
    console.print(table(None, columns, rows, plain=True))
    return buf.getvalue()


_CHARS = "abcxyz ABC-_./=,;()0123456789:"


def _cell(rng: random.Random) -> Any:
    kind = rng.randrange(7)
    if kind == 0:
        return None
    if kind == 1:
        return rng.randrange(-5, 100_000)
    if kind == 2:
        return rng.choice([0.5, 12.25, 3.0, 1e-05])
    if kind == 3:
        return ""
    text = "".join(rng.choice(_CHARS) for _ in range(rng.randrange(1, 30)))
    return text.replace("::", ":")  # two colons can make an emoji code: left to rich


def test_plain_tables_are_rich_s_lines_byte_for_byte() -> None:
    rng = random.Random(21)
    compared = 0
    for _ in range(300):
        columns = [f"col{i}" + "x" * rng.randrange(3) for i in range(rng.randrange(1, 7))]
        numeric = [rng.random() < 0.3 for _ in columns]
        rows = [
            [rng.randrange(1000) if n else _cell(rng) for n in numeric]
            for _ in range(rng.randrange(1, 8))
        ]
        lines = plain_table(columns, rows)
        if lines is None:
            continue
        compared += 1
        assert "\n".join(lines) + "\n" == rich_lines(columns, rows), (columns, rows)
    assert compared > 150  # the rest hold two colons (an emoji code, maybe): rich prints those


def test_the_status_table_of_the_example_is_rich_s() -> None:
    columns = ["trigger", "source", "function", "state", "queued", "dlq", "reasons"]
    rows: list[list[Any]] = [
        ["inbox", "directory", "wordcount", "unknown", 0, 0, ""],
        ["invoke-api:wordcount", "invoke (Event)", "wordcount", None, 12, 3, "x; y"],
    ]
    lines = plain_table(columns, rows)
    assert lines is not None
    assert "\n".join(lines) + "\n" == rich_lines(columns, rows)


@pytest.mark.parametrize(
    "cell",
    ["[bold]x[/bold]", "a :smile: b", "tab\there", "two\nlines", "naïve", "wide 表"],
)
def test_cells_rich_renders_otherwise_are_left_to_rich(
    cell: str, capsys: pytest.CaptureFixture[str]
) -> None:
    columns, rows = ["name", "value"], [["a", cell]]
    assert plain_table(columns, rows) is None
    output.emit("table", columns=columns, rows=rows, empty="none")
    assert capsys.readouterr().out == rich_lines(columns, rows)
