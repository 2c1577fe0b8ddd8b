"""Group commit in the SQLite state store: writes share transactions, every caller is answered
only after the commit that holds its write, a failing write fails alone, and the file gives
freed pages back after a drained backlog."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from triggerd.state import sqlite as sqlite_store
from triggerd.state.base import NewEvent
from triggerd.state.sqlite import SQLiteStateStore, StateStoreError


def event(request_id: str, payload: bytes | None = None) -> NewEvent:
    return NewEvent("t1", "f1", payload or request_id.encode(), request_id, 1.0, 1.0)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStateStore]:
    s = SQLiteStateStore(str(tmp_path / "state.db"))
    await s.open()
    yield s
    await s.close()


def committed_ids(path: Path) -> set[str]:
    """What another connection sees: only committed rows (WAL readers never see more)."""
    conn = sqlite3.connect(path)
    try:
        return {str(row[0]) for row in conn.execute("SELECT request_id FROM queue")}
    finally:
        conn.close()


async def test_concurrent_enqueues_share_transactions_and_each_is_committed_when_answered(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    store = SQLiteStateStore(str(path))
    await store.open()
    seen_uncommitted: list[str] = []

    async def one(i: int) -> None:
        rid = f"r{i}"
        await store.enqueue([event(rid)])
        if rid not in committed_ids(path):
            seen_uncommitted.append(rid)

    try:
        await asyncio.gather(*(one(i) for i in range(300)))
        assert seen_uncommitted == []
        assert store.writes_committed == 300
        assert store.groups_committed < 300 / 2  # most shared a transaction with others
    finally:
        await store.close()


async def test_no_caller_is_answered_while_its_transaction_is_still_open(tmp_path: Path) -> None:
    entered, gate = threading.Event(), threading.Event()

    def hold_first_transaction(conn: sqlite3.Connection) -> None:
        if not entered.is_set():
            entered.set()
            gate.wait(10)

    store = SQLiteStateStore(str(tmp_path / "state.db"), before_write=hold_first_transaction)
    await store.open()
    try:
        first = asyncio.ensure_future(store.enqueue([event("first")]))
        await asyncio.to_thread(entered.wait, 10)
        later = [asyncio.ensure_future(store.enqueue([event(f"r{i}")])) for i in range(20)]
        for _ in range(20):
            await asyncio.sleep(0)  # let the loop run every callback it has
        assert not first.done() and not any(t.done() for t in later)
        gate.set()
        await asyncio.gather(first, *later)
        assert committed_ids(tmp_path / "state.db") == {"first"} | {f"r{i}" for i in range(20)}
        # The twenty waited behind the open transaction and went into the next one together.
        assert store.groups_committed == 2
    finally:
        gate.set()
        await store.close()


async def test_a_failing_write_fails_alone_and_the_rest_of_its_group_commits(
    store: SQLiteStateStore,
) -> None:
    bad = NewEvent("t1", "f1", None, "bad", 1.0, 1.0)  # type: ignore[arg-type]  # NOT NULL
    results = await asyncio.gather(
        *(store.enqueue([event(f"r{i}")]) for i in range(10)),
        store.enqueue([bad]),
        *(store.enqueue([event(f"s{i}")]) for i in range(10)),
        return_exceptions=True,
    )
    errors = [r for r in results if isinstance(r, BaseException)]
    assert len(errors) == 1 and isinstance(errors[0], StateStoreError)
    assert "NOT NULL" in str(errors[0])
    assert await store.queue_depth() == 20
    assert store.write_error is None  # writes after the failing one succeeded


async def test_write_failures_of_a_whole_group_are_reported_until_a_write_succeeds(
    tmp_path: Path,
) -> None:
    full = [False]

    def disk(conn: sqlite3.Connection) -> None:
        if full[0]:
            raise sqlite3.OperationalError("database or disk is full")

    store = SQLiteStateStore(str(tmp_path / "state.db"), before_write=disk)
    await store.open()
    try:
        full[0] = True
        results = await asyncio.gather(
            *(store.enqueue([event(f"r{i}")]) for i in range(5)), return_exceptions=True
        )
        assert all(isinstance(r, StateStoreError) for r in results)
        assert store.write_error == "database or disk is full"
        assert await store.queue_depth() == 0
        full[0] = False
        await store.enqueue([event("ok")])
        assert store.write_error is None
    finally:
        await store.close()


async def test_a_cancelled_caller_s_write_is_still_committed(store: SQLiteStateStore) -> None:
    task = asyncio.ensure_future(store.enqueue([event("cancelled")]))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await store.set_checkpoints("t1", {"k": "v"})  # committed after the cancelled write
    assert await store.queue_depth() == 1


async def test_close_commits_and_answers_the_writes_already_accepted(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = SQLiteStateStore(str(path))
    await store.open()
    writes = [asyncio.ensure_future(store.enqueue([event(f"r{i}")])) for i in range(50)]
    await asyncio.sleep(0)
    await store.close()
    assert all(w.done() and w.exception() is None for w in writes)
    assert len(committed_ids(path)) == 50


async def test_claims_releases_and_completions_of_many_callers_share_transactions(
    store: SQLiteStateStore,
) -> None:
    await store.enqueue([event(f"r{i}") for i in range(200)])
    claimed = await store.claim("t1", 200, 30, now=10.0)
    before = store.groups_committed
    await asyncio.gather(*(store.complete(e.id) for e in claimed))
    assert await store.queue_depth() == 0
    assert store.groups_committed - before < 200 / 2


def file_bytes(path: Path) -> int:
    return sum(os.path.getsize(p) for p in (path, Path(f"{path}-wal")) if os.path.exists(p))


async def test_the_file_shrinks_back_after_a_drained_backlog(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = SQLiteStateStore(str(path), vacuum_delay_s=0.0)
    await store.open()
    try:
        empty = file_bytes(path)
        payload = b"x" * 1000
        for chunk in range(20):
            await store.enqueue([event(f"r{chunk}-{i}", payload) for i in range(1000)])
        full = file_bytes(path)
        assert full > 20_000_000
        claimed = await store.claim("t1", 20_000, 30, now=10.0)
        await asyncio.gather(*(store.complete(e.id) for e in claimed))
        assert await store.queue_depth() == 0
        async with asyncio.timeout(10):  # the release runs right after the completions
            while store.pages_released == 0:
                await asyncio.sleep(0.01)
        assert file_bytes(path) < max(empty * 4, 1_000_000)
    finally:
        await store.close()


async def test_new_stores_use_incremental_auto_vacuum(store: SQLiteStateStore) -> None:
    mode = await store._run(lambda c: c.execute("PRAGMA auto_vacuum").fetchone()[0])
    assert mode == 2


async def test_an_older_store_is_converted_to_incremental_auto_vacuum_keeping_its_data(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    store = SQLiteStateStore(str(path))
    await store.open()
    await store.enqueue([event("kept")])
    await store.set_checkpoints("t1", {"k": "v"})
    await store.close()
    conn = sqlite3.connect(path, isolation_level=None)  # as triggerd before incremental vacuum
    conn.execute("PRAGMA auto_vacuum = NONE")
    conn.execute("VACUUM")
    assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 0
    conn.close()

    store = SQLiteStateStore(str(path))
    await store.open()
    try:
        assert await store._run(lambda c: c.execute("PRAGMA auto_vacuum").fetchone()[0]) == 2
        assert [e.request_id for e in await store.claim("t1", 10, 30, now=10.0)] == ["kept"]
        assert await store.get_checkpoint("t1", "k") == "v"
    finally:
        await store.close()


async def test_lease_only_groups_skip_the_fsync_and_leave_later_writes_durable(
    store: SQLiteStateStore,
) -> None:
    await store.enqueue([event(f"r{i}") for i in range(3)])
    claimed = await store.claim("t1", 3, 30, now=10.0)
    await store.extend_lease([e.id for e in claimed], 30, now=11.0)
    # The connection is back to synchronous=FULL (2) for the writes that follow.
    assert await store._run(lambda c: c.execute("PRAGMA synchronous").fetchone()[0]) == 2
    await store.complete(claimed[0].id)
    assert await store.queue_depth() == 2


async def test_concurrent_releases_share_a_commit(
    store: SQLiteStateStore,
) -> None:
    await store.enqueue([event(f"r{i}") for i in range(40)])
    claimed = await store.claim("t1", 40, 30, now=10.0)
    before = store.groups_committed
    await asyncio.gather(*(store.release(e.id, available_at=10.0, attempts=0) for e in claimed))
    assert store.groups_committed - before <= 2
    assert len(await store.claim("t1", 40, 30, now=10.0)) == 40


async def test_completions_made_one_after_another_share_a_commit(tmp_path: Path) -> None:
    """A drain settles events one at a time, each as its invocation ends: completions wait a
    moment for one another instead of taking a commit each."""
    path = tmp_path / "state.db"
    store = SQLiteStateStore(str(path))
    await store.open()
    try:
        await store.enqueue([event(f"r{i}") for i in range(20)])
        claimed = await store.claim("t1", 20, 60.0, 2.0)
        groups = store.groups_committed
        completions = []
        for e in claimed:  # one per turn of the loop, as settled invocations arrive
            completions.append(asyncio.ensure_future(store.complete(e.id)))
            await asyncio.sleep(0)
        await asyncio.gather(*completions)
        assert committed_ids(path) == set()
        assert store.groups_committed - groups < len(claimed) / 2
    finally:
        await store.close()


async def test_a_claim_leaves_waiting_completions_for_a_durable_commit(tmp_path: Path) -> None:
    """A claim is committed without an fsync: completions still waiting for company do not
    make it pay one (the next enqueue's commit, fsynced anyway, takes them along)."""
    path = tmp_path / "state.db"
    store = SQLiteStateStore(str(path), lazy_delay_s=60.0)  # the timer plays no part here
    await store.open()
    try:
        await store.enqueue([event(f"r{i}") for i in range(3)])
        (first,) = await store.claim("t1", 1, 60.0, 2.0)
        synced = store.durable_groups_committed
        completion = asyncio.ensure_future(store.complete(first.id))
        await asyncio.sleep(0)  # submitted: waits for company
        assert len(await store.claim("t1", 2, 60.0, 2.0)) == 2
        assert store.durable_groups_committed == synced
        assert not completion.done()
        assert "r0" in committed_ids(path)
        await store.enqueue([event("r3")])
        assert completion.done() and completion.exception() is None
        assert store.durable_groups_committed == synced + 1
        assert committed_ids(path) == {"r1", "r2", "r3"}
    finally:
        await store.close()


async def test_a_completion_whose_wait_is_over_is_not_held_back_by_a_later_ones_wait(
    tmp_path: Path,
) -> None:
    """Its timer ran out during a claim's commit: the completion goes in the next commit, not
    held back with a completion that arrived after it until that one's wait is over too."""
    path = tmp_path / "state.db"
    blocking, entered, release = threading.Event(), threading.Event(), threading.Event()

    def hold(conn: sqlite3.Connection) -> None:
        if blocking.is_set():
            entered.set()
            release.wait(10)

    store = SQLiteStateStore(str(path), lazy_delay_s=60.0, before_write=hold)
    await store.open()
    try:
        await store.enqueue([event(f"r{i}") for i in range(4)])
        first, second = await store.claim("t1", 2, 60.0, 2.0)
        blocking.set()
        claim = asyncio.ensure_future(store.claim("t1", 1, 60.0, 2.0))
        await asyncio.to_thread(entered.wait, 10)  # the claim's commit is under way
        blocking.clear()
        earlier = asyncio.ensure_future(store.complete(first.id))
        await asyncio.sleep(0)
        timer = store._lazy_timer
        assert timer is not None
        timer.cancel()
        store._lazy_due()  # its wait is over (the timer, without waiting 60 s)
        later = asyncio.ensure_future(store.complete(second.id))
        await asyncio.sleep(0)  # a new wait starts for this one
        release.set()
        assert len(await claim) == 1
        await asyncio.wait_for(earlier, 10)
        assert "r0" not in committed_ids(path)
    finally:
        release.set()
        await store.close()
    assert later.done()


async def test_a_group_of_waiting_completions_does_not_hold_back_the_writes_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MAX_GROUP completions still waiting for company fill the next group: a claim and an
    enqueue submitted after them are committed anyway (the enqueue takes the completions
    along), instead of waiting for the completions' timer."""
    monkeypatch.setattr(sqlite_store, "MAX_GROUP", 4)
    path = tmp_path / "state.db"
    store = SQLiteStateStore(str(path), lazy_delay_s=60.0)  # only the fix commits in time
    await store.open()
    try:
        await store.enqueue([event(f"r{i}") for i in range(8)])
        claimed = await store.claim("t1", 4, 60.0, 2.0)
        completions = [store.complete_later(e.id) for e in claimed]
        await asyncio.sleep(0)
        assert len(await asyncio.wait_for(store.claim("t1", 4, 60.0, 2.0), 10)) == 4
        assert not any(c.done() for c in completions)  # a claim leaves them waiting
        await asyncio.wait_for(store.enqueue([event("r8")]), 10)
        await asyncio.wait_for(asyncio.gather(*completions), 10)
        assert committed_ids(path) == {f"r{i}" for i in range(4, 9)}
    finally:
        await store.close()


async def test_a_lone_completion_is_committed_without_another_write(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = SQLiteStateStore(str(path))
    await store.open()
    try:
        await store.enqueue([event("r1")])
        (claimed,) = await store.claim("t1", 1, 60.0, 2.0)
        await asyncio.wait_for(store.complete(claimed.id), 10)
        assert committed_ids(path) == set()
    finally:
        await store.close()


async def test_close_commits_a_waiting_completion(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = SQLiteStateStore(str(path))
    await store.open()
    await store.enqueue([event("r1")])
    (claimed,) = await store.claim("t1", 1, 60.0, 2.0)
    completion = asyncio.ensure_future(store.complete(claimed.id))
    await asyncio.sleep(0)  # the completion waits for company
    await store.close()
    assert completion.done() and completion.exception() is None
    assert committed_ids(path) == set()


async def test_rows_written_several_per_statement_keep_their_order_leases_and_deletions(
    store: SQLiteStateStore,
) -> None:
    # 301 events in one enqueue and 45 concurrent ones in one group: written in statements
    # of 128, 64, ... rows. Order (ids), the first of two alike, claims' leases and
    # completions must be what one row per statement gave.
    first = [event(f"a{i:03d}") for i in range(300)] + [event("a007", b"second")]
    await store.enqueue(first)
    await asyncio.gather(*(store.enqueue([event(f"b{i:02d}")]) for i in range(45)))
    assert await store.queue_depth("t1") == 345
    claimed = await store.claim("t1", 333, 30.0, 2.0)
    expected = [f"a{i:03d}" for i in range(300)] + [f"b{i:02d}" for i in range(33)]
    assert [e.request_id for e in claimed] == expected
    assert next(e for e in claimed if e.request_id == "a007").payload == b"a007"
    assert [e.request_id for e in await store.claim("t1", 100, 30.0, 2.0)] == [
        f"b{i:02d}" for i in range(33, 45)
    ]
    assert await store.claim("t1", 100, 30.0, 2.0) == []  # every one leased
    await asyncio.gather(*(store.complete(e.id) for e in claimed[:-3]))
    assert await store.queue_depth("t1") == 15
    # Leases of the last three extended to 50: at 40 only the other twelve are claimable.
    await store.extend_lease([e.id for e in claimed[-3:]], 30.0, 20.0)
    again = await store.claim("t1", 100, 30.0, 40.0)
    assert [e.request_id for e in again] == [f"b{i:02d}" for i in range(33, 45)]


async def test_checkpoints_are_written_several_per_statement_with_the_events(
    tmp_path: Path,
) -> None:
    # An accept of a directory burst sets a checkpoint per event: 301 upserts and 150
    # deletions in one enqueue are a handful of statements (they were one executemany step
    # each, every step giving up the GIL and waiting to take it back), with the values one
    # statement per row gave.
    statements: list[str] = []

    def count_statements(conn: sqlite3.Connection) -> None:
        conn.set_trace_callback(statements.append)

    store = SQLiteStateStore(str(tmp_path / "state.db"), before_write=count_statements)
    await store.open()
    try:
        await store.set_checkpoints("s", {f"k{i:03d}": "old" for i in range(300)})
        await store.set_checkpoints("other", {"k000": "kept", "k200": "kept"})
        changes: dict[str, str | None] = {f"k{i:03d}": None for i in range(150)}
        changes.update({f"k{i:03d}": "new" for i in range(150, 451)})
        statements.clear()
        await store.enqueue([event("e1")], {"s": changes})
        assert len(statements) < 20
        expected = {f"k{i:03d}": "new" for i in range(150, 451)}
        assert await store.list_checkpoints("s") == expected
        assert await store.list_checkpoints("other") == {"k000": "kept", "k200": "kept"}
        assert await store.queue_depth("t1") == 1
    finally:
        await store.close()
