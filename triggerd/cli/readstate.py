"""Reading the state store for `triggerd status` without ever writing it.

The store (`state/sqlite.py`) creates a missing database and migrates an old one when it
opens: right for the daemon, wrong for a status command run by another user (under `sudo` it
would leave root-owned files the daemon cannot write) or while the daemon is down. This
opens the file with SQLite's read-only URI (`mode=ro`, plus `immutable=1` when the daemon is
not running), which writes nothing, and runs a few SELECTs on a worker thread."""

from __future__ import annotations

import os
import sqlite3
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from triggerd.state import MEMORY_PATH, REPLAYED_SCOPE
from triggerd.state.factory import is_postgres_url, postgres_store, sqlite_path
from triggerd.types import ExitCode, OperatorError

# The stores' own modules (state.sqlite, state.pgleases and the dataclasses they import)
# are imported by the PostgreSQL reader only: reading a SQLite file needs sqlite3 alone.

__all__ = [
    "StoreSnapshot",
    "connect_read_only",
    "read_snapshot",
    "read_snapshot_now",
    "require_store",
]

#: Dead-lettered records per trigger that `dlq replay` has not put back on their queue.
_NOT_REPLAYED = (
    "SELECT trigger, count(*) FROM dlq WHERE CAST(id AS TEXT) NOT IN "
    "(SELECT key FROM checkpoints WHERE scope = ?) GROUP BY trigger"
)


@dataclass(frozen=True, slots=True)
class StoreSnapshot:
    """What `status` shows from the store: per trigger (queue name), the async queue depth
    and the number of dead-lettered records not replayed yet."""

    path: str
    queued: dict[str, int]
    dead: dict[str, int]
    #: Triggers recorded as paused (`triggerd pause`), shown while the daemon is down.
    paused: frozenset[str] = frozenset()
    #: A PostgreSQL store's cluster: the daemons using it, seconds since their last
    #: heartbeat, and who holds which lease (JSON-ready dicts, ages on the database's clock).
    members: tuple[dict[str, Any], ...] = ()
    leases: tuple[dict[str, Any], ...] = ()


async def read_snapshot(state_url: str) -> StoreSnapshot:
    """Read the store named by `[daemon] state`; OperatorError (one line, exit status) when
    it is missing, not a triggerd store, locked or unreadable."""
    if is_postgres_url(state_url):
        return await _read_postgres(state_url)
    import asyncio  # a SQLite store is read without a loop too (read_snapshot_now)

    return await asyncio.to_thread(_read, sqlite_path(state_url))


def read_snapshot_now(state_url: str) -> StoreSnapshot:
    """`read_snapshot` of a SQLite store, blocking (no event loop needed)."""
    return _read(sqlite_path(state_url))


async def _read_postgres(state_url: str) -> StoreSnapshot:
    """The same from a PostgreSQL store, with SELECTs only (the schema is never created)."""
    from triggerd.state.sqlite import StateStoreError

    store = postgres_store(state_url)
    try:
        await store.open_without_migrating()
    except OperatorError as exc:
        if exc.exit_code == ExitCode.FAILURE:  # unreachable: for status, "cannot be read"
            raise OperatorError(str(exc), ExitCode.STATE_UNWRITABLE) from None
        raise
    try:
        return await store.run_on_connection(_pg_snapshot(store.display))
    except StateStoreError as exc:
        raise OperatorError(str(exc), ExitCode.STATE_UNWRITABLE) from None
    finally:
        await store.close()


def _pg_snapshot(display: str) -> Callable[[Any], Awaitable[StoreSnapshot]]:
    from triggerd.state import pgleases
    from triggerd.state.pgschema import SCHEMA  # its module: for a PostgreSQL store only

    async def op(conn: Any) -> StoreSnapshot:
        queued = await conn.fetch(f"SELECT trigger, count(*) FROM {SCHEMA}.queue GROUP BY 1")
        dead = await conn.fetch(
            f"SELECT trigger, count(*) FROM {SCHEMA}.dlq WHERE id::text NOT IN "
            f"(SELECT key FROM {SCHEMA}.checkpoints WHERE scope = $1) GROUP BY 1",
            REPLAYED_SCOPE,
        )
        paused = await conn.fetch(f"SELECT trigger FROM {SCHEMA}.paused_triggers")
        members = await conn.fetch(pgleases.MEMBERS)
        leases = await conn.fetch(pgleases.LIST_WITH_NOW)
        return StoreSnapshot(
            display,
            {str(r[0]): int(r[1]) for r in queued},
            {str(r[0]): int(r[1]) for r in dead},
            frozenset(str(r[0]) for r in paused),
            tuple(
                {
                    "member": str(r[0]),
                    "up_s": round(float(r[3]) - float(r[1]), 1),
                    "heartbeat_age_s": round(float(r[3]) - float(r[2]), 1),
                }
                for r in members
            ),
            tuple(_lease_row(tuple(r)) for r in leases),
        )

    return op


def _lease_row(row: tuple[Any, ...]) -> dict[str, Any]:
    from triggerd.state import pgleases

    info, now = pgleases.lease_info(row[:5]), float(row[5])
    held = info.holder is not None and info.expires_at > now
    return {
        "lease": info.name,
        "holder": info.holder if held else None,
        "epoch": info.epoch,
        "expires_in_s": round(info.expires_at - now, 1) if held else None,
        "renewed_s_ago": round(now - info.heartbeat, 1),
    }


def _read(path: str) -> StoreSnapshot:
    if path == MEMORY_PATH:
        raise OperatorError(
            "the state store is in memory (daemon.state): there is nothing to read",
            ExitCode.STATE_MISSING,
        )
    if not os.path.exists(path):
        raise OperatorError(
            f"the state store {path} does not exist (the daemon has not run with this config, "
            "or daemon.state names another file)",
            ExitCode.STATE_MISSING,
        )
    conn = connect_read_only(path)
    try:
        tables = _tables(conn, path)
        queued = dict(conn.execute("SELECT trigger, count(*) FROM queue GROUP BY trigger"))
        dead = dict(conn.execute(_NOT_REPLAYED, (REPLAYED_SCOPE,)))
        paused = (
            frozenset(str(r[0]) for r in conn.execute("SELECT trigger FROM paused_triggers"))
            if "paused_triggers" in tables
            else frozenset()
        )
    except sqlite3.Error as exc:
        raise _error(path, exc) from None
    finally:
        conn.close()
    return StoreSnapshot(path, {str(k): int(v) for k, v in queued.items()}, dead, paused)


def require_store(path: str) -> None:
    """OperatorError unless `path` holds triggerd's tables (a 0-byte file or another
    database is refused, before a command that opens the store to write would create the
    schema in it); reads only."""
    conn = connect_read_only(path)
    try:
        _tables(conn, path)
    except sqlite3.Error as exc:
        raise _error(path, exc) from None
    finally:
        conn.close()


def connect_read_only(path: str) -> sqlite3.Connection:
    # Read-only, a WAL database still gets -wal and -shm files when they are missing (SQLite
    # creates them to read): without a -wal file no writer has unsaved pages, so the file
    # alone is the whole store and `immutable` reads it without creating anything.
    options = "mode=ro" if os.path.exists(path + "-wal") else "mode=ro&immutable=1"
    uri = "file:" + urllib.parse.quote(path) + "?" + options
    try:
        return sqlite3.connect(uri, uri=True, timeout=5, isolation_level=None)
    except sqlite3.Error as exc:
        raise _error(path, exc) from None


def _tables(conn: sqlite3.Connection, path: str) -> set[str]:
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if not {"queue", "dlq", "checkpoints"} <= tables:
        raise OperatorError(
            f"the state store {path} holds no triggerd state (empty, or another database)",
            ExitCode.STATE_MISSING,
        )
    return tables


def _error(path: str, exc: sqlite3.Error) -> OperatorError:
    code = int(getattr(exc, "sqlite_errorcode", 0)) & 0xFF
    if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return OperatorError(
            f"the state store {path} is locked by another process ({exc})", ExitCode.STATE_LOCKED
        )
    if code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
        return OperatorError(f"the state store {path} is corrupt ({exc})", ExitCode.STATE_CORRUPT)
    if code in (sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM, sqlite3.SQLITE_IOERR):
        return OperatorError(
            f"the state store {path} cannot be read ({exc}): check the permissions of the file "
            "and its directory",
            ExitCode.STATE_UNWRITABLE,
        )
    return OperatorError(f"the state store {path} cannot be read ({exc})")
