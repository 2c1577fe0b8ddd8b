"""`triggerd dlq list|show|replay|purge`: the state store's index of records written to
on-failure destinations.

Replay is idempotent: the event goes back on its trigger's queue and a marker saying so is
written in the same transaction (checkpoint scope `REPLAYED_SCOPE`, key = the entry id), so a
second replay of the same entry (a retried script, a crash after the write) is skipped unless
`--again` asks for it. The entry itself stays listed (marked replayed) until purged."""

from __future__ import annotations

import re
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import click
import orjson

from triggerd.cli.output import console, emit
from triggerd.config.model import ConfigBase
from triggerd.state import REPLAYED_SCOPE
from triggerd.state.base import DlqEntry, NewEvent, StateStore

__all__ = ["REPLAYED_SCOPE", "Selection", "parse_since"]
ALREADY_REPLAYED = "already replayed (--again replays it once more)"
#: More entries than any DLQ index holds in practice: "all of them" for the store's list.
_ALL = 10_000_000
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(value: str, now: float) -> float:
    """Epoch seconds from an ISO 8601 time (UTC unless it has an offset) or a duration back
    from now (`90s`, `15m`, `1h`, `2d`, `1h30m`); click.BadParameter otherwise."""
    text = value.strip()
    if text and _DURATION.sub("", text) == "" and _DURATION.search(text):
        return now - sum(float(n) * _UNIT_S[u] for n, u in _DURATION.findall(text))
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is neither an ISO time (2026-12-06T10:00:00Z) nor a duration (1h, 30m)",
            param_hint="--since",
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


@dataclass(frozen=True, slots=True)
class Selection:
    """Which entries a command acts on: ids, or every entry (of a trigger, since a time)."""

    ids: tuple[int, ...]
    all: bool
    trigger: str | None
    since: float | None

    @property
    def empty(self) -> bool:
        return not (self.ids or self.all or self.trigger or self.since is not None)

    async def entries(self, store: StateStore) -> list[DlqEntry]:
        if self.ids:
            found = [await store.dlq_get(i) for i in self.ids]
            chosen = [e for e in found if e is not None]
        else:
            chosen = await store.dlq_list(self.trigger, _ALL)
        return sorted(
            (
                e
                for e in chosen
                if (self.trigger is None or e.trigger == self.trigger)
                and (self.since is None or e.created_at >= self.since)
            ),
            key=lambda e: e.id,
        )


def when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def replayed_markers(store: StateStore) -> dict[int, str]:
    return {int(k): v for k, v in (await store.list_checkpoints(REPLAYED_SCOPE)).items()}


async def list_entries(store: StateStore, sel: Selection, limit: int, output: str) -> int:
    found = (await sel.entries(store))[::-1]  # newest first
    entries = found[:limit]
    if len(found) > limit:
        click.echo(
            f"triggerd: showing the newest {limit} of {len(found)} entries (-n to see more)",
            err=True,
        )
    marks = await replayed_markers(store)
    columns = ["id", "created", "trigger", "function", "condition", "destination", "replayed"]
    rows = [
        [
            e.id,
            when(e.created_at),
            e.trigger,
            e.function,
            e.condition,
            e.destination,
            _replayed_at(marks.get(e.id)),
        ]
        for e in entries
    ]
    records = [
        {**dict(zip(columns, row, strict=True)), "record": orjson.loads(e.record)}
        for row, e in zip(rows, entries, strict=True)
    ]
    emit(output, columns=columns, rows=rows, empty="no dead-letter records", records=records)
    return 0


def _replayed_at(marker: str | None) -> str | None:
    if marker is None:
        return None
    try:
        return when(float(orjson.loads(marker)["at"]))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return "yes"


def _queues(cfg: ConfigBase) -> set[str]:
    from triggerd.http.queues import queue_name

    names = {cfg.trigger_name(i) for i in range(len(cfg.trigger_list))}
    return names | {queue_name(fn) for fn in cfg.functions}


@dataclass
class ReplayPlan:
    todo: list[tuple[DlqEntry, bytes]]
    skipped: list[tuple[int, str]]


async def plan_replay(
    cfg: ConfigBase, store: StateStore, sel: Selection, *, again: bool
) -> ReplayPlan:
    marks = await replayed_markers(store)
    queues = _queues(cfg)
    plan = ReplayPlan([], [])
    for missing in sorted(set(sel.ids) - {e.id for e in await sel.entries(store)}):
        plan.skipped.append((missing, "no such entry"))
    for entry in await sel.entries(store):
        record: Any = orjson.loads(entry.record)
        if not isinstance(record, dict) or "requestPayload" not in record:
            plan.skipped.append(
                (entry.id, "not an asynchronous invocation record (it names a batch, not events)")
            )
        elif entry.id in marks and not again:
            plan.skipped.append((entry.id, ALREADY_REPLAYED))
        elif entry.trigger not in queues:
            plan.skipped.append((entry.id, f"trigger {entry.trigger!r} is not in the config"))
        else:
            plan.todo.append((entry, orjson.dumps(record["requestPayload"])))
    return plan


async def replay(
    cfg: ConfigBase, store: StateStore, sel: Selection, *, dry_run: bool, again: bool
) -> int:
    plan = await plan_replay(cfg, store, sel, again=again)
    for entry_id, reason in plan.skipped:
        click.echo(f"triggerd: skipped DLQ entry {entry_id}: {reason}", err=True)
    if dry_run:
        for entry, _ in plan.todo:
            click.echo(f"would replay DLQ entry {entry.id} onto {entry.trigger}")
        click.echo(f"dry run: {len(plan.todo)} to replay, {len(plan.skipped)} skipped")
        return 0
    return await carry_out(store, plan, again=again)


async def carry_out(store: StateStore, plan: ReplayPlan, *, again: bool) -> int:
    """Queue the plan's events. Without `again`, each entry's marker is checked again in the
    transaction that queues it: another replay may have taken it since the plan was made."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    replayed = 0
    with Progress(
        TextColumn("replaying"),
        BarColumn(),
        MofNCompleteColumn(),
        console=console(stderr=True),
        disable=not sys.stderr.isatty(),
    ) as progress:
        task = progress.add_task("replay", total=len(plan.todo))
        for entry, payload in plan.todo:
            if await _replay_one(store, entry, payload, again=again):
                replayed += 1
            else:
                plan.skipped.append((entry.id, ALREADY_REPLAYED))
                progress.console.print(
                    f"triggerd: skipped DLQ entry {entry.id}: {ALREADY_REPLAYED}",
                    markup=False,
                    highlight=False,
                )
            progress.advance(task)
    click.echo(f"replayed {replayed} DLQ entries, skipped {len(plan.skipped)}")
    # Already replayed is the idempotent outcome; an entry that cannot be replayed is not.
    return 1 if any(not r.startswith("already replayed") for _, r in plan.skipped) else 0


async def _replay_one(store: StateStore, entry: DlqEntry, payload: bytes, *, again: bool) -> bool:
    """Queue the entry's event and mark it replayed, in one transaction; False (nothing
    queued) when it is marked already and `again` was not asked for."""
    now = time.time()
    request_id = str(uuid.uuid4())
    event = NewEvent(
        trigger=entry.trigger,
        function=entry.function,
        payload=payload,
        request_id=request_id,
        enqueued_at=now,
        available_at=now,
    )
    marker = orjson.dumps({"at": now, "request_id": request_id}).decode()
    if again:
        await store.enqueue([event], checkpoints={REPLAYED_SCOPE: {str(entry.id): marker}})
        return True
    return await store.enqueue_unless_checkpoint([event], REPLAYED_SCOPE, str(entry.id), marker)


async def purge(store: StateStore, sel: Selection, *, yes: bool) -> int:
    """Exit 0; 1 when an entry ID named does not exist (as replay) or the prompt is
    declined; 2 without --yes off a terminal."""
    entries = await sel.entries(store)
    missing = sorted(set(sel.ids) - {e.id for e in entries})
    for entry_id in missing:
        click.echo(f"triggerd: skipped DLQ entry {entry_id}: no such entry", err=True)
    if not entries:
        if not missing:
            click.echo("no dead-letter records")
        return 1 if missing else 0
    if not yes:
        if not sys.stdin.isatty():
            click.echo(
                f"triggerd: refusing to delete {len(entries)} DLQ entries without --yes "
                "(standard input is not a terminal to confirm on)",
                err=True,
            )
            return 2
        if not click.confirm(
            f"Delete {len(entries)} DLQ entries from the state store (the records in their "
            "destinations stay)?",
            default=False,
            err=True,
        ):
            click.echo("nothing deleted", err=True)
            return 1
    await _delete(store, [e.id for e in entries])
    click.echo(f"deleted {len(entries)} DLQ entries")
    return 1 if missing else 0


async def _delete(store: StateStore, ids: Sequence[int]) -> None:
    for entry_id in ids:
        await store.dlq_delete(entry_id)
    await store.set_checkpoints(REPLAYED_SCOPE, {str(i): None for i in ids})
