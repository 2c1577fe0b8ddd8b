"""The embedded SQLite state store.

One connection, owned by one dedicated worker thread: every operation is a plain function run
on that thread, so the event loop never blocks and writes are serialised by construction (a
transaction never interleaves with another one). The database runs in WAL mode with
`synchronous=FULL`, so a write is on disk when the awaiting call returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import sqlite3
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from triggerd.state.base import DlqEntry, NewEvent, QueuedEvent
from triggerd.types import Clock, ExitCode, OperatorError, SystemClock, TriggerdError

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
    ("ALTER TABLE queue ADD COLUMN trace_id TEXT",),
    (
        """CREATE TABLE paused_triggers (
            trigger TEXT PRIMARY KEY,
            paused_at REAL NOT NULL
        ) WITHOUT ROWID""",
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
    "INSERT INTO queue (trigger, function, payload, request_id, enqueued_at, available_at, "
    "trace_id) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (request_id) DO NOTHING"
)
_SELECT_CLAIMABLE = (
    "SELECT id, trigger, function, payload, request_id, enqueued_at, attempts, trace_id "
    "FROM queue "
    "WHERE trigger = ? AND available_at <= ? AND (lease_until IS NULL OR lease_until <= ?) "
    "ORDER BY available_at, id LIMIT ?"
)
_DLQ_COLUMNS = "id, trigger, function, destination, condition, created_at, record"


class StateStoreError(TriggerdError):
    """The state store failed, or was used while not open."""


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
    ) -> None:
        """`create=False` refuses a missing or empty database instead of starting one;
        `check_integrity` runs `PRAGMA integrity_check` on open (after an unclean stop)."""
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
        scopes = {scope: dict(items) for scope, items in (checkpoints or {}).items()}
        if not rows and not any(scopes.values()):
            return
        now = self._clock.time()

        def op(conn: sqlite3.Connection) -> None:
            conn.executemany(_INSERT_EVENT, rows)
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
            conn.executemany(_INSERT_EVENT, rows)
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
        hook = self._before_write

        def body(conn: sqlite3.Connection) -> T:
            if hook is not None:
                hook(conn)
            return op(conn)

        try:
            result = await self._run(lambda conn: _in_transaction(conn, body))
        except StateStoreClosedError:
            raise
        except StateStoreError as exc:
            self._write_error = str(exc.__cause__ or exc)
            raise
        self._write_error = None
        return result


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
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        version, store_id = _in_transaction(conn, _migrate)
    except BaseException:
        conn.close()
        raise
    return conn, version, store_id


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
        trace_id=None if row[7] is None else str(row[7]),
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
