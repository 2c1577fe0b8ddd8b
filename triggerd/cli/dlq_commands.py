"""The `triggerd dlq` commands (the work is in `dlq`)."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable

import click
import orjson

from triggerd.cli.dlq import Selection, list_entries, parse_since, purge, replay
from triggerd.cli.options import config_option
from triggerd.cli.output import output_option
from triggerd.config.model import ConfigBase
from triggerd.state.base import StateStore

__all__ = ["dlq"]


def with_store(
    config_path: str | None, action: Callable[[ConfigBase, StateStore], Awaitable[int]]
) -> None:
    from triggerd.cli.main import _with_store  # main registers this group: imported late

    _with_store(config_path, action)


@click.group()
def dlq() -> None:
    """Inspect, replay and purge records written to on-failure destinations."""


def _selection(
    ids: tuple[int, ...], all_: bool, trigger: str | None, since: str | None
) -> Selection:
    cutoff = None if since is None else parse_since(since, time.time())
    return Selection(ids, all_, trigger, cutoff)


selection_options = [
    click.argument("entry_ids", nargs=-1, type=int),
    click.option("--all", "all_", is_flag=True, help="Every entry (narrowed by the filters)"),
    click.option("--trigger", "-t", default=None, help="Only this trigger's entries"),
    click.option(
        "--since", default=None, help="Only entries since an ISO time or for a duration (1h)"
    ),
]


def _selected(f: Callable[..., None]) -> Callable[..., None]:
    for option in reversed(selection_options):
        f = option(f)
    return f


def _require(sel: Selection, verb: str) -> None:
    if sel.empty:
        raise click.UsageError(f"name the entries to {verb}: ID..., --all, --trigger or --since")
    if sel.ids and sel.all:
        raise click.UsageError("give entry IDs or --all, not both")


@dlq.command("list")
@click.option("--trigger", "-t", default=None, help="Only this trigger's entries")
@click.option("--since", default=None, help="Only entries since an ISO time or a duration (1h)")
@click.option(
    "--limit",
    "-n",
    type=click.IntRange(min=1),
    default=50,
    show_default=True,
    help="Show at most this many entries (the newest)",
)
@config_option
@output_option
def dlq_list(
    trigger: str | None, since: str | None, limit: int, config_path: str | None, output: str
) -> None:
    """List dead-lettered records, newest first (replayed ones say when)."""
    sel = _selection((), True, trigger, since)

    async def action(cfg: ConfigBase, store: StateStore) -> int:
        return await list_entries(store, sel, limit, output)

    with_store(config_path, action)


@dlq.command("show")
@click.argument("entry_id", type=int)
@config_option
def dlq_show(entry_id: int, config_path: str | None) -> None:
    """Print one dead-lettered record."""

    async def action(cfg: ConfigBase, store: StateStore) -> int:
        entry = await store.dlq_get(entry_id)
        if entry is None:
            click.echo(f"triggerd: no DLQ entry {entry_id}", err=True)
            return 1
        click.echo(json.dumps(orjson.loads(entry.record), indent=2))
        return 0

    with_store(config_path, action)


@dlq.command("replay")
@_selected
@click.option("--dry-run", is_flag=True, help="Say what would be replayed; change nothing")
@click.option(
    "--again", "--force", "again", is_flag=True, help="Replay entries replayed before too"
)
@config_option
def dlq_replay(
    entry_ids: tuple[int, ...],
    all_: bool,
    trigger: str | None,
    since: str | None,
    dry_run: bool,
    again: bool,
    config_path: str | None,
) -> None:
    """Put asynchronous invocations' events back on their trigger's queue; each entry once
    (--again to replay it once more)."""
    sel = _selection(entry_ids, all_, trigger, since)
    _require(sel, "replay")

    async def action(cfg: ConfigBase, store: StateStore) -> int:
        return await replay(cfg, store, sel, dry_run=dry_run, again=again)

    with_store(config_path, action)


@dlq.command("purge")
@_selected
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation")
@config_option
def dlq_purge(
    entry_ids: tuple[int, ...],
    all_: bool,
    trigger: str | None,
    since: str | None,
    yes: bool,
    config_path: str | None,
) -> None:
    """Delete entries from the state store's DLQ index (the records in the destinations
    stay). Asks first on a terminal; elsewhere --yes is required."""
    sel = _selection(entry_ids, all_, trigger, since)
    _require(sel, "purge")

    async def action(cfg: ConfigBase, store: StateStore) -> int:
        return await purge(store, sel, yes=yes)

    with_store(config_path, action)
