"""The embedded SQLite state store.

One connection, owned by one dedicated worker thread: every operation is a plain function run
on that thread, so the event loop never blocks and writes are serialised by construction (a
transaction never interleaves with another one). The database runs in WAL mode with
`synchronous=FULL`, so a write is on disk when the awaiting call returns.

Group commit: writes (enqueues, completions, checkpoints, leases) are not one transaction
each. A write joins the store's pending group and its caller waits; while the thread commits
one group, the next one gathers every write that arrives meanwhile (up to `MAX_GROUP` writes),
and is then committed as one transaction with one fsync. Each caller is answered only after
the commit that holds its write ("202 means durable" and "acked means checkpointed" hold as
before); with no other write in progress a write is committed at once, so a lone caller
waits no longer than before. When a group fails, its writes are retried one transaction each,
so one bad write fails alone.
Completions are lazy: one waits up to LAZY_DELAY_S for other writes before its commit starts
(nobody waits on a completion but the event's own settling, which holds no invocation slot),
so a drain commits tens of them at once rather than one or two per fsync. Until then they go
only with a write that needs an fsync anyway (an enqueue): a claim or a lease extension, which
is committed without one, leaves them waiting rather than pay an fsync for them, so the
commits that answer enqueues (202s) do not queue behind fsyncs made for completions alone.

Freed pages go back to the file system: new databases use `auto_vacuum = INCREMENTAL` (older
ones are converted once, with a VACUUM, when opened), and a second after writes that deleted
rows (a drained backlog), the free pages are released if they are a good part of the file.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import os
import sqlite3
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from triggerd.state.base import MEMORY_PATH as MEMORY_PATH  # re-exported: its old home
from triggerd.state.base import ArchivedEvent, DlqEntry, NewEvent, QueuedEvent
from triggerd.types import Clock, ExitCode, OperatorError, SystemClock, TriggerdError

if TYPE_CHECKING:
    from triggerd.state.leases import Fence, LeaseInfo, LeaseTable

log = logging.getLogger(__name__)

T = TypeVar("T")

BUSY_TIMEOUT_MS = 5000
#: The WAL file is cut back to this size at checkpoints (bytes).
WAL_SIZE_LIMIT = 8 * 1024 * 1024
#: At most this many writes share one transaction.
MAX_GROUP = 1024
#: How long a completion may wait for other writes to share its commit (see `_write`).
LAZY_DELAY_S = 0.005
#: How long after writes that freed pages the free space is checked (and given back).
VACUUM_DELAY_S = 1.0
#: Free pages are given back when they are at least this share of the file (and this many).
VACUUM_FREE_SHARE = 0.25
VACUUM_MIN_PAGES = 64

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
    ("ALTER TABLE queue ADD COLUMN trace_id TEXT",),
    (
        """CREATE TABLE paused_triggers (
            trigger TEXT PRIMARY KEY,
            paused_at REAL NOT NULL
        ) WITHOUT ROWID""",
    ),
    (
        # An event bus's archive (`[event_buses.archive]`), replayed by `triggerd events
        # replay`: each event as it was put on the bus, by ingestion time.
        """CREATE TABLE event_archive (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            bus TEXT NOT NULL,
            event_id TEXT NOT NULL,
            ingested_at REAL NOT NULL,
            event BLOB NOT NULL
        )""",
        "CREATE INDEX event_archive_time ON event_archive (bus, ingested_at)",
    ),
    (
        # Topics and subscriptions created through the SNS API (triggerd.fanout.sns).
        """CREATE TABLE sns_resources (
            arn TEXT PRIMARY KEY,
            kind TEXT NOT NULL,
            doc BLOB NOT NULL,
            created_at REAL NOT NULL
        ) WITHOUT ROWID""",
    ),
    # The last failed attempt's outcome of a released event (QueuedEvent.last_result).
    ("ALTER TABLE queue ADD COLUMN last_result BLOB",),
)

#: The schema version this code writes.
SCHEMA_VERSION = len(_MIGRATIONS)

_LIST_CHECKPOINTS_RANGE = (
    "SELECT key, value FROM checkpoints WHERE scope = ? AND key >= ? AND key < ? ORDER BY key"
)
_LIST_CHECKPOINTS_FROM = (
    "SELECT key, value FROM checkpoints WHERE scope = ? AND key >= ? ORDER BY key"
)
_INSERT_EVENT = (
    "INSERT INTO queue (trigger, function, payload, request_id, enqueued_at, available_at, "
    "trace_id) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (request_id) DO NOTHING"
)
_SELECT_CLAIMABLE = (
    "SELECT id, trigger, function, payload, request_id, enqueued_at, attempts, trace_id, "
    "last_result FROM queue "
    "WHERE trigger = ? AND available_at <= ? AND (lease_until IS NULL OR lease_until <= ?) "
    "ORDER BY available_at, id LIMIT ?"
)
_DELETE_EVENT = "DELETE FROM queue WHERE id = ?"
#: Rows per statement of the multi-row forms below, largest first. Each executemany row is
#: a step of its own, and the sqlite3 module gives the GIL up and takes it back around every
#: step: with the event loop busy on the other thread, each taking back waited for it, and
#: a group commit of a dozen enqueues and completions waited dozens of times. A run of n
#: rows is written in a statement per binary digit of n (13 rows: 8 + 4 + 1), so the
#: statement cache holds at most eight texts of each form.
_CHUNKS = (128, 64, 32, 16, 8, 4, 2, 1)
_INSERT_EVENTS = {
    n: "INSERT INTO queue (trigger, function, payload, request_id, enqueued_at, available_at, "
    "trace_id) VALUES " + ", ".join(["(?, ?, ?, ?, ?, ?, ?)"] * n) + " "
    "ON CONFLICT (request_id) DO NOTHING"
    for n in _CHUNKS
}
_DELETE_EVENTS = {
    n: "DELETE FROM queue WHERE id IN (" + ", ".join(["?"] * n) + ")" for n in _CHUNKS
}
_SET_LEASES = {
    n: "UPDATE queue SET lease_until = ? WHERE id IN (" + ", ".join(["?"] * n) + ")"
    for n in _CHUNKS
}
#: Checkpoints are written the same way: an accept of a directory burst sets one per event.
_UPSERT_CHECKPOINTS = {
    n: "INSERT INTO checkpoints (scope, key, value, updated_at) VALUES "
    + ", ".join(["(?, ?, ?, ?)"] * n)
    + " ON CONFLICT (scope, key) DO UPDATE SET "
    "value = excluded.value, updated_at = excluded.updated_at"
    for n in _CHUNKS
}
_DELETE_CHECKPOINTS = {
    n: "DELETE FROM checkpoints WHERE scope = ? AND key IN (" + ", ".join(["?"] * n) + ")"
    for n in _CHUNKS
}
#: The claim condition's threshold per row (see _SELECT_CLAIMABLE), its minimum.
_SELECT_NEXT_DUE = (
    "SELECT MIN(MAX(available_at, COALESCE(lease_until, available_at))) FROM queue "
    "WHERE trigger = ?"
)
_DLQ_COLUMNS = "id, trigger, function, destination, condition, created_at, record"


class StateStoreError(TriggerdError):
    """The state store failed, or was used while not open."""


class StateStoreUnavailableError(StateStoreError):
    """The store's server (PostgreSQL) could not be reached, or the connection kept breaking,
    for longer than the store retries: nothing of the call was acknowledged."""


class StateStoreClosedError(StateStoreError):
    """A method was called on a state store that is closed (or was never opened)."""


class StateStoreOpenError(StateStoreError, OperatorError):
    """The store cannot be used at start: missing, corrupt, unwritable or locked
    (`exit_code` says which); the message is one line naming the file and the way out."""


#: Called on the store's thread at the start of every write transaction; raising an
#: sqlite3.Error there fails the write as SQLite would (tests inject a full disk this way).
WriteHook = Callable[[sqlite3.Connection], None]
#: Mode of a database file the store creates (SQLite gives its -wal and -shm files the same).
DEFAULT_FILE_MODE = 0o600
FRESH_START_HINT = "start with --accept-fresh-state to begin with an empty one"


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

    def __init__(
        self,
        path: str,
        *,
        clock: Clock | None = None,
        create: bool = True,
        check_integrity: bool = False,
        before_write: WriteHook | None = None,
        file_mode: int = DEFAULT_FILE_MODE,
        vacuum_delay_s: float = VACUUM_DELAY_S,
        lazy_delay_s: float = LAZY_DELAY_S,
    ) -> None:
        """`create=False` refuses a missing or empty database instead of starting one;
        `check_integrity` runs `PRAGMA integrity_check` on open (after an unclean stop);
        `vacuum_delay_s`: how long after writes that freed pages their release is tried;
        `lazy_delay_s`: how long a completion waits for other writes to share its commit."""
        self._path = path
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._options = _OpenOptions(create, check_integrity, file_mode)
        self._before_write = before_write
        self._executor: ThreadPoolExecutor | None = None
        #: Created, used and closed on the worker thread only.
        self._conn: sqlite3.Connection | None = None
        self._closed = False
        self._open_lock = asyncio.Lock()
        self._store_id = ""
        self._write_error: str | None = None
        #: Writes waiting for the next group commit, and whether one is on the thread now.
        self._pending: list[_Write[Any]] = []
        self._committing = False
        self._flush_scheduled = False
        #: Pending writes that start a commit at once (the others are lazy, see `_write`).
        self._eager = 0
        #: Runs while the oldest pending lazy write may still wait (see `_flush`).
        self._lazy_timer: asyncio.TimerHandle | None = None
        self._lazy_delay_s = lazy_delay_s
        self._idle = asyncio.Event()
        self._idle.set()
        self._vacuum_timer: asyncio.TimerHandle | None = None
        #: How many group commits ran, and how many writes they held (tests, benchmarks).
        self.groups_committed = 0
        self.writes_committed = 0
        #: Of those groups, the ones committed with an fsync (synchronous=FULL).
        self.durable_groups_committed = 0
        self._vacuum_delay_s = vacuum_delay_s
        #: Pages given back to the file system so far.
        self.pages_released = 0

    @property
    def path(self) -> str:
        return self._path

    @property
    def store_id(self) -> str:
        """The identity written into the database when it was created ("" until open)."""
        return self._store_id

    @property
    def write_error(self) -> str | None:
        """Why the last write failed (a full disk, a read-only file), None once one succeeds."""
        return self._write_error

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
                conn, version, store_id = await loop.run_in_executor(
                    executor, _connect, self._path, self._options
                )
            except (sqlite3.Error, OSError) as exc:
                executor.shutdown(wait=False)
                raise open_error(self._path, exc) from exc
            except BaseException:
                executor.shutdown(wait=False)
                raise
            self._executor, self._conn, self._store_id = executor, conn, store_id
        log.info("state.opened", extra={"path": self._path, "schema_version": version})

    async def close(self) -> None:
        async with self._open_lock:
            if self._closed:
                return
            self._closed = True
            if self._vacuum_timer is not None:
                self._vacuum_timer.cancel()
                self._vacuum_timer = None
            if self._lazy_timer is not None:
                self._lazy_timer.cancel()
                self._lazy_timer = None
            # Writes already accepted are committed and answered before the connection goes.
            if self._pending and not self._committing:
                self._flush()
            while self._pending or self._committing:
                self._idle.clear()
                await self._idle.wait()
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
            (
                e.trigger,
                e.function,
                e.payload,
                e.request_id,
                e.enqueued_at,
                e.available_at,
                e.trace_id,
            )
            for e in events
        ]
        if not checkpoints:
            if rows:
                await self._write(_InsertRows(rows))
            return
        scopes = {scope: dict(items) for scope, items in checkpoints.items()}
        if not rows and not any(scopes.values()):
            return
        now = self._clock.time()

        def op(conn: sqlite3.Connection) -> None:
            _insert_events(conn, rows)
            for scope, items in scopes.items():
                _write_checkpoints(conn, scope, items, now)

        await self._write(op)

    async def enqueue_unless_checkpoint(
        self, events: Sequence[NewEvent], scope: str, key: str, value: str
    ) -> bool:
        rows = [
            (
                e.trigger,
                e.function,
                e.payload,
                e.request_id,
                e.enqueued_at,
                e.available_at,
                e.trace_id,
            )
            for e in events
        ]
        now = self._clock.time()

        def op(conn: sqlite3.Connection) -> bool:
            # Inside BEGIN IMMEDIATE: no other writer runs between the check and the mark.
            found = conn.execute(
                "SELECT 1 FROM checkpoints WHERE scope = ? AND key = ?", (scope, key)
            ).fetchone()
            if found is not None:
                return False
            _insert_events(conn, rows)
            _write_checkpoints(conn, scope, {key: value}, now)
            return True

        return await self._write(op)

    async def claim(
        self, trigger: str, limit: int, lease_s: float, now: float
    ) -> list[QueuedEvent]:
        if limit <= 0:
            return []
        lease_until = now + lease_s

        def op(conn: sqlite3.Connection) -> list[QueuedEvent]:
            rows = conn.execute(_SELECT_CLAIMABLE, (trigger, now, now, limit)).fetchall()
            _set_leases(conn, lease_until, [row[0] for row in rows])
            return [_queued_event(row) for row in rows]

        # A lost claim only makes the event claimable again (as a crash does anyway).
        return await self._write(op, durable=False)

    async def extend_lease(self, event_ids: Sequence[int], lease_s: float, now: float) -> None:
        if not event_ids:
            return
        ids = list(event_ids)
        await self._write(lambda conn: _set_leases(conn, now + lease_s, ids), durable=False)

    async def release(
        self,
        event_id: int,
        *,
        available_at: float,
        attempts: int,
        last_result: bytes | None = None,
    ) -> None:
        """Unknown ids (already completed) are ignored."""
        await self._write(
            lambda conn: conn.execute(
                "UPDATE queue SET lease_until = NULL, available_at = ?, attempts = ?, "
                "last_result = coalesce(?, last_result) WHERE id = ?",
                (available_at, attempts, last_result, event_id),
            )
        )

    async def complete(self, event_id: int) -> None:
        """Unknown ids are ignored."""
        await self.complete_later(event_id)

    def complete_later(self, event_id: int) -> asyncio.Future[None]:
        """`complete` without a coroutine to await it (`CompletesLater`): the future is
        answered once the commit that holds the deletion is durable."""
        return self._submit(_DeleteEvent(event_id), frees=True, durable=True, lazy=True)

    async def next_due(self, trigger: str) -> float | None:
        def op(conn: sqlite3.Connection) -> float | None:
            row = conn.execute(_SELECT_NEXT_DUE, (trigger,)).fetchone()
            return None if row is None or row[0] is None else float(row[0])

        return await self._run(op)

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

    async def queued(self, request_ids: Sequence[str]) -> set[str]:
        ids = list(request_ids)

        def op(conn: sqlite3.Connection) -> set[str]:
            found: set[str] = set()
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows = conn.execute(
                    f"SELECT request_id FROM queue WHERE request_id IN ({marks})", chunk
                )
                found.update(str(r[0]) for r in rows)
            return found

        return await self._run(op) if ids else set()

    # ---- leases of singleton sources: one daemon owns an SQLite store (the StoreGuard
    # refuses a second), so every lease is granted, at epoch 1, and fences always pass ----

    #: Leases need no renewal (triggerd.state.leases keeps no timer for them).
    grants_forever = True

    async def acquire_lease(self, name: str, timeout_s: float) -> int | None:
        self._require_open_for_leases()
        return 1

    async def renew_lease(self, name: str, epoch: int, timeout_s: float) -> bool:
        self._require_open_for_leases()
        return epoch == 1

    async def release_lease(self, name: str, epoch: int) -> None:
        return None

    async def enqueue_fenced(
        self,
        fence: Fence,
        events: Sequence[NewEvent],
        checkpoints: Mapping[str, Mapping[str, str | None]] | None = None,
    ) -> None:
        await self.enqueue(events, checkpoints)

    async def leases(self) -> list[LeaseInfo]:
        return []

    async def lease_table(self, prefix: str) -> LeaseTable:
        """One daemon and no lease rows: nothing to balance."""
        from triggerd.state.leases import LeaseTable

        self._require_open_for_leases()
        return LeaseTable(member="local", members=("local",), leases=(), now=self._clock.time())

    async def steal_lease(self, name: str, epoch: int, timeout_s: float) -> int | None:
        self._require_open_for_leases()
        return 1

    def _require_open_for_leases(self) -> None:
        if self._closed:
            raise StateStoreClosedError("the state store is closed")

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
        await self._write(
            lambda conn: conn.execute("DELETE FROM dlq WHERE id = ?", (entry_id,)), frees=True
        )

    # ---- paused triggers ----

    async def set_paused(self, trigger: str, paused: bool) -> None:
        now = self._clock.time()

        def op(conn: sqlite3.Connection) -> None:
            if paused:
                conn.execute(
                    "INSERT INTO paused_triggers (trigger, paused_at) VALUES (?, ?) "
                    "ON CONFLICT (trigger) DO NOTHING",
                    (trigger, now),
                )
            else:
                conn.execute("DELETE FROM paused_triggers WHERE trigger = ?", (trigger,))

        await self._write(op)

    async def paused_triggers(self) -> set[str]:
        def op(conn: sqlite3.Connection) -> set[str]:
            return {str(row[0]) for row in conn.execute("SELECT trigger FROM paused_triggers")}

        return await self._run(op)

    # ---- SNS topics and subscriptions created through the API ----

    async def sns_put(self, arn: str, kind: str, doc: bytes) -> None:
        now = self._clock.time()

        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO sns_resources (arn, kind, doc, created_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (arn) DO UPDATE SET kind = excluded.kind, doc = excluded.doc",
                (arn, kind, doc, now),
            )

        await self._write(op)

    async def sns_delete(self, arn: str) -> None:
        def op(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM sns_resources WHERE arn = ?", (arn,))

        await self._write(op)

    async def sns_list(self) -> list[tuple[str, str, bytes]]:
        def op(conn: sqlite3.Connection) -> list[tuple[str, str, bytes]]:
            rows = conn.execute("SELECT arn, kind, doc FROM sns_resources ORDER BY created_at, arn")
            return [(str(a), str(k), bytes(d)) for a, k, d in rows]

        return await self._run(op)

    # ---- plumbing ----

    # ---- event bus archives ----

    async def archive_events(self, bus: str, events: Sequence[ArchivedEvent]) -> None:
        rows = [(bus, e.event_id, e.ingested_at, e.event) for e in events]
        if rows:
            await self._write(_ArchiveRows(rows))

    async def archived_events(
        self, bus: str, *, since: float, until: float, after_id: int = 0, limit: int = 500
    ) -> list[ArchivedEvent]:
        def op(conn: sqlite3.Connection) -> list[ArchivedEvent]:
            rows = conn.execute(
                "SELECT id, event_id, ingested_at, event FROM event_archive "
                "WHERE bus = ? AND ingested_at >= ? AND ingested_at < ? AND id > ? "
                "ORDER BY id LIMIT ?",
                (bus, since, until, after_id, limit),
            ).fetchall()
            return [ArchivedEvent(str(r[1]), float(r[2]), bytes(r[3]), int(r[0])) for r in rows]

        return await self._run(op)

    async def prune_archive(self, bus: str, before: float) -> int:
        def op(conn: sqlite3.Connection) -> int:
            cur = conn.execute(
                "DELETE FROM event_archive WHERE bus = ? AND ingested_at < ?", (bus, before)
            )
            return int(cur.rowcount)

        return await self._write(op, frees=True)

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

    async def _write(
        self,
        op: Callable[[sqlite3.Connection], T],
        *,
        frees: bool = False,
        durable: bool = True,
        lazy: bool = False,
    ) -> T:
        """Run `op` in the next group commit; returns (or raises) once that group is committed
        durably. If the caller is cancelled, the write is still committed (or not) with its
        group: a transaction is never cut in half. `frees`: the write deletes rows.

        `durable=False` (leases): a group of such writes only is committed without an fsync
        (synchronous=NORMAL); a crash may lose it, never a write committed after it, since
        the WAL is synced in order by the next durable commit.

        `lazy=True` (completions): the write does not start a commit by itself until it has
        waited `lazy_delay_s` (LAZY_DELAY_S); before that, a durable write's commit (an
        enqueue's) takes it along, a commit without an fsync (a claim's) leaves it waiting."""
        return await self._submit(op, frees=frees, durable=durable, lazy=lazy)

    def _submit(
        self, op: Callable[[sqlite3.Connection], T], *, frees: bool, durable: bool, lazy: bool
    ) -> asyncio.Future[T]:
        """`_write`'s work, without awaiting: the write joins the pending group and the future
        is answered once that group is committed (cancelling the future does not take the
        write back)."""
        if self._closed:
            raise StateStoreClosedError(f"the state store {self._path!r} is closed")
        if self._executor is None or self._conn is None:
            raise StateStoreClosedError(f"the state store {self._path!r} is not open")
        loop = asyncio.get_running_loop()
        write: _Write[T] = _Write(op, loop.create_future(), frees, durable, lazy)
        self._pending.append(write)
        self._idle.clear()
        if lazy:
            if self._lazy_timer is None:
                self._lazy_timer = loop.call_later(self._lazy_delay_s, self._lazy_due)
        else:
            self._eager += 1
            if not self._committing and not self._flush_scheduled:
                # On the next turn of the loop: the writes of callers already runnable join in.
                self._flush_scheduled = True
                loop.call_soon(self._flush)
        return write.future

    def _lazy_due(self) -> None:
        """The oldest lazy write has waited long enough: commit (after the one under way)."""
        self._lazy_timer = None
        self._eager += 1  # counted as eager from now on, until the next group takes it
        for write in self._pending:
            # Waited enough: no longer held back, even once a later lazy write's timer runs.
            write.lazy = False
        self._flush()

    def _flush(self) -> None:
        """Hand the pending writes to the thread as one transaction (unless one is running:
        its completion starts the next)."""
        self._flush_scheduled = False
        if self._committing:
            return
        executor, conn = self._executor, self._conn
        if not self._pending or executor is None or conn is None:
            if not self._pending:
                self._eager = 0
            self._idle.set()
            return
        pending = self._pending
        held: list[_Write[Any]] = []
        if self._lazy_timer is not None and not any(
            write.durable and not write.lazy for write in pending
        ):
            # Lazy writes that may still wait do not make a commit without an fsync (a claim,
            # a lease extension) pay one: they wait for a durable write, or for their timer.
            # All of them, not only those among the next MAX_GROUP writes: held at the head of
            # the queue, those would fill every next group and hold back the writes behind.
            held = [write for write in pending if write.lazy]
            if held:
                pending = [write for write in pending if not write.lazy]
        group, rest = pending[:MAX_GROUP], pending[MAX_GROUP:]
        durable = any(write.durable for write in group)
        self._pending = held + rest if held else rest
        if rest:
            self._eager = 1  # the rest go with the next group, as soon as this one is done
        else:
            self._eager = 0
            if not held and self._lazy_timer is not None:
                self._lazy_timer.cancel()
                self._lazy_timer = None
        if not group:
            return
        self._committing = True
        loop = asyncio.get_running_loop()
        done = loop.run_in_executor(executor, _commit_group, conn, group, self._before_write)
        done.add_done_callback(functools.partial(self._committed, group, durable))

    def _committed(
        self, group: list[_Write[Any]], durable: bool, done: asyncio.Future[_Outcomes]
    ) -> None:
        self._committing = False
        try:
            outcomes = done.result()
        except BaseException as exc:  # the thread pool itself failed (interpreter exit)
            outcomes = [exc] * len(group)
        self.groups_committed += 1
        self.durable_groups_committed += durable
        frees = False
        for write, outcome in zip(group, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                if isinstance(outcome, sqlite3.Error):
                    self._write_error = str(outcome)
                    error: BaseException = StateStoreError(f"state store {self._path!r}: {outcome}")
                    error.__cause__ = outcome
                else:
                    error = outcome
                if not write.future.done():
                    write.future.set_exception(error)
                continue
            self._write_error = None
            self.writes_committed += 1
            frees = frees or write.frees
            if not write.future.done():
                write.future.set_result(outcome.value)
        if frees:
            self._schedule_vacuum()
        if self._eager or self._closed or not self._pending:
            self._flush()
        # else: lazy writes only, which wait for their timer (or for the next eager write)

    def _schedule_vacuum(self) -> None:
        if self._vacuum_timer is None and not self._closed and self._path != MEMORY_PATH:
            loop = asyncio.get_running_loop()
            self._vacuum_timer = loop.call_later(self._vacuum_delay_s, self._vacuum_due)

    def _vacuum_due(self) -> None:
        self._vacuum_timer = None
        executor, conn = self._executor, self._conn
        if self._closed or executor is None or conn is None:
            return
        # Queued on the store's thread behind the writes under way; never on the loop.
        loop = asyncio.get_running_loop()
        done = loop.run_in_executor(executor, _release_free_pages, conn, self._path)
        done.add_done_callback(self._released)

    def _released(self, done: asyncio.Future[int]) -> None:
        exc = done.exception()
        if exc is not None:  # only space is lost: the next drain tries again
            log.warning("state.release_pages_failed", extra={"path": self._path, "error": str(exc)})
            return
        self.pages_released += done.result()


class _Value:
    """A write's result (a wrapper, so that a result can never be mistaken for an error)."""

    __slots__ = ("value",)

    def __init__(self, value: object) -> None:
        self.value = value


_Outcomes = list["_Value | BaseException"]
_NONE = _Value(None)


class _InsertRows:
    """An enqueue without checkpoints: its rows join those of the enqueues next to it in
    the group (most of a group, under load)."""

    __slots__ = ("rows",)

    def __init__(self, rows: list[tuple[Any, ...]]) -> None:
        self.rows = rows

    def __call__(self, conn: sqlite3.Connection) -> None:
        _insert_events(conn, self.rows)


class _DeleteEvent:
    """A completion (unknown ids are ignored), as a named operation."""

    __slots__ = ("event_id",)

    def __init__(self, event_id: int) -> None:
        self.event_id = event_id

    def __call__(self, conn: sqlite3.Connection) -> None:
        conn.execute(_DELETE_EVENT, (self.event_id,))


class _ArchiveRows:
    """The archive's insert, as a named operation (like `_InsertRows`)."""

    __slots__ = ("rows",)

    def __init__(self, rows: list[tuple[Any, ...]]) -> None:
        self.rows = rows

    def __call__(self, conn: sqlite3.Connection) -> None:
        conn.executemany(
            "INSERT INTO event_archive (bus, event_id, ingested_at, event) VALUES (?, ?, ?, ?)",
            self.rows,
        )


class _Write(Generic[T]):
    """One caller's write, waiting for its group commit."""

    __slots__ = ("durable", "frees", "future", "lazy", "op")

    def __init__(
        self,
        op: Callable[[sqlite3.Connection], T],
        future: asyncio.Future[T],
        frees: bool,
        durable: bool,
        lazy: bool = False,
    ) -> None:
        self.op = op
        self.future = future
        self.frees = frees
        self.durable = durable
        #: A completion that may wait for company (`_write`'s `lazy`).
        self.lazy = lazy


def _commit_group(
    conn: sqlite3.Connection, group: Sequence[_Write[Any]], hook: WriteHook | None
) -> _Outcomes:
    """Commit every write of `group` in one transaction (runs on the store's thread); if that
    fails, each write alone, so that a failing write fails only its own caller."""
    if any(write.durable for write in group):
        return _commit_writes(conn, group, hook)
    conn.execute("PRAGMA synchronous = NORMAL")
    try:
        return _commit_writes(conn, group, hook)
    finally:
        conn.execute("PRAGMA synchronous = FULL")


def _chunked(
    conn: sqlite3.Connection,
    forms: Mapping[int, str],
    values: Sequence[Any],
    width: int,
    lead: Sequence[Any] = (),
) -> None:
    """Run `forms[n]` over consecutive runs of `values` (`width` parameters per row), largest
    runs first (see `_CHUNKS`); `lead`: parameters that come before each run's."""
    start, count = 0, len(values) // width
    for size in _CHUNKS:
        while count >= size:
            end = start + size * width
            conn.execute(forms[size], [*lead, *values[start:end]] if lead else values[start:end])
            start, count = end, count - size


def _insert_events(conn: sqlite3.Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    """Insert queue rows in order (a request id already queued is skipped, as the first of
    two alike in `rows` wins), a few rows per statement."""
    _chunked(conn, _INSERT_EVENTS, [value for row in rows for value in row], 7)


def _delete_events(conn: sqlite3.Connection, ids: Sequence[int]) -> None:
    _chunked(conn, _DELETE_EVENTS, ids, 1)


def _set_leases(conn: sqlite3.Connection, lease_until: float, ids: Sequence[int]) -> None:
    """`lease_until` on the events `ids`, a few events per statement."""
    _chunked(conn, _SET_LEASES, ids, 1, (lease_until,))


def _apply(conn: sqlite3.Connection, group: Sequence[_Write[Any]]) -> _Outcomes:
    """Run the writes in order, consecutive enqueues (and consecutive completions) together,
    a few rows per statement."""
    outcomes: _Outcomes = []
    rows: list[tuple[Any, ...]] = []
    deletes: list[int] = []
    for write in group:
        op = write.op
        if type(op) is _InsertRows:
            if deletes:
                _delete_events(conn, deletes)
                deletes = []
            rows.extend(op.rows)
            outcomes.append(_NONE)
            continue
        if rows:
            _insert_events(conn, rows)
            rows = []
        if type(op) is _DeleteEvent:
            deletes.append(op.event_id)
            outcomes.append(_NONE)
            continue
        if deletes:
            _delete_events(conn, deletes)
            deletes = []
        outcomes.append(_Value(op(conn)))
    if rows:
        _insert_events(conn, rows)
    if deletes:
        _delete_events(conn, deletes)
    return outcomes


def _commit_writes(
    conn: sqlite3.Connection, group: Sequence[_Write[Any]], hook: WriteHook | None
) -> _Outcomes:

    def all_of(conn: sqlite3.Connection) -> _Outcomes:
        if hook is not None:
            hook(conn)
        return _apply(conn, group)

    try:
        return _in_transaction(conn, all_of)
    except Exception as exc:
        if len(group) == 1:
            return [exc]
    outcomes: _Outcomes = []
    for write in group:

        def one(
            conn: sqlite3.Connection, op: Callable[[sqlite3.Connection], Any] = write.op
        ) -> Any:
            if hook is not None:
                hook(conn)
            return op(conn)

        try:
            outcomes.append(_Value(_in_transaction(conn, one)))
        except Exception as exc:
            outcomes.append(exc)
    return outcomes


def _release_free_pages(conn: sqlite3.Connection, path: str) -> int:
    """Give free pages back to the file system when they are a good part of the file
    (runs on the store's thread); how many were released."""
    free = int(conn.execute("PRAGMA freelist_count").fetchone()[0])
    pages = int(conn.execute("PRAGMA page_count").fetchone()[0])
    if free < VACUUM_MIN_PAGES or free < pages * VACUUM_FREE_SHARE:
        return 0
    # executescript steps the pragma to its end (execute() would free a single page), in
    # its own transaction; then the WAL is emptied so the file's new size is the real one.
    conn.executescript("PRAGMA incremental_vacuum")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    log.info("state.pages_released", extra={"path": path, "pages": free, "of": pages})
    return free


class _OpenOptions:
    __slots__ = ("check_integrity", "create", "file_mode")

    def __init__(self, create: bool, check_integrity: bool, file_mode: int) -> None:
        self.create = create
        self.check_integrity = check_integrity
        self.file_mode = file_mode


def _connect(path: str, options: _OpenOptions) -> tuple[sqlite3.Connection, int, str]:
    """Open the connection and bring the schema up to date (runs on the worker thread)."""
    if path != MEMORY_PATH:
        _prepare_file(path, options)
    # isolation_level=None: no implicit transactions; we BEGIN and COMMIT explicitly.
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        # The first read: "file is not a database" for anything that is not SQLite.
        empty = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0
        if empty and not options.create and path != MEMORY_PATH:
            raise StateStoreOpenError(
                f"the state store {path} is empty, but triggerd ran with a state store "
                f"before: restore it, or {FRESH_START_HINT}",
                ExitCode.STATE_MISSING,
            )
        if options.check_integrity and not empty:
            _check_integrity(conn, path)
        if empty:  # takes effect when the first table is created
            conn.execute(f"PRAGMA auto_vacuum = {_INCREMENTAL}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        # After a burst grew the WAL, a checkpoint cuts it back to this size.
        conn.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")
        conn.execute("PRAGMA foreign_keys = ON")
        version, store_id = _in_transaction(conn, _migrate)
        if path != MEMORY_PATH:
            _migrate_to_incremental_vacuum(conn, path)
    except BaseException:
        conn.close()
        raise
    return conn, version, store_id


#: `PRAGMA auto_vacuum` values.
_INCREMENTAL = 2


def _migrate_to_incremental_vacuum(conn: sqlite3.Connection, path: str) -> None:
    """A database created before triggerd used incremental auto-vacuum gets it now: once,
    with a VACUUM (which rewrites the file; it cannot run in a transaction, hence apart from
    the schema migrations, and keyed on the file's own setting rather than a version)."""
    if int(conn.execute("PRAGMA auto_vacuum").fetchone()[0]) == _INCREMENTAL:
        return
    started = time.monotonic()
    conn.execute(f"PRAGMA auto_vacuum = {_INCREMENTAL}")
    conn.execute("VACUUM")
    log.info(
        "state.migrated",
        extra={
            "path": path,
            "auto_vacuum": "incremental",
            "duration_s": time.monotonic() - started,
        },
    )


def _prepare_file(path: str, options: _OpenOptions) -> None:
    """Refuse a missing file unless creating is allowed; create it with the store's mode
    (SQLite would use the umask's); refuse a file shorter than its own header says."""
    if not os.path.exists(path):
        if not options.create:
            raise StateStoreOpenError(
                f"the state store {path} does not exist, but triggerd ran with a state store "
                f"before: restore it, or {FRESH_START_HINT}",
                ExitCode.STATE_MISSING,
            )
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, options.file_mode))
        return
    if not os.path.exists(path + "-wal"):
        _check_length(path)


#: SQLite's file header (https://www.sqlite.org/fileformat.html#the_database_header).
_MAGIC = b"SQLite format 3\x00"


def _check_length(path: str) -> None:
    """A database cut short (a partial copy, a truncated restore) fails only when the missing
    pages are read, maybe days later: compare the size the header records with the file's.
    Only without a WAL file: with one, the header may predate pages still in the WAL."""
    with open(path, "rb") as f:
        header = f.read(100)
        size = os.fstat(f.fileno()).st_size
    if len(header) < 100 or not header.startswith(_MAGIC):
        return  # empty, or not SQLite at all: the first read reports it
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    # The recorded size is valid only when the change counter matches version-valid-for.
    if pages and header[24:28] == header[92:96] and pages * page_size > size:
        raise StateStoreOpenError(
            f"the state store {path} is truncated ({size} of {pages * page_size} bytes): "
            f"restore it from a backup, or move it aside and {FRESH_START_HINT}",
            ExitCode.STATE_CORRUPT,
        )


def _check_integrity(conn: sqlite3.Connection, path: str) -> None:
    started = time.monotonic()
    try:
        rows = [str(row[0]) for row in conn.execute("PRAGMA integrity_check(5)")]
    except sqlite3.DatabaseError as exc:  # damage bad enough to stop the check itself
        rows = [str(exc)]
    log.info(
        "state.integrity_checked",
        extra={"path": path, "ok": rows == ["ok"], "duration_s": time.monotonic() - started},
    )
    if rows != ["ok"]:
        raise StateStoreOpenError(
            f"the state store {path} failed its integrity check ({'; '.join(rows[:2])}): "
            f"restore it from a backup, or move it aside and {FRESH_START_HINT}",
            ExitCode.STATE_CORRUPT,
        )


_CORRUPT = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})
_LOCKED = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})
_UNWRITABLE = frozenset(
    {
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_PERM,
    }
)


def open_error(path: str, exc: BaseException) -> StateStoreOpenError:
    """The one-line reason a store could not be opened, with the exit status that says why."""
    if isinstance(exc, StateStoreOpenError):
        return exc
    if isinstance(exc, OSError):
        reason = exc.strerror or str(exc)
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT):
            return _unwritable(path, reason)
        return StateStoreOpenError(f"the state store {path} cannot be opened: {reason}")
    code = int(getattr(exc, "sqlite_errorcode", 0)) & 0xFF
    if code in _CORRUPT:
        return StateStoreOpenError(
            f"the state store {path} is corrupt ({exc}): restore it from a backup, or move it "
            f"aside and {FRESH_START_HINT}",
            ExitCode.STATE_CORRUPT,
        )
    if code in _LOCKED:
        return StateStoreOpenError(
            f"the state store {path} is locked by another process ({exc})",
            ExitCode.STATE_LOCKED,
        )
    if code in _UNWRITABLE:
        return _unwritable(path, str(exc))
    if isinstance(exc, StateStoreError):
        return StateStoreOpenError(str(exc))
    return StateStoreOpenError(f"the state store {path} cannot be opened: {exc}")


def _unwritable(path: str, reason: str) -> StateStoreOpenError:
    return StateStoreOpenError(
        f"the state store {path} cannot be written ({reason}): check the permissions and free "
        "space of the file and its directory (and ReadWritePaths= under systemd)",
        ExitCode.STATE_UNWRITABLE,
    )


def _migrate(conn: sqlite3.Connection) -> tuple[int, str]:
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
    # The store's identity: the daemon keeps it beside the store to notice a replaced one.
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('store_id', ?) ON CONFLICT (key) DO NOTHING",
        (str(uuid.uuid4()),),
    )
    row = conn.execute("SELECT value FROM meta WHERE key = 'store_id'").fetchone()
    return SCHEMA_VERSION, str(row[0])


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
    """Upsert (a None value: delete) the checkpoints `items` of `scope`, a few rows per
    statement (see `_CHUNKS`)."""
    upserts: list[Any] = []
    deletes: list[str] = []
    for key, value in items.items():
        if value is None:
            deletes.append(key)
        else:
            upserts += (scope, key, value, now)
    if upserts:
        _chunked(conn, _UPSERT_CHECKPOINTS, upserts, 4)
    if deletes:
        _chunked(conn, _DELETE_CHECKPOINTS, deletes, 1, (scope,))


def _queued_event(row: Sequence[Any]) -> QueuedEvent:
    return QueuedEvent(
        id=int(row[0]),
        trigger=str(row[1]),
        function=str(row[2]),
        payload=bytes(row[3]),
        request_id=str(row[4]),
        enqueued_at=float(row[5]),
        attempts=int(row[6]),
        trace_id=None if row[7] is None else str(row[7]),
        last_result=None if row[8] is None else bytes(row[8]),
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
