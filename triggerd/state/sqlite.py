"""The embedded SQLite state store.

One connection, owned by one dedicated worker thread: every operation is a plain function run
on that thread, so the event loop never blocks and writes are serialised by construction (a
transaction never interleaves with another one). The database runs in WAL mode with
`synchronous=FULL`, so a write is on disk when the awaiting call returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from triggerd.state.base import DlqEntry, NewEvent, QueuedEvent
from triggerd.types import Clock, SystemClock, TriggerdError

log = logging.getLogger(__name__)

T = TypeVar("T")

MEMORY_PATH = ":memory:"
BUSY_TIMEOUT_MS = 5000

#: Each entry migrates the schema from version i to i + 1.
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE checkpoints (
            scope TEXT NOT NULL,
            key TEXT NOT NULL,
            value TEXT NOT NULL,
            updated_at REAL NOT NULL,
            PRIMARY KEY (scope, key)
        ) WITHOUT ROWID""",
        """CREATE TABLE queue (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            trigger TEXT NOT NULL,
            function TEXT NOT NULL,
            payload BLOB NOT NULL,
            request_id TEXT NOT NULL UNIQUE,
            enqueued_at REAL NOT NULL,
            available_at REAL NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            lease_until REAL
        )""",
        "CREATE INDEX queue_claim ON queue (trigger, available_at)",
        """CREATE TABLE dlq (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            trigger TEXT NOT NULL,
            function TEXT NOT NULL,
            destination TEXT NOT NULL,
            condition TEXT NOT NULL,
            created_at REAL NOT NULL,
            record BLOB NOT NULL
        )""",
        "CREATE INDEX dlq_trigger ON dlq (trigger, created_at)",
    ),
)

#: The schema version this code writes.
SCHEMA_VERSION = len(_MIGRATIONS)

_UPSERT_CHECKPOINT = (
    "INSERT INTO checkpoints (scope, key, value, updated_at) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (scope, key) DO UPDATE SET "
    "value = excluded.value, updated_at = excluded.updated_at"
)
_DELETE_CHECKPOINT = "DELETE FROM checkpoints WHERE scope = ? AND key = ?"
_LIST_CHECKPOINTS_RANGE = (
    "SELECT key, value FROM checkpoints WHERE scope = ? AND key >= ? AND key < ? ORDER BY key"
)
_LIST_CHECKPOINTS_FROM = (
    "SELECT key, value FROM checkpoints WHERE scope = ? AND key >= ? ORDER BY key"
)
_INSERT_EVENT = (
    "INSERT INTO queue (trigger, function, payload, request_id, enqueued_at, available_at) "
    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (request_id) DO NOTHING"
)
_SELECT_CLAIMABLE = (
    "SELECT id, trigger, function, payload, request_id, enqueued_at, attempts FROM queue "
    "WHERE trigger = ? AND available_at <= ? AND (lease_until IS NULL OR lease_until <= ?) "
    "ORDER BY available_at, id LIMIT ?"
)
_DLQ_COLUMNS = "id, trigger, function, destination, condition, created_at, record"


class StateStoreError(TriggerdError):
    """The state store failed, or was used while not open."""


class StateStoreClosedError(StateStoreError):
    """A method was called on a state store that is closed (or was never opened)."""


def prefix_upper_bound(prefix: str) -> str | None:
    """The smallest string greater than every string that starts with `prefix`.

    SQLite compares TEXT with memcmp over UTF-8, which orders like code points, so
    `prefix <= key < bound` selects exactly the keys starting with `prefix` (and uses the
    primary key), with no LIKE wildcards to escape. None means there is no upper bound.
    """
    chars = list(prefix)
    while chars:
        code = ord(chars[-1]) + 1
        if 0xD800 <= code <= 0xDFFF:  # surrogates cannot be encoded: skip past them
            code = 0xE000
        if code <= 0x10FFFF:
            chars[-1] = chr(code)
            return "".join(chars)
        chars.pop()
    return None


class SQLiteStateStore:
    """The `StateStore` on an SQLite file (or ":memory:")."""

    def __init__(self, path: str, *, clock: Clock | None = None) -> None:
        self._path = path
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._executor: ThreadPoolExecutor | None = None
        #: Created, used and closed on the worker thread only.
        self._conn: sqlite3.Connection | None = None
        self._closed = False
        self._open_lock = asyncio.Lock()

    @property
    def path(self) -> str:
        return self._path

    # ---- lifecycle ----

    async def open(self) -> None:
        async with self._open_lock:
            if self._closed:
                raise StateStoreClosedError("the state store is closed; create a new one")
            if self._conn is not None:
                return
            executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="triggerd-sqlite")
            loop = asyncio.get_running_loop()
            try:
                conn, version = await loop.run_in_executor(executor, _connect, self._path)
            except BaseException:
                executor.shutdown(wait=False)
                raise
            self._executor, self._conn = executor, conn
        log.info("state.opened", extra={"path": self._path, "schema_version": version})

    async def close(self) -> None:
        async with self._open_lock:
            if self._closed:
                return
            self._closed = True
            executor, conn = self._executor, self._conn
            self._executor = self._conn = None
            if executor is None or conn is None:
                return
            loop = asyncio.get_running_loop()
            try:
                # Queued after every operation already submitted, so those finish first.
                await loop.run_in_executor(executor, conn.close)
            finally:
                executor.shutdown(wait=False)
        log.info("state.closed", extra={"path": self._path})

    # ---- checkpoints ----

    async def get_checkpoint(self, scope: str, key: str) -> str | None:
        def op(conn: sqlite3.Connection) -> str | None:
            row = conn.execute(
                "SELECT value FROM checkpoints WHERE scope = ? AND key = ?", (scope, key)
            ).fetchone()
            return None if row is None else str(row[0])

        return await self._run(op)

    async def set_checkpoints(self, scope: str, items: Mapping[str, str | None]) -> None:
        if not items:
            return
        now = self._clock.time()
        entries = dict(items)
        await self._write(lambda conn: _write_checkpoints(conn, scope, entries, now))

    async def list_checkpoints(self, scope: str, prefix: str = "") -> dict[str, str]:
        upper = prefix_upper_bound(prefix)

        def op(conn: sqlite3.Connection) -> dict[str, str]:
            if upper is None:
                rows = conn.execute(_LIST_CHECKPOINTS_FROM, (scope, prefix))
            else:
                rows = conn.execute(_LIST_CHECKPOINTS_RANGE, (scope, prefix, upper))
            return {str(key): str(value) for key, value in rows}

        return await self._run(op)

    # ---- the durable async queue ----

    async def enqueue(
        self,
        events: Sequence[NewEvent],
        checkpoints: Mapping[str, Mapping[str, str | None]] | None = None,
    ) -> None:
        rows = [
            (e.trigger, e.function, e.payload, e.request_id, e.enqueued_at, e.available_at)
            for e in events
        ]
        scopes = {scope: dict(items) for scope, items in (checkpoints or {}).items()}
        if not rows and not any(scopes.values()):
            return
        now = self._clock.time()

        def op(conn: sqlite3.Connection) -> None:
            conn.executemany(_INSERT_EVENT, rows)
            for scope, items in scopes.items():
                _write_checkpoints(conn, scope, items, now)

        await self._write(op)

    async def claim(
        self, trigger: str, limit: int, lease_s: float, now: float
    ) -> list[QueuedEvent]:
        if limit <= 0:
            return []
        lease_until = now + lease_s

        def op(conn: sqlite3.Connection) -> list[QueuedEvent]:
            rows = conn.execute(_SELECT_CLAIMABLE, (trigger, now, now, limit)).fetchall()
            conn.executemany(
                "UPDATE queue SET lease_until = ? WHERE id = ?",
                [(lease_until, row[0]) for row in rows],
            )
            return [_queued_event(row) for row in rows]

        return await self._write(op)

    async def extend_lease(self, event_ids: Sequence[int], lease_s: float, now: float) -> None:
        if not event_ids:
            return
        params = [(now + lease_s, event_id) for event_id in event_ids]
        await self._write(
            lambda conn: conn.executemany("UPDATE queue SET lease_until = ? WHERE id = ?", params)
        )

    async def release(self, event_id: int, *, available_at: float, attempts: int) -> None:
        """Unknown ids (already completed) are ignored."""
        await self._write(
            lambda conn: conn.execute(
                "UPDATE queue SET lease_until = NULL, available_at = ?, attempts = ? WHERE id = ?",
                (available_at, attempts, event_id),
            )
        )

    async def complete(self, event_id: int) -> None:
        """Unknown ids are ignored."""
        await self._write(lambda conn: conn.execute("DELETE FROM queue WHERE id = ?", (event_id,)))

    async def queue_depth(self, trigger: str | None = None) -> int:
        """All queued events (claimed or not), of one trigger or of all."""

        def op(conn: sqlite3.Connection) -> int:
            if trigger is None:
                row = conn.execute("SELECT COUNT(*) FROM queue").fetchone()
            else:
                row = conn.execute("SELECT COUNT(*) FROM queue WHERE trigger = ?", (trigger,))
                row = row.fetchone()
            return int(row[0])

        return await self._run(op)

    async def recover_leases(self) -> int:
        def op(conn: sqlite3.Connection) -> int:
            cursor = conn.execute(
                "UPDATE queue SET lease_until = NULL WHERE lease_until IS NOT NULL"
            )
            return int(cursor.rowcount)

        count = await self._write(op)
        if count:
            log.info("state.leases_recovered", extra={"path": self._path, "count": count})
        return count

    # ---- the DLQ index ----

    async def dlq_add(
        self,
        *,
        trigger: str,
        function: str,
        destination: str,
        condition: str,
        created_at: float,
        record: bytes,
    ) -> int:
        params = (trigger, function, destination, condition, created_at, record)

        def op(conn: sqlite3.Connection) -> int:
            cursor = conn.execute(
                "INSERT INTO dlq (trigger, function, destination, condition, created_at, record)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                params,
            )
            return int(cursor.lastrowid or 0)

        return await self._write(op)

    async def dlq_list(self, trigger: str | None = None, limit: int = 100) -> list[DlqEntry]:
        """Newest first (by created_at, then by insertion order)."""

        def op(conn: sqlite3.Connection) -> list[DlqEntry]:
            if trigger is None:
                sql = f"SELECT {_DLQ_COLUMNS} FROM dlq ORDER BY created_at DESC, id DESC LIMIT ?"
                rows = conn.execute(sql, (limit,))
            else:
                sql = (
                    f"SELECT {_DLQ_COLUMNS} FROM dlq WHERE trigger = ? "
                    "ORDER BY created_at DESC, id DESC LIMIT ?"
                )
                rows = conn.execute(sql, (trigger, limit))
            return [_dlq_entry(row) for row in rows]

        return await self._run(op)

    async def dlq_get(self, entry_id: int) -> DlqEntry | None:
        def op(conn: sqlite3.Connection) -> DlqEntry | None:
            sql = f"SELECT {_DLQ_COLUMNS} FROM dlq WHERE id = ?"
            row = conn.execute(sql, (entry_id,)).fetchone()
            return None if row is None else _dlq_entry(row)

        return await self._run(op)

    async def dlq_delete(self, entry_id: int) -> None:
        await self._write(lambda conn: conn.execute("DELETE FROM dlq WHERE id = ?", (entry_id,)))

    # ---- plumbing ----

    async def _run(self, op: Callable[[sqlite3.Connection], T]) -> T:
        """Run `op` on the worker thread (reads; writes go through `_write`)."""
        if self._closed:
            raise StateStoreClosedError(f"the state store {self._path!r} is closed")
        executor, conn = self._executor, self._conn
        if executor is None or conn is None:
            raise StateStoreClosedError(f"the state store {self._path!r} is not open")
        loop = asyncio.get_running_loop()
        try:
            # If the caller is cancelled, the operation still runs to its end on the thread:
            # a transaction is never cut in half.
            return await loop.run_in_executor(executor, op, conn)
        except sqlite3.Error as exc:
            raise StateStoreError(f"state store {self._path!r}: {exc}") from exc

    async def _write(self, op: Callable[[sqlite3.Connection], T]) -> T:
        """Run `op` in one write transaction, committed (durably) before this returns."""
        return await self._run(lambda conn: _in_transaction(conn, op))


def _connect(path: str) -> tuple[sqlite3.Connection, int]:
    """Open the connection and bring the schema up to date (runs on the worker thread)."""
    if path != MEMORY_PATH:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    # isolation_level=None: no implicit transactions; we BEGIN and COMMIT explicitly.
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        version = _in_transaction(conn, _migrate)
    except BaseException:
        conn.close()
        raise
    return conn, version


def _migrate(conn: sqlite3.Connection) -> int:
    conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    current = 0 if row is None else int(row[0])
    if current > SCHEMA_VERSION:
        raise StateStoreError(
            f"the state database has schema version {current}, newer than this triggerd "
            f"supports ({SCHEMA_VERSION}); upgrade triggerd"
        )
    for version in range(current, SCHEMA_VERSION):
        for statement in _MIGRATIONS[version]:
            conn.execute(statement)
        log.info("state.migrated", extra={"schema_version": version + 1})
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (str(SCHEMA_VERSION),),
    )
    return SCHEMA_VERSION


def _in_transaction(conn: sqlite3.Connection, op: Callable[[sqlite3.Connection], T]) -> T:
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = op(conn)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):  # keep the original error
                conn.execute("ROLLBACK")
        raise
    return result


def _write_checkpoints(
    conn: sqlite3.Connection, scope: str, items: Mapping[str, str | None], now: float
) -> None:
    upserts = [(scope, key, value, now) for key, value in items.items() if value is not None]
    deletes = [(scope, key) for key, value in items.items() if value is None]
    if upserts:
        conn.executemany(_UPSERT_CHECKPOINT, upserts)
    if deletes:
        conn.executemany(_DELETE_CHECKPOINT, deletes)


def _queued_event(row: Sequence[Any]) -> QueuedEvent:
    return QueuedEvent(
        id=int(row[0]),
        trigger=str(row[1]),
        function=str(row[2]),
        payload=bytes(row[3]),
        request_id=str(row[4]),
        enqueued_at=float(row[5]),
        attempts=int(row[6]),
    )


def _dlq_entry(row: Sequence[Any]) -> DlqEntry:
    return DlqEntry(
        id=int(row[0]),
        trigger=str(row[1]),
        function=str(row[2]),
        destination=str(row[3]),
        condition=str(row[4]),
        created_at=float(row[5]),
        record=bytes(row[6]),
    )
