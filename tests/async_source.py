"""Async sources under test (directory, s3), driven as the daemon's accept loop drives them."""

from __future__ import annotations

import time

from bench.harness import commit
from triggerd.state.base import StateStore
from triggerd.types import Record, Source

#: The trigger the sources under test belong to (their checkpoints' scope).
TRIGGER = "src"


async def pump(
    source: Source,
    store: StateStore,
    count: int,
    timeout_s: float = 15.0,
    *,
    ack: bool = True,
) -> list[Record]:
    """Receive `count` records; commit each batch (events and checkpoints in one transaction)
    and ack it, unless `ack` is false (received, never committed: a crash)."""
    got: list[Record] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < count and time.monotonic() < deadline:
        batch = await source.receive(count - len(got), 0.2)
        if batch and ack:
            await commit(source, store, TRIGGER, batch)
        got.extend(batch)
    assert len(got) == count, f"expected {count} records, got {len(got)}"
    return got


def events_of(records: list[Record]) -> list[tuple[str, str]]:
    """(eventName, key) of S3 event records, sorted."""
    return sorted((r.payload["eventName"], r.payload["s3"]["object"]["key"]) for r in records)
