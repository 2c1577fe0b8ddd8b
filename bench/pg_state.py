"""The durable async queue on the PostgreSQL state store, against a bare asyncpg loop and
against the SQLite store, all in the same run (a fresh database on the PostgreSQL server
that `TRIGGERD_BENCH_PG` names, default the machine's 127.0.0.1:5432 as postgres; created and
dropped here).

- Enqueue: `batch` callers each enqueue one event at a time (concurrent Invoke API `Event`
  calls); group commit puts what arrives during one COMMIT into the next. Baselines: a bare
  asyncpg loop inserting `batch` rows per transaction (the same INSERT ... unnest, the same
  table), and the SQLite store with the same callers.
- Drain: a backlog through `AsyncTrigger`'s invoke loop (claim with SKIP LOCKED and a lease,
  invoke an instant backend, complete), against a bare asyncpg loop that deletes
  `drain_batch` rows per transaction (SELECT ... FOR UPDATE SKIP LOCKED, DELETE), and against
  the same drain on the SQLite store.
- Memory: the process's RSS growth over the PostgreSQL drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from bench import BenchError, Row, run_async, triggerd_logs_at
from bench.async_queue import (
    PAYLOAD,
    TRIGGER,
    drain_trigger,
    fresh_store,
    new_event,
    triggerd_enqueue,
)
from triggerd.state.base import StateStore
from triggerd.state.pgwrites import INSERT_EVENTS
from triggerd.state.postgres import PostgresStateStore

NAME = "pg_state"
ADMIN_DSN = os.environ.get("TRIGGERD_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


@dataclass(frozen=True, slots=True)
class Settings:
    #: Concurrent callers (group commit) / rows per bare transaction.
    batches: tuple[int, ...] = (1, 16, 64, 256)
    #: Events per enqueue measurement (a tenth of it with batch 1).
    events: int = 20_000
    backlog: int = 20_000
    drain_batch: int = 64
    concurrency: int = 64


QUICK = Settings(batches=(1, 64), events=5_000, backlog=5_000)
SMOKE = Settings(batches=(1, 8), events=200, backlog=500, drain_batch=16, concurrency=16)


@contextlib.asynccontextmanager
async def fresh_database() -> AsyncIterator[str]:
    import asyncpg

    name = f"triggerd_bench_{uuid.uuid4().hex[:10]}"
    try:
        admin = await asyncpg.connect(ADMIN_DSN)
    except (OSError, asyncpg.PostgresError) as exc:
        raise BenchError(
            f"PostgreSQL ({ADMIN_DSN.split('@')[-1]}) cannot be reached: {exc}"
        ) from None
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        base = ADMIN_DSN.rsplit("/", 1)[0]
        yield f"{base}/{name}"
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def pg_store(url: str) -> PostgresStateStore:
    store = PostgresStateStore(url)
    await store.open()
    await store.run_on_connection(lambda c: c.execute("TRUNCATE triggerd.queue"))
    return store


async def raw_enqueue(url: str, batch: int, events: int) -> float:
    """Rows/s of a bare asyncpg loop inserting `batch` rows per transaction."""
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        now = time.time()
        n = 0
        started = time.perf_counter()
        while n < events:
            ids = [f"raw-{n + i}" for i in range(batch)]
            async with conn.transaction():
                await conn.execute(
                    INSERT_EVENTS,
                    [TRIGGER] * batch,
                    ["hello"] * batch,
                    [PAYLOAD] * batch,
                    ids,
                    [now] * batch,
                    [now] * batch,
                    [None] * batch,
                )
            n += batch
        return n / (time.perf_counter() - started)
    finally:
        await conn.execute("TRUNCATE triggerd.queue")
        await conn.close()


async def raw_drain(url: str, batch: int) -> float:
    """Rows/s of a bare asyncpg loop taking and deleting `batch` rows per transaction."""
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        n = 0
        started = time.perf_counter()
        while True:
            async with conn.transaction():
                ids = await conn.fetch(
                    "SELECT id FROM triggerd.queue WHERE trigger = $1 "
                    "ORDER BY available_at, id LIMIT $2 FOR UPDATE SKIP LOCKED",
                    TRIGGER,
                    batch,
                )
                await conn.execute(
                    "DELETE FROM triggerd.queue WHERE id = ANY($1::bigint[])", [r[0] for r in ids]
                )
            if not ids:
                return n / (time.perf_counter() - started)
            n += len(ids)
    finally:
        await conn.close()


async def queue_backlog(store: StateStore, count: int) -> None:
    now = time.time() - 1
    for start in range(0, count, 1000):
        await store.enqueue([new_event(n, now) for n in range(start, min(count, start + 1000))])


async def drain(root: Path, store: StateStore, concurrency: int, backlog: int) -> float:
    trigger = drain_trigger(root, store, concurrency)  # type: ignore[arg-type]
    started = time.perf_counter()
    async with asyncio.TaskGroup() as tg:
        tg.create_task(trigger.run())
        async with asyncio.timeout(600):
            while await store.queue_depth(TRIGGER):
                await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - started
        trigger.stop()
    return backlog / elapsed


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 1e6


async def enqueue_rows(url: str, root: Path, settings: Settings) -> list[Row]:
    rows: list[Row] = []
    for batch in settings.batches:
        events = settings.events // 10 if batch == 1 else settings.events
        raw = await raw_enqueue(url, batch, events)
        store = await pg_store(url)
        try:
            ours = await triggerd_enqueue(store, batch, events)
            per_commit = store.writes_committed / max(store.groups_committed, 1)
        finally:
            await store.close()
        lite = await fresh_store(root / "queue.db")
        try:
            sqlite_rate = await triggerd_enqueue(lite, batch, events)
        finally:
            await lite.close()
        what = f"enqueue events/s, {batch} concurrent callers"
        rows.append(
            Row(
                NAME,
                f"{what} (writes per commit {per_commit:.0f})",
                ours,
                raw,
                baseline_desc="bare asyncpg loop: INSERT ... unnest of N rows per transaction "
                "(N = the callers), same table",
                digits=0,
            )
        )
        rows.append(
            Row(
                NAME,
                f"{what}: PostgreSQL store vs SQLite store",
                ours,
                sqlite_rate,
                baseline_desc="the SQLite store (WAL, synchronous=FULL), same callers",
                digits=0,
            )
        )
    return rows


async def drain_rows(url: str, root: Path, settings: Settings) -> list[Row]:
    store = await pg_store(url)
    try:
        await queue_backlog(store, settings.backlog)
    finally:
        await store.close()
    raw = await raw_drain(url, settings.drain_batch)

    store = await pg_store(url)
    try:
        await queue_backlog(store, settings.backlog)
        before = rss_mb()
        ours = await drain(root, store, settings.concurrency, settings.backlog)
        growth = rss_mb() - before
    finally:
        await store.close()
    lite = await fresh_store(root / "drain.db", vacuum_delay_s=0.2)
    try:
        await queue_backlog(lite, settings.backlog)
        sqlite_rate = await drain(root, lite, settings.concurrency, settings.backlog)
    finally:
        await lite.close()
    what = f"drain events/s, backlog of {settings.backlog:,} (claim, invoke, complete)"
    return [
        Row(
            NAME,
            what,
            ours,
            raw,
            baseline_desc=f"bare asyncpg loop: SELECT ... FOR UPDATE SKIP LOCKED + DELETE of "
            f"{settings.drain_batch} rows per transaction",
            digits=0,
        ),
        Row(
            NAME,
            f"{what}: PostgreSQL store vs SQLite store",
            ours,
            sqlite_rate,
            baseline_desc="the same drain on the SQLite store",
            digits=0,
        ),
        Row(NAME, "RSS growth over the PostgreSQL drain (MB)", growth, digits=1),
    ]


async def measure(settings: Settings) -> list[Row]:
    with (
        triggerd_logs_at(logging.WARNING),
        tempfile.TemporaryDirectory(prefix="triggerd-bench-") as tmp,
    ):
        async with fresh_database() as url:
            await (await pg_store(url)).close()  # the schema, for the bare loops too
            rows = await enqueue_rows(url, Path(tmp), settings)
            rows += await drain_rows(url, Path(tmp), settings)
    return rows


def run(settings: Settings) -> list[Row]:
    return run_async(measure(settings))
