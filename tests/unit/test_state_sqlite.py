"""Unit tests of the embedded SQLite state store, against a temp-file database."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes import FakeClock
from triggerd.state.base import NewEvent, StateStore
from triggerd.state.sqlite import (
    _LIST_CHECKPOINTS_RANGE,
    _MIGRATIONS,
    SCHEMA_VERSION,
    SQLiteStateStore,
    StateStoreClosedError,
    StateStoreError,
    prefix_upper_bound,
)


def event(
    request_id: str,
    *,
    trigger: str = "t1",
    function: str = "f1",
    at: float = 100.0,
    payload: bytes | None = None,
) -> NewEvent:
    return NewEvent(
        trigger=trigger,
        function=function,
        payload=payload if payload is not None else request_id.encode(),
        request_id=request_id,
        enqueued_at=at,
        available_at=at,
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


async def test_open_twice_is_idempotent_and_reopen_keeps_schema(db_path: Path) -> None:
    s = SQLiteStateStore(str(db_path))
    await s.open()
    await s.open()
    await s.set_checkpoints("a", {"k": "v"})
    await s.close()
    s2 = await reopen(db_path)
    assert await s2.get_checkpoint("a", "k") == "v"
    await s2.close()


async def test_open_refuses_a_newer_schema(db_path: Path) -> None:
    s = await reopen(db_path)
    await s.close()
    with sqlite3.connect(db_path) as conn:
        conn.execute("UPDATE meta SET value = '999' WHERE key = 'schema_version'")
    conn.close()
    with pytest.raises(StateStoreError, match="newer"):
        await SQLiteStateStore(str(db_path)).open()


async def test_close_is_idempotent_and_methods_after_close_raise(db_path: Path) -> None:
    s = await reopen(db_path)
    await s.close()
    await s.close()
    with pytest.raises(StateStoreClosedError, match="closed"):
        await s.get_checkpoint("a", "k")
    with pytest.raises(StateStoreClosedError, match="closed"):
        await s.enqueue([event("r1")])
    with pytest.raises(StateStoreClosedError):
        await s.open()


async def test_methods_before_open_raise(db_path: Path) -> None:
    s = SQLiteStateStore(str(db_path))
    with pytest.raises(StateStoreClosedError, match="not open"):
        await s.queue_depth()
    await s.close()


async def test_memory_database_works() -> None:
    s = SQLiteStateStore(":memory:")
    await s.open()
    await s.enqueue([event("r1")], {"a": {"k": "v"}})
    assert await s.queue_depth() == 1
    assert await s.get_checkpoint("a", "k") == "v"
    await s.close()


# ---- checkpoints ----


async def test_checkpoint_set_get_overwrite_delete(store: SQLiteStateStore) -> None:
    assert await store.get_checkpoint("s", "k") is None
    await store.set_checkpoints("s", {"k": "1", "j": "2"})
    assert await store.get_checkpoint("s", "k") == "1"
    await store.set_checkpoints("s", {"k": "3", "j": None})
    assert await store.get_checkpoint("s", "k") == "3"
    assert await store.get_checkpoint("s", "j") is None
    assert await store.get_checkpoint("other", "k") is None


async def test_checkpoint_records_updated_at_from_clock(
    store: SQLiteStateStore, db_path: Path
) -> None:
    await store.set_checkpoints("s", {"k": "v"})
    with sqlite3.connect(db_path) as conn:
        row = conn.execute("SELECT updated_at FROM checkpoints").fetchone()
    conn.close()
    assert row == (1_000.0,)


async def test_set_checkpoints_is_atomic(store: SQLiteStateStore) -> None:
    await store.set_checkpoints("s", {"a": "old"})
    with pytest.raises(StateStoreError):
        # The second value violates NOT NULL only at the SQL level: force it via a bad type.
        await store.set_checkpoints("s", {"a": "new", "b": object()})  # type: ignore[dict-item]
    assert await store.get_checkpoint("s", "a") == "old"
    assert await store.get_checkpoint("s", "b") is None


async def test_list_checkpoints_by_prefix_treats_percent_and_underscore_literally(
    store: SQLiteStateStore,
) -> None:
    keys = ["a%b", "a%bc", "axb", "a_1", "ab1", "a\\x", "b", "", "a", "\U0010ffff", "é"]
    await store.set_checkpoints("s", {k: f"v{i}" for i, k in enumerate(keys)})
    await store.set_checkpoints("other", {"a%b": "x"})

    assert await store.list_checkpoints("s", "a%") == {"a%b": "v0", "a%bc": "v1"}
    assert await store.list_checkpoints("s", "a_") == {"a_1": "v3"}
    assert await store.list_checkpoints("s", "a\\") == {"a\\x": "v5"}
    assert set(await store.list_checkpoints("s", "a")) == {
        "a%b",
        "a%bc",
        "axb",
        "a_1",
        "ab1",
        "a\\x",
        "a",
    }
    assert await store.list_checkpoints("s", "\U0010ffff") == {"\U0010ffff": "v9"}
    assert await store.list_checkpoints("s", "é") == {"é": "v10"}
    assert set(await store.list_checkpoints("s")) == set(keys)
    assert await store.list_checkpoints("s", "zzz") == {}


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


# ---- the queue ----


async def test_enqueue_writes_events_and_checkpoints_in_one_transaction(
    store: SQLiteStateStore,
) -> None:
    await store.set_checkpoints("dir", {"gone": "x"})
    await store.enqueue(
        [event("r1"), event("r2")], {"dir": {"seen/a": "h1", "gone": None}, "sched": {"w": "5"}}
    )
    assert await store.queue_depth("t1") == 2
    assert await store.list_checkpoints("dir") == {"seen/a": "h1"}
    assert await store.get_checkpoint("sched", "w") == "5"


async def test_enqueue_failure_writes_neither_events_nor_checkpoints(
    store: SQLiteStateStore,
) -> None:
    bad = NewEvent("t1", "f1", object(), "r2", 1.0, 1.0)  # type: ignore[arg-type]
    with pytest.raises(StateStoreError):
        await store.enqueue([event("r1"), bad], {"dir": {"k": "v"}})
    assert await store.queue_depth() == 0
    assert await store.get_checkpoint("dir", "k") is None


async def test_enqueue_duplicate_request_id_keeps_one_event_and_still_writes_checkpoints(
    store: SQLiteStateStore,
) -> None:
    await store.enqueue([event("r1", payload=b"first")])
    await store.enqueue([event("r1", payload=b"second"), event("r1")], {"s": {"k": "v2"}})
    assert await store.queue_depth() == 1
    assert await store.get_checkpoint("s", "k") == "v2"
    (claimed,) = await store.claim("t1", 10, 30, now=200)
    assert claimed.payload == b"first"


async def test_claim_orders_by_available_at_then_id_and_respects_limit(
    store: SQLiteStateStore,
) -> None:
    await store.enqueue([event("late", at=105), event("a", at=100), event("b", at=100)])
    await store.enqueue([event("other-trigger", trigger="t2", at=1)])
    first = await store.claim("t1", 2, 30, now=200)
    assert [e.request_id for e in first] == ["a", "b"]
    assert first[0].id < first[1].id
    assert (first[0].trigger, first[0].function, first[0].payload) == ("t1", "f1", b"a")
    assert first[0].enqueued_at == 100.0
    assert first[0].attempts == 0
    rest = await store.claim("t1", 10, 30, now=200)
    assert [e.request_id for e in rest] == ["late"]
    assert await store.claim("t1", 0, 30, now=200) == []


async def test_claim_skips_events_not_yet_available(store: SQLiteStateStore) -> None:
    await store.enqueue([event("r1", at=100)])
    assert await store.claim("t1", 10, 30, now=99.9) == []
    assert [e.request_id for e in await store.claim("t1", 10, 30, now=100)] == ["r1"]


async def test_claimed_events_are_leased_until_expiry(store: SQLiteStateStore) -> None:
    await store.enqueue([event("r1")])
    assert len(await store.claim("t1", 10, 30, now=200)) == 1
    assert await store.claim("t1", 10, 30, now=229.9) == []
    again = await store.claim("t1", 10, 30, now=230)
    assert [e.request_id for e in again] == ["r1"]


async def test_extend_lease_pushes_expiry(store: SQLiteStateStore) -> None:
    await store.enqueue([event("r1"), event("r2")])
    claimed = await store.claim("t1", 10, 30, now=200)
    await store.extend_lease([claimed[0].id], 60, now=220)
    assert [e.request_id for e in await store.claim("t1", 10, 100, now=240)] == ["r2"]
    assert await store.claim("t1", 10, 30, now=279.9) == []
    assert [e.request_id for e in await store.claim("t1", 10, 30, now=280)] == ["r1"]
    await store.extend_lease([], 60, now=220)


async def test_release_with_delay_and_attempts(store: SQLiteStateStore) -> None:
    await store.enqueue([event("r1")])
    (claimed,) = await store.claim("t1", 10, 300, now=200)
    await store.release(claimed.id, available_at=260, attempts=1)
    assert await store.claim("t1", 10, 30, now=259) == []
    (again,) = await store.claim("t1", 10, 30, now=260)
    assert again.id == claimed.id
    assert again.attempts == 1


async def test_complete_removes_the_event(store: SQLiteStateStore) -> None:
    await store.enqueue([event("r1"), event("r2")])
    claimed = await store.claim("t1", 1, 30, now=200)
    await store.complete(claimed[0].id)
    assert await store.queue_depth() == 1
    await store.complete(claimed[0].id)  # unknown id: no error
    assert [e.request_id for e in await store.claim("t1", 10, 30, now=1000)] == ["r2"]


async def test_queue_depth_per_trigger_and_total_counts_claimed_events(
    store: SQLiteStateStore,
) -> None:
    await store.enqueue([event("a1"), event("a2"), event("b1", trigger="t2")])
    await store.claim("t1", 1, 30, now=200)
    assert await store.queue_depth("t1") == 2
    assert await store.queue_depth("t2") == 1
    assert await store.queue_depth("nope") == 0
    assert await store.queue_depth(None) == 3
    assert await store.queue_depth() == 3


async def test_recover_leases_frees_every_claim_and_counts_them(store: SQLiteStateStore) -> None:
    await store.enqueue([event("a1"), event("a2"), event("a3"), event("b1", trigger="t2")])
    await store.claim("t1", 2, 3600, now=200)
    await store.claim("t2", 5, 3600, now=200)
    assert await store.recover_leases() == 3
    assert await store.recover_leases() == 0
    assert len(await store.claim("t1", 10, 30, now=201)) == 3


async def test_two_hundred_concurrent_enqueues_all_land(store: SQLiteStateStore) -> None:
    async with asyncio.TaskGroup() as tg:
        for i in range(200):
            tg.create_task(store.enqueue([event(f"r{i}")], {"s": {f"k{i}": str(i)}}))
    assert await store.queue_depth() == 200
    assert len(await store.list_checkpoints("s", "k")) == 200
    claimed = await store.claim("t1", 1000, 30, now=200)
    assert {e.request_id for e in claimed} == {f"r{i}" for i in range(200)}


async def test_large_enqueue_does_not_block_the_event_loop(store: SQLiteStateStore) -> None:
    events = [event(f"r{i}", payload=b"x" * 16384) for i in range(2000)]
    done = asyncio.Event()
    max_gap = 0.0
    ticks = 0

    async def ticker() -> None:
        nonlocal max_gap, ticks
        last = time.monotonic()
        while not done.is_set():
            await asyncio.sleep(0.001)
            now = time.monotonic()
            max_gap = max(max_gap, now - last)
            last = now
            ticks += 1

    async def write() -> None:
        try:
            await store.enqueue(events)
        finally:
            done.set()

    async with asyncio.TaskGroup() as tg:
        tg.create_task(ticker())
        tg.create_task(write())
    assert await store.queue_depth() == 2000
    assert ticks > 0
    assert max_gap < 0.1


# ---- the DLQ index ----


async def add_dlq(store: SQLiteStateStore, trigger: str, created_at: float, tag: str) -> int:
    return await store.dlq_add(
        trigger=trigger,
        function="f1",
        destination="file:///var/dlq",
        condition="RetriesExhausted",
        created_at=created_at,
        record=tag.encode(),
    )


async def test_dlq_add_get_delete(store: SQLiteStateStore) -> None:
    entry_id = await add_dlq(store, "t1", 10.0, "rec")
    entry = await store.dlq_get(entry_id)
    assert entry is not None
    assert (entry.id, entry.trigger, entry.function) == (entry_id, "t1", "f1")
    assert (entry.destination, entry.condition) == ("file:///var/dlq", "RetriesExhausted")
    assert (entry.created_at, entry.record) == (10.0, b"rec")
    await store.dlq_delete(entry_id)
    assert await store.dlq_get(entry_id) is None
    await store.dlq_delete(entry_id)  # unknown id: no error


async def test_dlq_list_is_newest_first_filtered_and_limited(store: SQLiteStateStore) -> None:
    await add_dlq(store, "t1", 10.0, "old")
    await add_dlq(store, "t2", 20.0, "other")
    await add_dlq(store, "t1", 30.0, "new")
    await add_dlq(store, "t1", 30.0, "newer-same-time")
    assert [e.record for e in await store.dlq_list()] == [
        b"newer-same-time",
        b"new",
        b"other",
        b"old",
    ]
    assert [e.record for e in await store.dlq_list("t1")] == [b"newer-same-time", b"new", b"old"]
    assert [e.record for e in await store.dlq_list("t1", limit=1)] == [b"newer-same-time"]
    assert await store.dlq_list("nope") == []


# ---- persistence ----


async def test_reopen_persists_checkpoints_queue_leases_and_dlq(db_path: Path) -> None:
    s = await reopen(db_path)
    await s.enqueue([event("r1"), event("r2"), event("r3")], {"s": {"k": "v"}})
    claimed = await s.claim("t1", 1, 3600, now=200)
    await s.release((await s.claim("t1", 1, 3600, now=200))[0].id, available_at=150, attempts=2)
    dlq_id = await add_dlq(s, "t1", 5.0, "rec")
    await s.close()

    s2 = await reopen(db_path)
    try:
        assert await s2.get_checkpoint("s", "k") == "v"
        assert await s2.queue_depth() == 3
        available = await s2.claim("t1", 10, 30, now=200)
        assert [(e.request_id, e.attempts) for e in available] == [("r3", 0), ("r2", 2)]
        assert await s2.recover_leases() == 3  # r1 from before, r2 and r3 just now
        assert claimed[0].request_id == "r1"
        entry = await s2.dlq_get(dlq_id)
        assert entry is not None
        assert entry.record == b"rec"
    finally:
        await s2.close()


# ---- trace ids ----

TRACE = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"


async def test_trace_id_is_kept_across_claim_and_release(store: SQLiteStateStore) -> None:
    traced = NewEvent("t1", "f1", b"{}", "r1", 100.0, 100.0, trace_id=TRACE)
    await store.enqueue([traced, event("r2")])
    first = await store.claim("t1", 10, 300, now=200)
    assert [(e.request_id, e.trace_id) for e in first] == [("r1", TRACE), ("r2", None)]
    await store.release(first[0].id, available_at=260, attempts=1)
    (again,) = await store.claim("t1", 1, 30, now=260)
    assert (again.request_id, again.attempts, again.trace_id) == ("r1", 1, TRACE)


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


# ---- paused triggers ----


async def test_paused_triggers_are_recorded_idempotently_and_kept_across_reopen(
    store: SQLiteStateStore, db_path: Path
) -> None:
    assert await store.paused_triggers() == set()
    await store.set_paused("orders", True)
    await store.set_paused("orders", True)
    await store.set_paused("thumbs", True)
    await store.set_paused("thumbs", False)
    await store.set_paused("never-paused", False)
    assert await store.paused_triggers() == {"orders"}
    again = await reopen(db_path)
    try:
        assert await again.paused_triggers() == {"orders"}
    finally:
        await again.close()


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
