"""The state-store interface (`triggerd.state.base.StateStore`), run against every store:
the embedded SQLite store (a temp file) and the PostgreSQL store (a fresh database on the
machine's server for this module, emptied between tests). Behaviour that belongs to one
store only is tested beside it (test_state_sqlite.py, test_state_postgres.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes import FakeClock
from tests.fakes import new_event as event
from tests.pg_state import empty_store, fresh_database
from triggerd.state.base import NewEvent, StateStore
from triggerd.state.postgres import PostgresStateStore
from triggerd.state.sqlite import SQLiteStateStore, StateStoreClosedError, StateStoreError

pytestmark = pytest.mark.integration

#: Opens a new store on the same database; `same_owner` reopens as the same daemon would.
Opener = Callable[..., Awaitable[Any]]


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    with fresh_database() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
async def opener(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Opener]:
    opened: list[Any] = []
    if request.param == "sqlite":
        path = str(tmp_path / "nested" / "state.db")

        async def open_sqlite(*, clock: Any = None, same_owner: Any = None) -> Any:
            s = SQLiteStateStore(path, clock=clock)
            await s.open()
            opened.append(s)
            return s

        yield open_sqlite
    else:
        url = request.getfixturevalue("pg_url")
        await empty_store(url)

        async def open_pg(*, clock: Any = None, same_owner: Any = None) -> Any:
            member = same_owner.member_id if same_owner is not None else None
            s = PostgresStateStore(url, clock=clock, member_id=member)
            await s.open()
            opened.append(s)
            return s

        yield open_pg
    for s in opened:
        await s.close()


@pytest.fixture
async def store(opener: Opener) -> Any:
    return await opener(clock=FakeClock())


def test_both_stores_satisfy_the_protocol() -> None:
    stores: list[StateStore] = [
        SQLiteStateStore(":memory:"),
        PostgresStateStore("postgresql://u@h/d"),
    ]
    assert all(s is not None for s in stores)


# ---- lifecycle ----


async def test_open_twice_is_idempotent_and_reopen_keeps_the_data(opener: Opener) -> None:
    s = await opener()
    await s.open()
    await s.set_checkpoints("a", {"k": "v"})
    await s.close()
    s2 = await opener()
    assert await s2.get_checkpoint("a", "k") == "v"


async def test_close_is_idempotent_and_methods_after_close_raise(opener: Opener) -> None:
    s = await opener()
    await s.close()
    await s.close()
    with pytest.raises(StateStoreClosedError, match="closed"):
        await s.get_checkpoint("a", "k")
    with pytest.raises(StateStoreClosedError, match="closed"):
        await s.enqueue([event("r1")])
    with pytest.raises(StateStoreClosedError):
        await s.open()


async def test_methods_before_open_raise(store: Any, pg_url: str, tmp_path: Path) -> None:
    unopened: Any = (
        SQLiteStateStore(str(tmp_path / "x.db"))
        if isinstance(store, SQLiteStateStore)
        else PostgresStateStore(pg_url)
    )
    with pytest.raises(StateStoreClosedError, match="not open"):
        await unopened.queue_depth()
    await unopened.close()


# ---- checkpoints ----


async def test_checkpoint_set_get_overwrite_delete(store: Any) -> None:
    assert await store.get_checkpoint("s", "k") is None
    await store.set_checkpoints("s", {"k": "1", "j": "2"})
    assert await store.get_checkpoint("s", "k") == "1"
    await store.set_checkpoints("s", {"k": "3", "j": None})
    assert await store.get_checkpoint("s", "k") == "3"
    assert await store.get_checkpoint("s", "j") is None
    assert await store.get_checkpoint("other", "k") is None


async def test_set_checkpoints_is_atomic(store: Any) -> None:
    await store.set_checkpoints("s", {"a": "old"})
    with pytest.raises(StateStoreError):
        await store.set_checkpoints("s", {"a": "new", "b": object()})
    assert await store.get_checkpoint("s", "a") == "old"
    assert await store.get_checkpoint("s", "b") is None


async def test_list_checkpoints_by_prefix_treats_percent_and_underscore_literally(
    store: Any,
) -> None:
    keys = ["a%b", "a%bc", "axb", "a_1", "ab1", "a\\x", "b", "", "a", "\U0010ffff", "é", "B"]
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
    assert await store.list_checkpoints("s", "B") == {"B": "v11"}
    assert set(await store.list_checkpoints("s")) == set(keys)
    assert await store.list_checkpoints("s", "zzz") == {}


async def test_list_checkpoints_of_fifty_thousand_keys_by_prefix(store: Any) -> None:
    items: dict[str, str | None] = {
        f"dir{d:03}/file{f:03}": str(f) for d in range(100) for f in range(500)
    }
    await store.set_checkpoints("s3", items)
    result = await store.list_checkpoints("s3", "dir042/")
    assert len(result) == 500
    assert all(k.startswith("dir042/") for k in result)


# ---- the queue ----


async def test_enqueue_writes_events_and_checkpoints_in_one_transaction(store: Any) -> None:
    await store.set_checkpoints("dir", {"gone": "x"})
    await store.enqueue(
        [event("r1"), event("r2")], {"dir": {"seen/a": "h1", "gone": None}, "sched": {"w": "5"}}
    )
    assert await store.queue_depth("t1") == 2
    assert await store.list_checkpoints("dir") == {"seen/a": "h1"}
    assert await store.get_checkpoint("sched", "w") == "5"


async def test_enqueue_failure_writes_neither_events_nor_checkpoints(store: Any) -> None:
    bad = NewEvent("t1", "f1", object(), "r2", 1.0, 1.0)  # type: ignore[arg-type]
    with pytest.raises(StateStoreError):
        await store.enqueue([event("r1"), bad], {"dir": {"k": "v"}})
    assert await store.queue_depth() == 0
    assert await store.get_checkpoint("dir", "k") is None


async def test_enqueue_duplicate_request_id_keeps_one_event_and_still_writes_checkpoints(
    store: Any,
) -> None:
    await store.enqueue([event("r1", payload=b"first")])
    await store.enqueue([event("r1", payload=b"second"), event("r1")], {"s": {"k": "v2"}})
    assert await store.queue_depth() == 1
    assert await store.get_checkpoint("s", "k") == "v2"
    (claimed,) = await store.claim("t1", 10, 30, now=200)
    assert claimed.payload == b"first"


async def test_enqueue_unless_checkpoint_passes_once(store: Any) -> None:
    assert await store.enqueue_unless_checkpoint([event("r1")], "replayed", "7", "x")
    assert not await store.enqueue_unless_checkpoint([event("r2")], "replayed", "7", "y")
    assert await store.queue_depth() == 1
    assert await store.get_checkpoint("replayed", "7") == "x"


async def test_concurrent_enqueue_unless_checkpoint_lets_one_caller_through(store: Any) -> None:
    results = await asyncio.gather(
        *(store.enqueue_unless_checkpoint([event(f"r{i}")], "m", "k", str(i)) for i in range(20))
    )
    assert results.count(True) == 1
    assert await store.queue_depth() == 1


async def test_claim_orders_by_available_at_then_id_and_respects_limit(store: Any) -> None:
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


async def test_claim_skips_events_not_yet_available(store: Any) -> None:
    await store.enqueue([event("r1", at=100)])
    assert await store.claim("t1", 10, 30, now=99.9) == []
    assert [e.request_id for e in await store.claim("t1", 10, 30, now=100)] == ["r1"]


async def test_claimed_events_are_leased_until_expiry(store: Any) -> None:
    await store.enqueue([event("r1")])
    assert len(await store.claim("t1", 10, 30, now=200)) == 1
    assert await store.claim("t1", 10, 30, now=229.9) == []
    again = await store.claim("t1", 10, 30, now=230)
    assert [e.request_id for e in again] == ["r1"]


async def test_release_keeps_the_last_result_until_a_newer_one(store: Any) -> None:
    await store.enqueue([event("r1")])
    (claimed,) = await store.claim("t1", 10, 30, now=200)
    assert claimed.last_result is None
    await store.release(claimed.id, available_at=0, attempts=1, last_result=b"{}\nfirst\x00")
    (claimed,) = await store.claim("t1", 10, 30, now=200)
    assert (claimed.attempts, claimed.last_result) == (1, b"{}\nfirst\x00")
    await store.release(claimed.id, available_at=0, attempts=1)  # a stop's give-back
    (claimed,) = await store.claim("t1", 10, 30, now=200)
    assert claimed.last_result == b"{}\nfirst\x00"
    await store.release(claimed.id, available_at=0, attempts=2, last_result=b"{}\nsecond")
    (claimed,) = await store.claim("t1", 10, 30, now=200)
    assert (claimed.attempts, claimed.last_result) == (2, b"{}\nsecond")


async def test_extend_lease_pushes_expiry(store: Any) -> None:
    await store.enqueue([event("r1"), event("r2")])
    claimed = await store.claim("t1", 10, 30, now=200)
    await store.extend_lease([claimed[0].id], 60, now=220)
    assert [e.request_id for e in await store.claim("t1", 10, 100, now=240)] == ["r2"]
    assert await store.claim("t1", 10, 30, now=279.9) == []
    assert [e.request_id for e in await store.claim("t1", 10, 30, now=280)] == ["r1"]
    await store.extend_lease([], 60, now=220)


async def test_release_with_delay_and_attempts(store: Any) -> None:
    await store.enqueue([event("r1")])
    (claimed,) = await store.claim("t1", 10, 300, now=200)
    await store.release(claimed.id, available_at=260, attempts=1)
    assert await store.claim("t1", 10, 30, now=259) == []
    (again,) = await store.claim("t1", 10, 30, now=260)
    assert again.id == claimed.id
    assert again.attempts == 1


async def test_next_due_is_when_the_next_claim_can_succeed(store: Any) -> None:
    """What an idle queue waits for: the earliest available_at, or a lease's end."""
    assert await store.next_due("t1") is None
    await store.enqueue([event("r1", at=100), event("r2", at=150), event("o", trigger="t2")])
    assert await store.next_due("t1") == 100
    (first,) = await store.claim("t1", 1, 80, now=100)  # leased until 180
    assert await store.next_due("t1") == 150
    (second,) = await store.claim("t1", 1, 10, now=150)  # leased until 160
    assert await store.next_due("t1") == 160
    await store.release(second.id, available_at=170, attempts=1)
    assert await store.next_due("t1") == 170
    (again,) = await store.claim("t1", 1, 30, now=170)
    await store.complete(again.id)
    assert await store.next_due("t1") == 180
    assert [e.request_id for e in await store.claim("t1", 10, 30, now=180)] == ["r1"]
    await store.complete(first.id)
    assert await store.next_due("t1") is None
    assert await store.next_due("t2") == 100


async def test_complete_removes_the_event(store: Any) -> None:
    await store.enqueue([event("r1"), event("r2")])
    claimed = await store.claim("t1", 1, 30, now=200)
    await store.complete(claimed[0].id)
    assert await store.queue_depth() == 1
    await store.complete(claimed[0].id)  # unknown id: no error
    assert [e.request_id for e in await store.claim("t1", 10, 30, now=1000)] == ["r2"]


async def test_queue_depth_per_trigger_and_total_counts_claimed_events(store: Any) -> None:
    await store.enqueue([event("a1"), event("a2"), event("b1", trigger="t2")])
    await store.claim("t1", 1, 30, now=200)
    assert await store.queue_depth("t1") == 2
    assert await store.queue_depth("t2") == 1
    assert await store.queue_depth("nope") == 0
    assert await store.queue_depth(None) == 3
    assert await store.queue_depth() == 3


async def test_recover_leases_frees_every_claim_and_counts_them(store: Any) -> None:
    await store.enqueue([event("a1"), event("a2"), event("a3"), event("b1", trigger="t2")])
    await store.claim("t1", 2, 3600, now=200)
    await store.claim("t2", 5, 3600, now=200)
    assert await store.recover_leases() == 3
    assert await store.recover_leases() == 0
    assert len(await store.claim("t1", 10, 30, now=201)) == 3


async def test_two_hundred_concurrent_enqueues_all_land(store: Any) -> None:
    async with asyncio.TaskGroup() as tg:
        for i in range(200):
            tg.create_task(store.enqueue([event(f"r{i}")], {"s": {f"k{i}": str(i)}}))
    assert await store.queue_depth() == 200
    assert len(await store.list_checkpoints("s", "k")) == 200
    claimed = await store.claim("t1", 1000, 30, now=200)
    assert {e.request_id for e in claimed} == {f"r{i}" for i in range(200)}


async def test_concurrent_writes_share_transactions(store: Any) -> None:
    async with asyncio.TaskGroup() as tg:
        for i in range(100):
            tg.create_task(store.enqueue([event(f"r{i}")]))
    claimed = await store.claim("t1", 100, 30, now=200)
    before = store.groups_committed
    await asyncio.gather(*(store.complete(e.id) for e in claimed))
    assert await store.queue_depth() == 0
    assert store.groups_committed - before < 10


async def test_a_cancelled_caller_s_write_is_still_committed(store: Any) -> None:
    task = asyncio.create_task(store.enqueue([event("r1")]))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(100):
        if await store.queue_depth() == 1:
            break
        await asyncio.sleep(0.01)
    assert await store.queue_depth() == 1


async def test_close_commits_and_answers_the_writes_already_accepted(opener: Opener) -> None:
    s = await opener()
    writes = [asyncio.create_task(s.enqueue([event(f"r{i}")])) for i in range(50)]
    await asyncio.sleep(0)
    await s.close()
    await asyncio.gather(*writes)
    s2 = await opener()
    assert await s2.queue_depth() == 50


async def test_large_enqueue_does_not_block_the_event_loop(store: Any) -> None:
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

    took = 0.0

    async def write() -> None:
        nonlocal took
        began = time.monotonic()
        try:
            await store.enqueue(events)
        finally:
            took = time.monotonic() - began
            done.set()

    async with asyncio.TaskGroup() as tg:
        tg.create_task(ticker())
        tg.create_task(write())
    assert await store.queue_depth() == 2000
    assert ticks > 0
    # A write on the loop would stop the ticker for (nearly) all of it; the bound is
    # relative, as a loaded machine stretches both the write and the ticker's gaps.
    assert max_gap < took / 2, f"the loop stood still {max_gap:.3f} s of a {took:.3f} s write"


# ---- the DLQ index ----


async def add_dlq(store: Any, trigger: str, created_at: float, tag: str) -> int:
    return int(
        await store.dlq_add(
            trigger=trigger,
            function="f1",
            destination="file:///var/dlq",
            condition="RetriesExhausted",
            created_at=created_at,
            record=tag.encode(),
        )
    )


async def test_dlq_add_get_delete(store: Any) -> None:
    entry_id = await add_dlq(store, "t1", 10.0, "rec")
    entry = await store.dlq_get(entry_id)
    assert entry is not None
    assert (entry.id, entry.trigger, entry.function) == (entry_id, "t1", "f1")
    assert (entry.destination, entry.condition) == ("file:///var/dlq", "RetriesExhausted")
    assert (entry.created_at, entry.record) == (10.0, b"rec")
    await store.dlq_delete(entry_id)
    assert await store.dlq_get(entry_id) is None
    await store.dlq_delete(entry_id)  # unknown id: no error


async def test_dlq_list_is_newest_first_filtered_and_limited(store: Any) -> None:
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


async def test_reopen_persists_checkpoints_queue_leases_and_dlq(opener: Opener) -> None:
    s = await opener()
    await s.enqueue([event("r1"), event("r2"), event("r3")], {"s": {"k": "v"}})
    claimed = await s.claim("t1", 1, 3600, now=200)
    await s.release((await s.claim("t1", 1, 3600, now=200))[0].id, available_at=150, attempts=2)
    dlq_id = await add_dlq(s, "t1", 5.0, "rec")
    await s.close()

    s2 = await opener(same_owner=s)
    assert await s2.get_checkpoint("s", "k") == "v"
    assert await s2.queue_depth() == 3
    available = await s2.claim("t1", 10, 30, now=200)
    assert [(e.request_id, e.attempts) for e in available] == [("r3", 0), ("r2", 2)]
    assert await s2.recover_leases() == 3  # r1 from before, r2 and r3 just now
    assert claimed[0].request_id == "r1"
    entry = await s2.dlq_get(dlq_id)
    assert entry is not None
    assert entry.record == b"rec"


# ---- trace ids ----

TRACE = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"


async def test_trace_id_is_kept_across_claim_and_release(store: Any) -> None:
    traced = NewEvent("t1", "f1", b"{}", "r1", 100.0, 100.0, trace_id=TRACE)
    await store.enqueue([traced, event("r2")])
    first = await store.claim("t1", 10, 300, now=200)
    assert [(e.request_id, e.trace_id) for e in first] == [("r1", TRACE), ("r2", None)]
    await store.release(first[0].id, available_at=260, attempts=1)
    (again,) = await store.claim("t1", 1, 30, now=260)
    assert (again.request_id, again.attempts, again.trace_id) == ("r1", 1, TRACE)


# ---- paused triggers ----


async def test_paused_triggers_are_recorded_idempotently_and_kept_across_reopen(
    opener: Opener,
) -> None:
    store = await opener(clock=FakeClock())
    assert await store.paused_triggers() == set()
    await store.set_paused("orders", True)
    await store.set_paused("orders", True)
    await store.set_paused("thumbs", True)
    await store.set_paused("thumbs", False)
    await store.set_paused("never-paused", False)
    assert await store.paused_triggers() == {"orders"}
    again = await opener()
    assert await again.paused_triggers() == {"orders"}
