"""`triggerd state migrate --to postgresql://...`: copy a stopped daemon's SQLite state
(checkpoints, queued events, the DLQ index, paused triggers) into a PostgreSQL store.

The SQLite store is read with its daemon's lock held (a running daemon is refused, and none
can start during the copy) and never written. The copy is one PostgreSQL transaction: all
of it or nothing. Ids are kept (a DLQ entry's id is the key of its `dlq replay` marker), the
counters continue after them, and claims are dropped (the daemon that held them is stopped).
A PostgreSQL store that already holds state is refused unless `--force`, which empties it
first."""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from triggerd.cli.readstate import connect_read_only, require_store
from triggerd.state.guard import StoreGuard
from triggerd.state.pgschema import SCHEMA
from triggerd.state.postgres import PostgresStateStore
from triggerd.state.sqlite import MEMORY_PATH, StateStoreError
from triggerd.types import ExitCode, OperatorError

__all__ = ["MigrationCounts", "migrate_sqlite_to_postgres"]

_TABLES = ("queue", "checkpoints", "dlq", "paused_triggers", "sns_resources", "event_archive")


@dataclass(frozen=True, slots=True)
class MigrationCounts:
    checkpoints: int
    events: int
    dlq_entries: int
    paused: int
    sns_resources: int = 0
    archived_events: int = 0


@dataclass(frozen=True, slots=True)
class _Snapshot:
    checkpoints: list[tuple[Any, ...]]
    events: list[tuple[Any, ...]]
    dlq: list[tuple[Any, ...]]
    paused: list[tuple[Any, ...]]
    sns: list[tuple[Any, ...]]
    archive: list[tuple[Any, ...]]


def _read_sqlite(path: str) -> _Snapshot:
    """Everything in the SQLite store (blocking: run it on a thread)."""
    require_store(path)
    conn = connect_read_only(path)
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        trace = "trace_id" if _has_column(conn, "queue", "trace_id") else "NULL"
        last = "last_result" if _has_column(conn, "queue", "last_result") else "NULL"
        return _Snapshot(
            checkpoints=conn.execute(
                "SELECT scope, key, value, updated_at FROM checkpoints"
            ).fetchall(),
            events=conn.execute(
                "SELECT id, trigger, function, payload, request_id, enqueued_at, available_at, "
                f"attempts, {trace}, {last} FROM queue ORDER BY id"
            ).fetchall(),
            dlq=conn.execute(
                "SELECT id, trigger, function, destination, condition, created_at, record "
                "FROM dlq ORDER BY id"
            ).fetchall(),
            paused=(
                conn.execute("SELECT trigger, paused_at FROM paused_triggers").fetchall()
                if "paused_triggers" in tables
                else []
            ),
            sns=(
                conn.execute("SELECT arn, kind, doc, created_at FROM sns_resources").fetchall()
                if "sns_resources" in tables
                else []
            ),
            archive=(
                conn.execute(
                    "SELECT id, bus, event_id, ingested_at, event FROM event_archive ORDER BY id"
                ).fetchall()
                if "event_archive" in tables
                else []
            ),
        )
    except sqlite3.Error as exc:
        raise OperatorError(f"the state store {path} cannot be read ({exc})") from None
    finally:
        conn.close()


def _has_column(conn: sqlite3.Connection, table: str, column: str) -> bool:
    return any(row[1] == column for row in conn.execute(f"PRAGMA table_info({table})"))


async def migrate_sqlite_to_postgres(
    sqlite_db: str, work_dir: Path, target: PostgresStateStore, *, force: bool
) -> MigrationCounts:
    """Copy the SQLite store at `sqlite_db` into `target` (unopened); OperatorError (one
    line, exit status) for everything an operator has to fix."""
    if sqlite_db == MEMORY_PATH:
        raise OperatorError(
            "the state store is in memory (daemon.state): there is nothing to migrate",
            ExitCode.STATE_MISSING,
        )
    if not await asyncio.to_thread(Path(sqlite_db).exists):
        raise OperatorError(
            f"the state store {sqlite_db} does not exist (daemon.state names another file?)",
            ExitCode.STATE_MISSING,
        )
    guard = StoreGuard(sqlite_db, work_dir)
    await asyncio.to_thread(guard.acquire)  # refuses a running daemon (exit 6)
    try:
        snapshot = await asyncio.to_thread(_read_sqlite, sqlite_db)
        await target.open()
        try:
            await _copy(target, snapshot, force)
        except StateStoreError as exc:
            raise OperatorError(str(exc), ExitCode.STATE_UNWRITABLE) from None
        finally:
            await target.close()
    finally:
        guard.release()
    return MigrationCounts(
        checkpoints=len(snapshot.checkpoints),
        events=len(snapshot.events),
        dlq_entries=len(snapshot.dlq),
        paused=len(snapshot.paused),
        sns_resources=len(snapshot.sns),
        archived_events=len(snapshot.archive),
    )


async def _copy(target: PostgresStateStore, snap: _Snapshot, force: bool) -> None:
    async def op(conn: Any) -> None:
        async with conn.transaction():
            # No daemon may write while the copy runs (and a second copy waits).
            tables = ", ".join(f"{SCHEMA}.{t}" for t in _TABLES)
            await conn.execute(f"LOCK TABLE {tables} IN EXCLUSIVE MODE")
            counts = [
                await conn.fetchval(f"SELECT count(*) FROM (SELECT 1 FROM {SCHEMA}.{t} LIMIT 1) x")
                for t in _TABLES
            ]
            if any(counts) and not force:
                raise OperatorError(
                    f"the state store {target.display} already holds state: migrate into an "
                    "empty one, or add --force to empty it first (its events, checkpoints and "
                    "DLQ index are deleted)",
                    ExitCode.STATE_NOT_EMPTY,
                )
            if any(counts):
                await conn.execute(f"TRUNCATE {tables} RESTART IDENTITY")
            await _insert_all(conn, snap)

    await target.run_on_connection(op)


async def _insert_all(conn: Any, snap: _Snapshot) -> None:
    await conn.executemany(
        f"INSERT INTO {SCHEMA}.checkpoints (scope, key, value, updated_at) VALUES ($1, $2, $3, $4)",
        [(str(s), str(k), str(v), float(u)) for s, k, v, u in snap.checkpoints],
    )
    await conn.executemany(
        f"INSERT INTO {SCHEMA}.queue (id, trigger, function, payload, request_id, "
        "enqueued_at, available_at, attempts, trace_id, last_result) OVERRIDING SYSTEM VALUE "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        [
            (
                int(i),
                str(t),
                str(f),
                bytes(p),
                str(r),
                float(e),
                float(a),
                int(n),
                tr,
                None if lr is None else bytes(lr),
            )
            for i, t, f, p, r, e, a, n, tr, lr in snap.events
        ],
    )
    await conn.executemany(
        f"INSERT INTO {SCHEMA}.dlq (id, token, trigger, function, destination, condition, "
        "created_at, record) OVERRIDING SYSTEM VALUE "
        "VALUES ($1, $8, $2, $3, $4, $5, $6, $7)",
        [
            (int(i), str(t), str(f), str(d), str(c), float(at), bytes(rec), f"sqlite-{i}")
            for i, t, f, d, c, at, rec in snap.dlq
        ],
    )
    await conn.executemany(
        f"INSERT INTO {SCHEMA}.paused_triggers (trigger, paused_at) VALUES ($1, $2)",
        [(str(t), float(at)) for t, at in snap.paused],
    )
    await conn.executemany(
        f"INSERT INTO {SCHEMA}.sns_resources (arn, kind, doc, created_at) VALUES ($1, $2, $3, $4)",
        [(str(a), str(k), bytes(d), float(at)) for a, k, d, at in snap.sns],
    )
    await conn.executemany(
        f"INSERT INTO {SCHEMA}.event_archive (id, bus, event_id, ingested_at, event) "
        "OVERRIDING SYSTEM VALUE VALUES ($1, $2, $3, $4, $5)",
        [(int(i), str(b), str(e), float(at), bytes(ev)) for i, b, e, at, ev in snap.archive],
    )
    # New rows continue after the copied ids.
    for table in ("queue", "dlq", "event_archive"):
        await conn.execute(
            f"SELECT setval(pg_get_serial_sequence('{SCHEMA}.{table}', 'id'), "
            f"coalesce((SELECT max(id) FROM {SCHEMA}.{table}), 0) + 1, false)"
        )
