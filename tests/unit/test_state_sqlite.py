"""Unit tests of what is particular to the embedded SQLite store (its file, pragmas, query
plans and migrations); the state-store interface itself is tested against every store in
tests/integration/test_state_interface.py."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes import FakeClock
from tests.fakes import new_event as event
from triggerd.state.base import NewEvent, StateStore
from triggerd.state.sqlite import (
    _LIST_CHECKPOINTS_RANGE,
    _MIGRATIONS,
    SCHEMA_VERSION,
    SQLiteStateStore,
    StateStoreError,
    prefix_upper_bound,
)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "nested" / "dir" / "state.db"


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[SQLiteStateStore]:
    s = SQLiteStateStore(str(db_path), clock=FakeClock())
    await s.open()
    yield s
    await s.close()


async def reopen(db_path: Path) -> SQLiteStateStore:
    s = SQLiteStateStore(str(db_path))
    await s.open()
    return s


# ---- lifecycle and schema ----


def test_satisfies_the_state_store_protocol(db_path: Path) -> None:
    s: StateStore = SQLiteStateStore(str(db_path))
    assert s is not None


async def test_open_creates_parent_directory_and_versioned_schema(
    store: SQLiteStateStore, db_path: Path
) -> None:
    assert await asyncio.to_thread(db_path.is_file)
    with sqlite3.connect(db_path) as conn:
        version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    conn.close()
    assert version == (str(SCHEMA_VERSION),)
    assert {"meta", "checkpoints", "queue", "dlq"} <= tables
    assert "queue_claim" in indexes


async def test_connection_is_wal_synchronous_full_with_busy_timeout_and_foreign_keys(
    store: SQLiteStateStore,
) -> None:
    def pragmas(conn: sqlite3.Connection) -> tuple[Any, ...]:
        return tuple(
            conn.execute(f"PRAGMA {name}").fetchone()[0]
            for name in ("journal_mode", "synchronous", "busy_timeout", "foreign_keys")
        )

    journal, synchronous, busy, fks = await store._run(pragmas)
    assert journal == "wal"
    assert synchronous == 2  # FULL
    assert busy > 0
    assert fks == 1


async def test_open_refuses_a_newer_schema(db_path: Path) -> None:
    s = await reopen(db_path)
    await s.close()
    with sqlite3.connect(db_path) as conn:
        conn.execute("UPDATE meta SET value = '999' WHERE key = 'schema_version'")
    conn.close()
    with pytest.raises(StateStoreError, match="newer"):
        await SQLiteStateStore(str(db_path)).open()


async def test_memory_database_works() -> None:
    s = SQLiteStateStore(":memory:")
    await s.open()
    await s.enqueue([event("r1")], {"a": {"k": "v"}})
    assert await s.queue_depth() == 1
    assert await s.get_checkpoint("a", "k") == "v"
    await s.close()


# ---- checkpoints ----


async def test_checkpoint_records_updated_at_from_clock(
    store: SQLiteStateStore, db_path: Path
) -> None:
    await store.set_checkpoints("s", {"k": "v"})
    with sqlite3.connect(db_path) as conn:
        row = conn.execute("SELECT updated_at FROM checkpoints").fetchone()
    conn.close()
    assert row == (1_000.0,)


def test_prefix_upper_bound_edges() -> None:
    assert prefix_upper_bound("") is None
    assert prefix_upper_bound("ab") == "ac"
    assert prefix_upper_bound("a\U0010ffff") == "b"
    assert prefix_upper_bound("\U0010ffff") is None
    assert prefix_upper_bound("\ud7ff") == "\ue000"


async def test_list_checkpoints_with_fifty_thousand_keys_uses_the_primary_key(
    store: SQLiteStateStore, db_path: Path
) -> None:
    items: dict[str, str | None] = {
        f"dir{d:03}/file{f:03}": str(f) for d in range(100) for f in range(500)
    }
    await store.set_checkpoints("s3", items)

    result = await store.list_checkpoints("s3", "dir042/")
    assert len(result) == 500
    assert all(k.startswith("dir042/") for k in result)

    with sqlite3.connect(db_path) as conn:
        plan = " ".join(
            str(row[-1])
            for row in conn.execute(
                "EXPLAIN QUERY PLAN " + _LIST_CHECKPOINTS_RANGE, ("s3", "dir042/", "dir0420")
            )
        )
    conn.close()
    assert "SEARCH checkpoints USING PRIMARY KEY (scope=? AND key>? AND key<?)" in plan


# ---- migrations ----

TRACE = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"


async def test_a_version_1_store_gains_the_trace_column_and_keeps_its_events(
    db_path: Path,
) -> None:
    db_path.parent.mkdir(parents=True)
    with sqlite3.connect(db_path) as conn:
        conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        conn.execute("INSERT INTO meta VALUES ('schema_version', '1')")
        for statement in _MIGRATIONS[0]:
            conn.execute(statement)
        conn.execute(
            "INSERT INTO queue (trigger, function, payload, request_id, enqueued_at, "
            "available_at) VALUES ('t1', 'f1', x'7b7d', 'old', 100, 100)"
        )
    conn.close()
    s = await reopen(db_path)
    try:
        await s.enqueue([NewEvent("t1", "f1", b"{}", "new", 101.0, 101.0, trace_id=TRACE)])
        claimed = await s.claim("t1", 10, 30, now=200)
        assert [(e.request_id, e.trace_id) for e in claimed] == [("old", None), ("new", TRACE)]
    finally:
        await s.close()


async def test_a_version_2_store_gains_the_paused_table_and_keeps_its_checkpoints(
    db_path: Path,
) -> None:
    db_path.parent.mkdir(parents=True)
    with sqlite3.connect(db_path) as conn:
        conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        conn.execute("INSERT INTO meta VALUES ('schema_version', '2')")
        for statement in (*_MIGRATIONS[0], *_MIGRATIONS[1]):
            conn.execute(statement)
        conn.execute("INSERT INTO checkpoints VALUES ('t1', 'k', 'v', 1.0)")
    conn.close()
    s = await reopen(db_path)
    try:
        assert await s.get_checkpoint("t1", "k") == "v"
        await s.set_paused("t1", True)
        assert await s.paused_triggers() == {"t1"}
    finally:
        await s.close()
