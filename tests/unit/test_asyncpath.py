"""The asynchronous invocation path: durable accept, retries, event age, throttles,
on-failure records, and poison events not blocking others."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.fakes import (
    AckFailsFirst,
    FakeBackend,
    FakeSource,
    HeldDestination,
    MemDestination,
    make_record,
    run_until,
    trigger_runtime,
)
from triggerd.delivery.asyncpath import AsyncTrigger, event_request_id
from triggerd.state.base import NewEvent
from triggerd.state.sqlite import SQLiteStateStore
from triggerd.types import MAX_ASYNC_PAYLOAD, BuildError, InvokeResult, Outcome, Record


def build(
    store: SQLiteStateStore,
    source: FakeSource,
    backend: FakeBackend,
    dest: MemDestination | None = None,
    **trigger: Any,
) -> AsyncTrigger:
    trigger.setdefault("retry_base_delay_s", 0.05)
    rt = trigger_runtime(store, source, backend, dest, "fakepush", **trigger)
    return AsyncTrigger(rt, store, lease_s=30)


def always_fail(event: Any) -> Any:
    raise ValueError("broken")


def scripted(*results: Any) -> Callable[[Any], Any]:
    """A handler answering each call with the next of `results`, raising the exceptions."""
    answers = iter(results)

    def respond(event: Any) -> Any:
        result = next(answers)
        if isinstance(result, Exception):
            raise result
        return result

    return respond


def assert_carries_the_error(record: dict[str, Any], condition: str, invoke_count: int) -> None:
    """An invocation record of an event that failed with `always_fail`'s error."""
    assert record["requestContext"]["condition"] == condition
    assert record["requestContext"]["approximateInvokeCount"] == invoke_count
    assert record["responseContext"]["functionError"] == "Unhandled"
    assert record["responsePayload"]["errorMessage"] == "broken"


async def test_event_is_persisted_before_the_source_is_acked(store: SQLiteStateStore) -> None:
    src = FakeSource()
    t = build(store, src, FakeBackend())
    rec = make_record({"n": 1}, item_id="r1")
    rec.checkpoint = {"last": "r1"}
    await t.accept([rec])
    assert src.acked == [rec]
    assert await store.queue_depth("t") == 1
    assert await store.get_checkpoint("t", "last") == "r1"


async def test_each_record_is_invoked_with_its_own_event(store: SQLiteStateStore) -> None:
    src, be = FakeSource([make_record(i) for i in range(3)]), FakeBackend()
    t = build(store, src, be)
    await run_until(t, lambda: len(be.calls) == 3)
    await asyncio.sleep(0.05)
    assert sorted(orjson.loads(c["Records"][0]["body"]) for c in be.calls) == [0, 1, 2]
    assert await store.queue_depth("t") == 0


async def test_function_errors_retry_twice_then_dead_letter(store: SQLiteStateStore) -> None:
    src, be, dest = (
        FakeSource([make_record({"order": 42})]),
        FakeBackend(always_fail),
        MemDestination(),
    )
    t = build(store, src, be, dest)
    await run_until(t, lambda: len(dest.records) == 1)
    assert len(be.calls) == 3
    record = dest.records[0]
    assert record["version"] == "1.0"
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 3
    assert record["requestContext"]["functionArn"].endswith(":function:f:$LATEST")
    assert record["requestPayload"] == be.calls[0]
    assert record["responseContext"] == {
        "statusCode": 200,
        "executedVersion": "$LATEST",
        "functionError": "Unhandled",
    }
    assert record["responsePayload"]["errorType"] == "ValueError"
    await asyncio.sleep(0.05)
    assert await store.queue_depth("t") == 0


async def test_zero_retries_means_one_attempt(store: SQLiteStateStore) -> None:
    src, be, dest = FakeSource([make_record(1)]), FakeBackend(always_fail), MemDestination()
    t = build(store, src, be, dest, maximum_retry_attempts=0)
    await run_until(t, lambda: len(dest.records) == 1)
    assert len(be.calls) == 1


async def test_retry_keeps_the_request_id(store: SQLiteStateStore) -> None:
    ids: list[str] = []

    class Recording(FakeBackend):
        async def invoke(self, payload: bytes, **kw: Any) -> InvokeResult:
            ids.append(kw["request_id"])
            return await super().invoke(payload, **kw)

    src, dest = FakeSource([make_record(1)]), MemDestination()
    t = build(store, src, Recording(always_fail), dest)
    await run_until(t, lambda: len(dest.records) == 1)
    assert len(set(ids)) == 1 and len(ids) == 3
    assert dest.records[0]["requestContext"]["requestId"] == ids[0]


async def test_old_events_expire_without_an_invocation(store: SQLiteStateStore) -> None:
    await store.enqueue(
        [
            NewEvent(
                trigger="t",
                function="f",
                payload=b'{"old":true}',
                request_id="r-old",
                enqueued_at=1.0,
                available_at=1.0,
            )
        ]
    )
    src, be, dest = FakeSource(), FakeBackend(), MemDestination()
    t = build(store, src, be, dest, maximum_event_age_s=60)
    await run_until(t, lambda: len(dest.records) == 1)
    assert be.calls == []
    record = dest.records[0]
    assert record["requestContext"]["condition"] == "EventAgeExceeded"
    assert record["requestPayload"] == {"old": True}


async def test_throttles_are_retried_without_using_attempts(store: SQLiteStateStore) -> None:
    results = iter(
        [
            InvokeResult(Outcome.THROTTLED, b"", "", retry_after_s=0.01),
            InvokeResult(Outcome.THROTTLED, b"", "", retry_after_s=0.01),
            "ok",
        ]
    )
    src, be, dest = (
        FakeSource([make_record(1)]),
        FakeBackend(lambda e: next(results)),
        MemDestination(),
    )
    t = build(store, src, be, dest, maximum_retry_attempts=0)
    await run_until(t, lambda: len(be.calls) == 3)
    await asyncio.sleep(0.05)
    assert dest.records == []
    assert await store.queue_depth("t") == 0


async def test_poison_event_does_not_block_the_next_ones(store: SQLiteStateStore) -> None:
    def respond(event: Any) -> Any:
        if event["Records"][0]["body"] == "poison":
            raise ValueError("poison")
        return "ok"

    recs = [make_record("poison")] + [make_record(i) for i in range(5)]
    src, be, dest = FakeSource(recs), FakeBackend(respond), MemDestination()
    t = build(store, src, be, dest, maximum_concurrency=1, retry_base_delay_s=0.3)
    await run_until(t, lambda: len(dest.records) == 1)
    ok = [c for c in be.calls if c["Records"][0]["body"] != "poison"]
    assert len(ok) == 5
    last_ok = max(i for i, c in enumerate(be.calls) if c in ok)
    assert last_ok < len(be.calls) - 1, "the good events ran while the poison one waited"


async def test_oversize_event_goes_to_the_destination(store: SQLiteStateStore) -> None:
    src, be, dest = FakeSource(), FakeBackend(), MemDestination()
    t = build(store, src, be, dest)
    rec = make_record("x" * (MAX_ASYNC_PAYLOAD + 10))
    await t.accept([rec])
    assert src.acked == [rec]
    assert await store.queue_depth("t") == 0
    error = dest.records[0]["responsePayload"]
    assert error["errorType"] == "RequestEntityTooLargeException"


async def test_filtered_records_are_not_enqueued(store: SQLiteStateStore) -> None:
    src = FakeSource()
    t = build(store, src, FakeBackend(), filters=[{"body": {"kind": ["a"]}}])
    recs = [make_record({"kind": "a"}), make_record({"kind": "b"})]
    await t.accept(recs)
    assert src.acked == recs
    assert await store.queue_depth("t") == 1


async def test_records_are_given_back_when_the_queue_cannot_persist(
    store: SQLiteStateStore,
) -> None:
    src = FakeSource()
    t = build(store, src, FakeBackend())
    recs = [make_record(1), make_record(2)]
    await store.close()  # every write now fails
    with pytest.raises(Exception, match="closed"):
        await t.accept(recs)
    assert src.nacked == recs
    assert src.acked == []


async def test_records_whose_ack_raised_after_their_commit_are_given_back(
    store: SQLiteStateStore,
) -> None:
    # Their events are durable; the source still holds the records (a plugin source's ack
    # that failed): given back, not held for good. Taken again, a queued event is not
    # enqueued twice (same request id).
    recs = [make_record(1), make_record(2)]
    src = AckFailsFirst()
    t = build(store, src, FakeBackend())
    with pytest.raises(ConnectionError, match="ack refused"):
        await t.accept(recs)
    assert src.nacked == recs and src.acked == []
    assert not any(r.failed for r in recs)
    await t.accept(recs)
    assert src.acked == recs
    assert await store.queue_depth("t") == 2


async def test_lease_is_extended_while_an_event_is_handled(store: SQLiteStateStore) -> None:
    src, be = FakeSource([make_record(1)]), FakeBackend(always_fail)
    dest = MemDestination(fail_times=3)  # the destination is down for ~3 s of backoff
    rt = trigger_runtime(store, src, be, dest, "fakepush", maximum_retry_attempts=0)
    # A lease well under the handling's ~3 s, extended every 0.4 s: a loaded loop's stall
    # up to 0.8 s does not let it lapse (0.6 s left only 0.4 s).
    t = AsyncTrigger(rt, store, lease_s=1.2)
    await run_until(t, lambda: len(dest.records) == 1, timeout=20)
    assert len(be.calls) == 1, "nobody claimed the event again while it was dead-lettered"
    assert len(dest.records) == 1


async def test_reserved_concurrency_zero_dead_letters_without_retries(
    store: SQLiteStateStore,
) -> None:
    throttled = InvokeResult(Outcome.THROTTLED, b"", "", retry_after_s=0.01)
    src, be, dest = FakeSource([make_record(1)]), FakeBackend(lambda e: throttled), MemDestination()
    rt = trigger_runtime(store, src, be, dest, "fakepush")
    t = AsyncTrigger(rt, store, lease_s=30, throttles_dead_letter=True)
    await run_until(t, lambda: len(dest.records) == 1)
    assert len(be.calls) == 1
    assert dest.records[0]["requestContext"]["condition"] == "RetriesExhausted"


class Gated(FakeBackend):
    """Holds every invocation until released; counts how many run at once."""

    def __init__(self) -> None:
        super().__init__()
        self.running = 0
        self.most = 0
        self.gate = asyncio.Event()

    async def invoke(self, payload: bytes, **kw: Any) -> InvokeResult:
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await self.gate.wait()
            return await super().invoke(payload, **kw)
        finally:
            self.running -= 1


async def test_claimed_ahead_events_never_exceed_maximum_concurrency_in_flight(
    store: SQLiteStateStore,
) -> None:
    src, be = FakeSource([make_record(i) for i in range(30)]), Gated()
    t = build(store, src, be, maximum_concurrency=3)
    task = asyncio.create_task(t.run())
    try:
        async with asyncio.timeout(10):
            while be.running < 3:
                await asyncio.sleep(0.01)
        for _ in range(20):
            await asyncio.sleep(0)
        assert be.running == 3  # the buffered ones wait for a slot
        be.gate.set()
        async with asyncio.timeout(10):
            while len(be.calls) < 30:
                await asyncio.sleep(0.01)
        assert be.most == 3
    finally:
        t.stop()
        await asyncio.wait_for(task, 5)
    assert await store.queue_depth("t") == 0


async def test_a_slot_is_free_while_the_previous_event_s_completion_commits(
    tmp_path: Any,
) -> None:

    held, gate = threading.Event(), threading.Event()
    holding = [False]

    def hook(conn: sqlite3.Connection) -> None:
        if holding[0] and not held.is_set():
            held.set()
            gate.wait(10)  # the first completion's commit stays open

    store = SQLiteStateStore(str(tmp_path / "s.db"), before_write=hook)
    await store.open()

    class HoldFirstCompletion(FakeBackend):
        async def invoke(self, payload: bytes, **kw: Any) -> InvokeResult:
            holding[0] = True  # the next transaction: this event's completion
            return await super().invoke(payload, **kw)

    src, be = FakeSource([make_record(i) for i in range(2)]), HoldFirstCompletion()
    t = build(store, src, be, maximum_concurrency=1)
    await t.accept(await src.receive(10, 0.1))
    task = asyncio.create_task(t.run())
    try:
        async with asyncio.timeout(10):
            # With one slot, the second invocation starts while the first is still being
            # completed (its commit is held open, or not yet begun: completions wait a few
            # ms to share a commit).
            while len(be.calls) < 2 or not held.is_set():
                await asyncio.sleep(0.01)
        assert held.is_set() and not gate.is_set()
    finally:
        gate.set()
        t.stop()
        await asyncio.wait_for(task, 5)
        await store.close()


@pytest.mark.parametrize(
    ("trigger", "item_id"),
    [
        ("files", "0006290F1B2A3C4D"),
        ("", ""),
        ("webhook-async", "a" * 300),
        ("trigger ünïcode", "キー/\x00/🙂"),
        *[(f"t{i}", str(i * 7919)) for i in range(50)],
    ],
)
def test_event_request_id_is_the_uuid5_of_trigger_and_item(trigger: str, item_id: str) -> None:
    # Queued events keep their request ids across versions: the fast path must not drift.
    ns = uuid.UUID("6f1d9a52-3c1e-4c39-9d1f-2b7b8f6a0c11")
    assert event_request_id(trigger, item_id) == str(uuid.uuid5(ns, f"{trigger}\x00{item_id}"))


async def test_accept_loop_commits_a_backlog_of_200_records_in_one_enqueue(
    store: SQLiteStateStore,
) -> None:
    # 64 records a receive made a 200-record backlog four sequential commits (fsyncs).
    src = FakeSource([make_record(i) for i in range(200)])
    t = build(store, src, FakeBackend())
    writes_before = store.writes_committed
    loop_task = asyncio.create_task(t._accept_loop())
    try:
        async with asyncio.timeout(10):
            while len(src.acked) < 200:
                await asyncio.sleep(0.01)
    finally:
        t.stop()
        await loop_task
    assert store.writes_committed - writes_before == 1
    assert await store.queue_depth("t") == 200


class HeldWrites:
    """A store hook (on the store's thread) that holds each write until `release`, and then
    fails it while `fail` is set."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.gate = threading.Event()
        self.fail = False

    def __call__(self, conn: sqlite3.Connection) -> None:
        self.started.set()
        self.gate.wait(10)
        if self.fail:
            raise sqlite3.OperationalError("disk I/O error")


async def started(hook: HeldWrites) -> None:
    async with asyncio.timeout(10):
        while not hook.started.is_set():
            await asyncio.sleep(0.005)


async def test_records_handed_out_during_a_commit_go_together_in_the_next_one(
    tmp_path: Path,
) -> None:
    # 600 records handed out while the first commit is under way: taken (256 a receive) and
    # built meanwhile, then committed in one transaction once the first is durable, not in
    # three more sequential commits (fsyncs); none is acked before its commit.
    hook = HeldWrites()
    store = SQLiteStateStore(str(tmp_path / "state.db"), before_write=hook)
    await store.open()
    src = FakeSource([make_record("first")])
    t = build(store, src, FakeBackend())
    loop_task = asyncio.create_task(t._accept_loop())
    try:
        await started(hook)
        later = [make_record(i) for i in range(600)]
        for i in range(0, 600, 200):
            src.push(*later[i : i + 200])
            await asyncio.sleep(0.01)
        assert src.acked == [] and src.queue == []  # all taken, none acked yet
        hook.gate.set()
        async with asyncio.timeout(10):
            while len(src.acked) < 601:
                await asyncio.sleep(0.01)
    finally:
        hook.gate.set()
        t.stop()
        await loop_task
        writes = store.writes_committed
        queued = await store.claim("t", 1000, 30.0, t.rt.clock.time())
        await store.close()
    assert writes == 2
    assert src.acked[0].payload["body"] == "first"
    assert [e.request_id for e in queued] == [
        event_request_id("t", r.item_id) for r in [src.acked[0], *later]
    ]


async def test_a_failed_commit_gives_back_the_records_taken_during_it_uncommitted(
    tmp_path: Path,
) -> None:
    # The records taken while a commit is under way are committed only after it: when it
    # fails, they are given back with its own, none of them committed or acked.
    hook = HeldWrites()
    hook.fail = True
    store = SQLiteStateStore(str(tmp_path / "state.db"), before_write=hook)
    await store.open()
    first = make_record("first")
    src = FakeSource([first])
    t = build(store, src, FakeBackend())
    loop_task = asyncio.create_task(t._accept_loop())
    try:
        await started(hook)
        later = [make_record(i) for i in range(300)]
        src.push(*later)
        await asyncio.sleep(0.05)
        hook.gate.set()
        async with asyncio.timeout(10):
            while len(src.nacked) < 301:
                await asyncio.sleep(0.01)
        hook.fail = False
        depth = await store.queue_depth("t")
    finally:
        hook.gate.set()
        t.stop()
        await loop_task
        await store.close()
    assert depth == 0 and src.acked == []
    assert set(map(id, src.nacked)) == set(map(id, [first, *later]))


class NackFailsOnce(FakeSource):
    """A source whose first nack fails (a request that did not go through)."""

    def __init__(self, records: list[Any]) -> None:
        super().__init__(records)
        self.failed: list[Any] = []

    async def nack(self, records: Any) -> None:
        if not self.failed:
            self.failed.extend(records)
            raise ConnectionError("nack failed")
        await super().nack(records)


async def test_a_failed_give_back_of_the_records_taken_during_a_commit_still_gives_back_its_own(
    tmp_path: Path,
) -> None:
    # A commit fails; giving back the records taken during it fails too: the commit's own
    # records are given back all the same, not left neither acked nor nacked.
    hook = HeldWrites()
    hook.fail = True
    store = SQLiteStateStore(str(tmp_path / "state.db"), before_write=hook)
    await store.open()
    first = make_record("first")
    src = NackFailsOnce([first])
    t = build(store, src, FakeBackend())
    loop_task = asyncio.create_task(t._accept_loop())
    try:
        await started(hook)
        later = [make_record(i) for i in range(3)]
        src.push(*later)
        await asyncio.sleep(0.05)
        hook.gate.set()
        async with asyncio.timeout(2):
            while first not in src.nacked:
                await asyncio.sleep(0.01)
    except TimeoutError:
        pass
    finally:
        hook.gate.set()
        t.stop()
        await loop_task
        await store.close()
    assert src.failed == later
    assert first in src.nacked and src.acked == []


async def test_cancelling_the_accept_loop_during_a_commit_leaves_no_receive_behind(
    tmp_path: Path,
) -> None:
    # The receive waiting during a commit is cancelled with the loop: a record handed out
    # later stays with the source instead of going to a receive nobody reads.
    hook = HeldWrites()
    store = SQLiteStateStore(str(tmp_path / "state.db"), before_write=hook)
    await store.open()
    first = make_record("first")
    src = FakeSource([first])
    t = build(store, src, FakeBackend())
    loop_task = asyncio.create_task(t._accept_loop())
    try:
        await started(hook)
        await asyncio.sleep(0.02)  # the loop waits in a receive while the write is held
        loop_task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await loop_task
        late = make_record("late")
        src.push(late)
        await asyncio.sleep(0.05)
        assert src.queue == [late]
        assert src.nacked == [first]
    finally:
        hook.gate.set()
        await store.close()


async def test_a_record_whose_event_cannot_be_built_during_a_commit_goes_to_the_destination(
    tmp_path: Path,
) -> None:
    # A record taken while a commit is under way whose event cannot be built (its payload
    # cannot be serialised) goes to the on-failure destination alone: the commit under way
    # goes on and its record is acked, and the bad one is acked with the next commit, not
    # handed back to be taken again (a source handing given-back records out first would be
    # blocked behind it for good).
    hook = HeldWrites()
    store = SQLiteStateStore(str(tmp_path / "state.db"), before_write=hook)
    await store.open()
    first, after = make_record("first"), make_record("after")
    src, dest = FakeSource([first]), MemDestination()
    t = build(store, src, FakeBackend(), dest)
    loop_task = asyncio.create_task(t._accept_loop())
    try:
        await started(hook)
        bad = make_record("bad")
        bad.payload = {"body": {1, 2}}  # a set: orjson cannot serialise it
        src.push(bad)
        src.push(after)
        await asyncio.sleep(0.05)
        hook.gate.set()
        async with asyncio.timeout(10):
            while after not in src.acked:
                await asyncio.sleep(0.01)
        depth = await store.queue_depth("t")
    finally:
        hook.gate.set()
        t.stop()
        await loop_task
        await store.close()
    assert src.acked == [first, bad, after] and src.nacked == []
    assert depth == 2  # first and after
    [record] = dest.records
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert record["requestContext"]["requestId"] == event_request_id("t", bad.item_id)
    assert record["requestPayload"] is None
    error = record["responsePayload"]
    assert error["errorType"] == "InvalidRequestContentException"
    assert "not JSON serializable" in error["errorMessage"]


async def test_a_record_whose_event_cannot_be_built_in_the_accept_loop_goes_to_the_destination(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A record received by the accept loop itself (no commit under way) whose event cannot
    # be built: one error line naming it, the on-failure record, acked; the record behind it
    # is enqueued, not held up by it.
    store = SQLiteStateStore(str(tmp_path / "state.db"))
    await store.open()
    bad = make_record("bad")
    bad.payload = {"body": {1, 2}}  # a set: orjson cannot serialise it
    good = make_record("good")
    src, dest = FakeSource([bad, good]), MemDestination()
    t = build(store, src, FakeBackend(), dest)
    loop_task = asyncio.create_task(t._accept_loop())
    try:
        async with asyncio.timeout(10):
            while good not in src.acked:
                await asyncio.sleep(0.01)
        depth = await store.queue_depth("t")
    finally:
        t.stop()
        await loop_task
        await store.close()
    assert src.acked == [bad, good] and src.nacked == []
    assert depth == 1
    assert [r["requestPayload"] for r in dest.records] == [None]
    [line] = [r for r in caplog.records if r.getMessage() == "event.unbuildable"]
    assert line.__dict__["item_id"] == bad.item_id and line.__dict__["error_type"] == "TypeError"
    assert "error" not in line.__dict__  # the message may quote the record's values
    assert not [r for r in caplog.records if r.getMessage() == "source.accept_failed"]


async def test_a_record_sent_to_the_destination_by_a_commit_that_failed_is_not_sent_again(
    store: SQLiteStateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The on-failure records of a commit go before its write. A write that fails (a full
    # disk, the store unreachable) gives every record back, and the accept loop takes them
    # again: a record whose event cannot be built (or too large) already at its destination
    # is not sent again at each retry, one more copy per failed commit.
    src, dest = FakeSource(), MemDestination()
    t = build(store, src, FakeBackend(), dest)
    bad, big = make_record("bad"), make_record("x" * (MAX_ASYNC_PAYLOAD + 10))
    bad.payload = {"body": {1, 2}}  # a set: orjson cannot serialise it
    good = make_record("good")
    enqueue = store.enqueue

    async def fail(*args: Any, **kwargs: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(store, "enqueue", fail)
    for _ in range(3):
        with pytest.raises(OSError):
            await t.accept([bad, big, good])
    monkeypatch.setattr(store, "enqueue", enqueue)
    await t.accept([bad, big, good])
    assert src.acked == [bad, big, good]
    assert len(src.nacked) == 9
    ids = [r["requestContext"]["requestId"] for r in dest.records]
    assert ids == [event_request_id("t", big.item_id), event_request_id("t", bad.item_id)]
    assert await store.queue_depth("t") == 1


async def test_a_record_its_source_could_not_build_is_not_enqueued_but_goes_to_the_destination(
    store: SQLiteStateStore,
) -> None:
    # Record.build_error (a source that could not build a record's shape from what it read):
    # never invoked on the asynchronous path either, even where filters would drop it
    # (apply_filter keeps it for this); it goes to the on-failure destination, acked.
    src, dest = FakeSource(), MemDestination()
    t = build(store, src, FakeBackend(), dest, filters=[{"body": {"kind": ["a"]}}])
    bad, good = make_record({"kind": "b"}), make_record({"kind": "a"})
    bad.build_error = BuildError("ValueError", "cannot parse 'secret'", "fakepush thing")
    await t.accept([bad, good])
    assert src.acked == [bad, good]
    assert await store.queue_depth("t") == 1
    [record] = dest.records
    assert record["requestContext"]["requestId"] == event_request_id("t", bad.item_id)
    assert record["requestPayload"] is None
    error = record["responsePayload"]
    assert error["errorType"] == "InvalidRequestContentException"
    assert "ValueError: cannot parse 'secret'" in error["errorMessage"]


class AckHeld(FakeSource):
    """A source whose ack waits until `ack_gate` is set (an ack that is a request)."""

    def __init__(self, records: list[Any]) -> None:
        super().__init__(records)
        self.ack_started = asyncio.Event()
        self.ack_gate = asyncio.Event()

    async def ack(self, records: Any) -> None:
        self.ack_started.set()
        await self.ack_gate.wait()
        await super().ack(records)


async def test_cancelled_while_acking_a_commit_gives_back_the_records_taken_during_it(
    tmp_path: Path,
) -> None:
    # A cancellation (a lost lease, a drain timeout) while the committed records are acked:
    # the records taken during that commit, not committed, are given back, not dropped.
    hook = HeldWrites()
    store = SQLiteStateStore(str(tmp_path / "state.db"), before_write=hook)
    await store.open()
    first = make_record("first")
    src = AckHeld([first])
    t = build(store, src, FakeBackend())
    loop_task = asyncio.create_task(t._accept_loop())
    try:
        await started(hook)
        later = [make_record(i) for i in range(3)]
        src.push(*later)
        await asyncio.sleep(0.05)
        hook.gate.set()
        async with asyncio.timeout(10):
            await src.ack_started.wait()
        loop_task.cancel()
        await asyncio.sleep(0.01)
        src.ack_gate.set()
        with pytest.raises(asyncio.CancelledError):
            await loop_task
    finally:
        hook.gate.set()
        src.ack_gate.set()
        await store.close()
    assert src.acked == [first]
    assert src.nacked == later


async def test_an_ack_that_raises_after_a_commit_gives_back_the_records_taken_during_it(
    tmp_path: Path,
) -> None:
    # The ack of a durable commit raises (a plugin source's): its records go back, and so do
    # the ones taken while its write was under way, which are not committed yet.
    first, later = make_record("first"), [make_record(i) for i in range(3)]
    src = AckFailsFirst([first])
    async with accept_loop_during_a_held_write(tmp_path, src, later) as hook:
        hook.gate.set()
        async with asyncio.timeout(10):
            while len(src.nacked) < 4:
                await asyncio.sleep(0.01)
    assert src.failed_acks == [[first]]
    # the later ones first: handed out again, the commit's own come out before them
    assert src.nacked[:4] == [*later, first]


@contextlib.asynccontextmanager
async def accept_loop_during_a_held_write(
    tmp_path: Path, src: FakeSource, later: list[Record]
) -> AsyncIterator[HeldWrites]:
    """The accept loop of `src` over a store whose first write is held (released with the
    hook's gate): `later` are handed out while it is; the loop is cancelled at the end."""
    hook = HeldWrites()
    store = SQLiteStateStore(str(tmp_path / "state.db"), before_write=hook)
    await store.open()
    t = build(store, src, FakeBackend())
    loop_task = asyncio.create_task(t._accept_loop())
    try:
        await started(hook)
        src.push(*later)
        await asyncio.sleep(0.05)
        yield hook
    finally:
        hook.gate.set()
        loop_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop_task
        await store.close()


async def test_a_receive_that_returns_records_as_the_loop_is_cancelled_gives_them_back(
    tmp_path: Path,
) -> None:
    # Records arrive just as the accept loop is cancelled during a commit: a receive that
    # returns them all the same (asyncio.wait_for on Python 3.11 returns a result that was
    # ready when the cancellation came) has them given back with the rest, not dropped.
    hook = HeldWrites()
    store = SQLiteStateStore(str(tmp_path / "state.db"), before_write=hook)
    await store.open()
    first = make_record("first")
    src = FakeSource([first])
    t = build(store, src, FakeBackend())
    loop_task = asyncio.create_task(t._accept_loop())
    try:
        await started(hook)
        await asyncio.sleep(0.02)  # the loop waits in a receive while the write is held
        late = make_record("late")
        src.push(late)
        loop_task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await loop_task
        await asyncio.sleep(0.05)
    finally:
        hook.gate.set()
        await store.close()
    assert late in src.queue or late in src.nacked
    assert first in src.nacked and src.acked == []


class LateReturn(FakeSource):
    """A source whose waiting receive, once cancelled, takes a moment and returns records all
    the same (a result that was ready as the cancellation came)."""

    def __init__(self, records: list[Any]) -> None:
        super().__init__(records)
        self.late: list[Any] = []
        self.cancelled = asyncio.Event()

    async def receive(self, max_records: int, timeout_s: float) -> list[Any]:
        if self.queue:
            return await super().receive(max_records, timeout_s)
        try:
            await asyncio.sleep(timeout_s)
        except asyncio.CancelledError:
            self.cancelled.set()
            await asyncio.sleep(0.05)
            return self.late
        return []


async def test_cancelled_while_a_receive_cancelled_at_the_writes_end_returns_gives_them_back(
    tmp_path: Path,
) -> None:
    # The write ends, the receive still waiting is cancelled and returns records all the same
    # a moment later; the loop is cancelled (a lost lease, a drain timeout) in that moment:
    # those records are given back with the rest, not dropped held by the source.
    hook = HeldWrites()
    store = SQLiteStateStore(str(tmp_path / "state.db"), before_write=hook)
    await store.open()
    first = make_record("first")
    src = LateReturn([first])
    late = make_record("late")
    src.late = [late]
    t = build(store, src, FakeBackend())
    loop_task = asyncio.create_task(t._accept_loop())
    try:
        await started(hook)
        await asyncio.sleep(0.02)  # the loop waits in a receive while the write is held
        hook.gate.set()
        async with asyncio.timeout(10):
            await src.cancelled.wait()
        loop_task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await loop_task
        await asyncio.sleep(0.1)
    finally:
        hook.gate.set()
        await store.close()
    assert late in src.nacked or late in src.acked


class TaskNoting(FakeBackend):
    """Notes which task makes each invocation."""

    def __init__(self) -> None:
        super().__init__()
        self.tasks: list[asyncio.Task[Any] | None] = []

    async def invoke(self, payload: bytes, **kw: Any) -> InvokeResult:
        self.tasks.append(asyncio.current_task())
        await asyncio.sleep(0)
        return await super().invoke(payload, **kw)


async def test_a_drain_invokes_its_events_in_one_task_per_slot(store: SQLiteStateStore) -> None:
    # A task per event cost a task's creation and a shielded completion task per event: a
    # slot's task goes on with the next buffered event instead.
    src, be = FakeSource(), TaskNoting()
    t = build(store, src, be, maximum_concurrency=2)
    now = t.rt.clock.time()
    await store.enqueue(
        [NewEvent("t", "f", b'{"n": %d}' % i, f"req-{i}", now, now, None) for i in range(40)]
    )
    await run_until(t, lambda: len(be.calls) == 40)
    assert len({id(task) for task in be.tasks}) <= 2
    assert await store.queue_depth("t") == 0


async def test_a_completion_keeps_its_event_in_flight_until_committed_and_stop_waits_for_it(
    tmp_path: Any,
) -> None:

    held, gate = threading.Event(), threading.Event()
    invoked = [False]

    def hook(conn: sqlite3.Connection) -> None:
        if invoked[0] and not held.is_set():
            held.set()
            gate.wait(10)  # the completion's commit stays open

    store = SQLiteStateStore(str(tmp_path / "s.db"), before_write=hook)
    await store.open()

    class MarkInvoked(FakeBackend):
        async def invoke(self, payload: bytes, **kw: Any) -> InvokeResult:
            invoked[0] = True
            return await super().invoke(payload, **kw)

    src, be = FakeSource([make_record(1)]), MarkInvoked()
    t = build(store, src, be)
    await t.accept(await src.receive(10, 0.1))
    task = asyncio.create_task(t.run())
    try:
        async with asyncio.timeout(10):
            while not held.is_set():
                await asyncio.sleep(0.01)
        # Invoked and being completed: still in flight (its lease extended), not yet counted.
        assert len(t._inflight) == 1
        assert t._succeeded._value.get() == 0
        t.stop()
        await asyncio.sleep(0.2)
        assert not task.done(), "the trigger stopped before its completion was committed"
    finally:
        gate.set()
        await asyncio.wait_for(task, 5)
    assert not t._inflight
    assert t._succeeded._value.get() == 1
    assert await store.queue_depth("t") == 0
    await store.close()


async def test_a_completion_that_cannot_commit_leaves_the_event_queued_and_says_so(
    tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    import sqlite3

    invoked = [False]

    def hook(conn: sqlite3.Connection) -> None:
        if invoked[0]:
            raise sqlite3.OperationalError("disk I/O error")

    store = SQLiteStateStore(str(tmp_path / "s.db"), before_write=hook)
    await store.open()

    class MarkInvoked(FakeBackend):
        async def invoke(self, payload: bytes, **kw: Any) -> InvokeResult:
            invoked[0] = True
            return await super().invoke(payload, **kw)

    src, be = FakeSource([make_record(1)]), MarkInvoked()
    t = build(store, src, be)
    await t.accept(await src.receive(10, 0.1))
    await run_until(t, lambda: any(r.msg == "event.crashed" for r in caplog.records))
    assert not t._inflight
    assert t._succeeded._value.get() == 0
    invoked[0] = False
    assert await store.queue_depth("t") == 1  # its lease expires, then it is invoked again
    await store.close()


class WithoutCompleteLater:
    """The store, minus `complete_later` (a store that only has the awaitable `complete`)."""

    def __init__(self, store: SQLiteStateStore) -> None:
        self.store = store

    def __getattr__(self, name: str) -> object:
        if name == "complete_later":
            raise AttributeError(name)
        return getattr(self.store, name)


async def test_a_store_without_complete_later_still_has_every_event_completed(
    store: SQLiteStateStore,
) -> None:
    plain = WithoutCompleteLater(store)
    src, be = FakeSource([make_record(i) for i in range(12)]), FakeBackend()
    rt = trigger_runtime(plain, src, be, None, "fakepush", maximum_concurrency=3)
    t = AsyncTrigger(rt, plain, lease_s=30)  # type: ignore[arg-type]
    assert t._complete_later is None
    await run_until(t, lambda: len(be.calls) == 12)
    assert not t._completing and not t._inflight
    assert t._succeeded._value.get() == 12
    assert await store.queue_depth("t") == 0


class HeldUntilReleased(FakeBackend):
    """Each invocation says it started, then waits for `release` before it succeeds."""

    def __init__(self) -> None:
        super().__init__()
        self.started = asyncio.Event()
        self.release = asyncio.Event()

    async def invoke(self, payload: bytes, **kw: Any) -> InvokeResult:
        self.started.set()
        await self.release.wait()
        return await super().invoke(payload, **kw)


async def test_a_stop_waits_for_the_completion_of_an_invocation_that_ends_during_the_drain(
    tmp_path: Any,
) -> None:
    # The invocation is under way when the stop comes and succeeds during the drain: its
    # completion is handed to the store then, and run() must not return before that commit.

    succeeded, held, gate = threading.Event(), threading.Event(), threading.Event()
    be = HeldUntilReleased()

    def hook(conn: sqlite3.Connection) -> None:
        if succeeded.is_set() and not held.is_set():
            held.set()
            gate.wait(10)  # the completion's commit stays open

    store = SQLiteStateStore(str(tmp_path / "s.db"), before_write=hook)
    await store.open()
    src = FakeSource([make_record(1)])
    t = build(store, src, be)
    await t.accept(await src.receive(10, 0.1))
    task = asyncio.create_task(t.run())
    try:
        await asyncio.wait_for(be.started.wait(), 10)
        t.stop()
        await asyncio.sleep(0.05)
        succeeded.set()  # the next write is the completion's
        be.release.set()
        async with asyncio.timeout(10):
            while not held.is_set():
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)
        assert not task.done(), "the trigger stopped before its completion was committed"
    finally:
        gate.set()
        await asyncio.wait_for(task, 5)
    assert not t._inflight
    assert t._succeeded._value.get() == 1
    assert await store.queue_depth("t") == 0
    await store.close()


async def test_an_invocation_still_running_during_a_stop_keeps_its_lease(
    store: SQLiteStateStore,
) -> None:
    # A drain lasts up to shutdown_timeout_s, which may be longer than the lease: the lease
    # of an invocation still under way is extended until it ends, or another claim (another
    # daemon on a shared store) would invoke the same event meanwhile.
    import time

    src, be = FakeSource([make_record(1)]), HeldUntilReleased()
    rt = trigger_runtime(store, src, be, None, "fakepush")
    # A 2 s lease, extended every third of it: a heartbeat may run up to 1.3 s late on a
    # loaded machine before the claim below could take the event.
    t = AsyncTrigger(rt, store, lease_s=2.0)
    await t.accept(await src.receive(10, 0.1))
    task = asyncio.create_task(t.run())
    try:
        await asyncio.wait_for(be.started.wait(), 10)
        t.stop()
        await asyncio.sleep(4.0)  # twice the lease, into the drain
        assert await store.claim("t", 10, 30.0, time.time()) == []
    finally:
        be.release.set()
        await asyncio.wait_for(task, 5)
    assert await store.queue_depth("t") == 0


async def test_a_write_failing_after_its_accept_was_cancelled_is_no_unretrieved_traceback(
    store: SQLiteStateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A lost lease or a stop cancels an accept while its shielded write goes on; when that
    # write then fails, nobody awaits it: asyncio reported "Task exception was never
    # retrieved" with a traceback in the daemon's log. The records were given back.
    from triggerd.state.sqlite import StateStoreError

    entered, fail = asyncio.Event(), asyncio.Event()

    async def enqueue(*args: Any, **kwargs: Any) -> None:
        entered.set()
        await fail.wait()
        raise StateStoreError("state store cut off")

    monkeypatch.setattr(store, "enqueue", enqueue)
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        src, be = FakeSource([make_record(1)]), FakeBackend()
        t = build(store, src, be)
        records = await src.receive(10, 0.1)
        accepting = asyncio.ensure_future(t.accept(records))
        await asyncio.wait_for(entered.wait(), 5)
        accepting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await accepting
        assert src.nacked == records
        fail.set()
        for _ in range(5):  # the write's task ends, then its callbacks run
            await asyncio.sleep(0)
        import gc

        gc.collect()  # an unretrieved exception is reported when its task is collected
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(None)
    assert reported == []


async def _cancel_during_delivery(store: SQLiteStateStore, dest: HeldDestination) -> FakeBackend:
    """Run a trigger whose only event fails its one attempt; stop it, and cancel it (a drain
    timeout) while its on-failure record is being delivered. The backend."""
    src, be = FakeSource([make_record(1)]), FakeBackend(always_fail)
    t = build(store, src, be, dest, maximum_retry_attempts=0)
    await t.accept(await src.receive(10, 0.1))
    task = asyncio.create_task(t.run())
    await asyncio.wait_for(dest.sending.wait(), 10)
    t.stop()
    task.cancel()
    await asyncio.sleep(0.1)  # the delivery is still under way when the cancel lands
    dest.accept.set()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 10)
    return be


async def test_a_failure_record_delivered_after_a_drain_timeout_completes_its_event(
    store: SQLiteStateStore,
) -> None:
    # Before: the cancelled event was given back with its attempts reset, so the next start
    # invoked it again and wrote its failure record a second time.
    dest = HeldDestination()
    be = await _cancel_during_delivery(store, dest)
    assert len(be.calls) == 1
    assert len(dest.records) == 1
    assert await store.queue_depth("t") == 0
    assert len(await store.dlq_list("t")) == 1


async def test_a_failure_record_not_delivered_after_a_drain_timeout_goes_again_not_the_event(
    store: SQLiteStateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    import triggerd.delivery.asyncpath as asyncpath

    monkeypatch.setattr(asyncpath, "DELIVERY_GRACE_S", 0.05, raising=False)  # < the 0.1 s hold
    be = await _cancel_during_delivery(store, HeldDestination())
    assert len(be.calls) == 1
    [event] = await store.claim("t", 10, 30.0, time.time())
    assert event.attempts == 1, "given back with its attempt counted"
    await store.release(event.id, available_at=time.time(), attempts=event.attempts)
    # The next start: the record goes to the destination; the function is not invoked.
    src, be2, dest = FakeSource(), FakeBackend(), MemDestination()
    t = build(store, src, be2, dest, maximum_retry_attempts=0)
    await run_until(t, lambda: len(dest.records) == 1)
    assert be2.calls == []
    context = dest.records[0]["requestContext"]
    assert (context["condition"], context["approximateInvokeCount"]) == ("RetriesExhausted", 1)
    await asyncio.sleep(0.05)
    assert await store.queue_depth("t") == 0


async def test_a_retry_released_when_the_drain_times_out_keeps_its_counted_attempt(
    store: SQLiteStateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The retry's release (attempts 1) was shielded while the cancelled handler released the
    # event again with attempts 0: the function got one attempt more than configured.
    import time

    releasing, gate = asyncio.Event(), asyncio.Event()
    release = store.release

    async def held_release(
        event_id: int, *, available_at: float, attempts: int, last_result: bytes | None = None
    ) -> None:
        releasing.set()
        await gate.wait()
        await release(
            event_id, available_at=available_at, attempts=attempts, last_result=last_result
        )

    monkeypatch.setattr(store, "release", held_release)
    src, be = FakeSource([make_record(1)]), FakeBackend(always_fail)
    t = build(store, src, be, retry_base_delay_s=30)
    await t.accept(await src.receive(10, 0.1))
    task = asyncio.create_task(t.run())
    await asyncio.wait_for(releasing.wait(), 10)
    t.stop()
    task.cancel()
    await asyncio.sleep(0.1)
    gate.set()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 10)
    monkeypatch.setattr(store, "release", release)
    await store.recover_leases()
    [event] = await store.claim("t", 10, 30.0, time.time() + 3600)
    assert event.attempts == 1


async def test_an_events_lease_is_extended_while_its_failure_record_takes_its_grace(
    store: SQLiteStateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The heartbeat was cancelled with the invocations at the drain timeout, so a short lease
    # ran out during the on-failure delivery's grace and another daemon on a shared store
    # could claim the event (attempts still 0) and invoke it again.
    import time

    import triggerd.delivery.asyncpath as asyncpath

    monkeypatch.setattr(asyncpath, "DELIVERY_GRACE_S", 10.0)
    dest = HeldDestination()
    src, be = FakeSource([make_record(1)]), FakeBackend(always_fail)
    rt = trigger_runtime(store, src, be, dest, "fakepush", maximum_retry_attempts=0)
    t = AsyncTrigger(rt, store, lease_s=1.5)
    await t.accept(await src.receive(10, 0.1))
    task = asyncio.create_task(t.run())
    try:
        await asyncio.wait_for(dest.sending.wait(), 10)
        t.stop()
        await asyncio.sleep(0.05)  # the drain, then its timeout
        task.cancel()
        await asyncio.sleep(2.0)  # longer than the lease: the delivery is still under way
        assert await store.claim("t", 10, 30.0, time.time()) == [], "claimable elsewhere"
    finally:
        dest.accept.set()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)
    assert len(dest.records) == 1
    assert await store.queue_depth("t") == 0


async def test_an_age_expired_record_not_delivered_is_sent_at_the_next_start_not_invoked(
    store: SQLiteStateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Its next retry would have come after its maximum age (EventAgeExceeded, attempts 1 of
    # 2): given back with only its attempts, the next start invoked it again, which Lambda
    # would not do. It keeps its condition and last result: the next start sends its record.
    import triggerd.delivery.asyncpath as asyncpath

    monkeypatch.setattr(asyncpath, "DELIVERY_GRACE_S", 0.05)
    dest = HeldDestination()
    src, be = FakeSource([make_record(1)]), FakeBackend(always_fail)
    t = build(store, src, be, dest, maximum_event_age_s=60, retry_base_delay_s=120)
    await t.accept(await src.receive(10, 0.1))
    task = asyncio.create_task(t.run())
    await asyncio.wait_for(dest.sending.wait(), 10)
    t.stop()
    await asyncio.sleep(0.05)  # the drain, then its timeout
    task.cancel()
    await asyncio.sleep(0.1)
    dest.accept.set()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 10)
    assert len(be.calls) == 1 and dest.records == []
    await store.recover_leases()
    dest2, be2 = MemDestination(), FakeBackend()
    t2 = build(store, FakeSource(), be2, dest2, maximum_event_age_s=60, retry_base_delay_s=120)
    await run_until(t2, lambda: len(dest2.records) == 1)
    assert be2.calls == [], "invoked again at a restart"
    [record] = dest2.records
    assert_carries_the_error(record, "EventAgeExceeded", 1)
    assert await store.queue_depth("t") == 0


async def test_a_failure_record_sent_at_the_next_start_carries_the_functions_error(
    store: SQLiteStateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    import triggerd.delivery.asyncpath as asyncpath

    monkeypatch.setattr(asyncpath, "DELIVERY_GRACE_S", 0.05)
    src, be = FakeSource([make_record(1)]), FakeBackend(always_fail)
    t = build(store, src, be, HeldDestination(), maximum_retry_attempts=0)
    await t.accept(await src.receive(10, 0.1))
    task = asyncio.create_task(t.run())
    await asyncio.sleep(0.5)  # invoked, failed; its record held
    t.stop()
    await asyncio.sleep(0.05)  # the drain, then its timeout
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 10)
    await store.recover_leases()
    dest = MemDestination()
    t2 = build(store, FakeSource(), FakeBackend(), dest, maximum_retry_attempts=0)
    await run_until(t2, lambda: len(dest.records) == 1)
    record = dest.records[0]
    assert record["requestContext"]["approximateInvokeCount"] == 1
    # As Lambda's RetriesExhausted record (and the one written without the stop) has them:
    assert record["responseContext"] == {
        "statusCode": 200,
        "executedVersion": "$LATEST",
        "functionError": "Unhandled",
    }
    assert record["responsePayload"]["errorMessage"] == "broken"


async def test_a_store_failing_the_release_after_an_undelivered_record_is_one_line(
    store: SQLiteStateStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The release ran after the cancel was delivered, so its StateStoreError replaced the
    # cancel and reached _handle's task boundary: an event.crashed traceback at every such stop.
    import triggerd.delivery.asyncpath as asyncpath
    from triggerd.state.sqlite import StateStoreError

    monkeypatch.setattr(asyncpath, "DELIVERY_GRACE_S", 0.05)

    async def failing_release(
        event_id: int, *, available_at: float, attempts: int, last_result: bytes | None = None
    ) -> None:
        raise StateStoreError("the state store is closed")

    dest = HeldDestination()
    src, be = FakeSource([make_record(1)]), FakeBackend(always_fail)
    t = build(store, src, be, dest, maximum_retry_attempts=0)
    await t.accept(await src.receive(10, 0.1))
    task = asyncio.create_task(t.run())
    await asyncio.wait_for(dest.sending.wait(), 10)
    monkeypatch.setattr(store, "release", failing_release)
    t.stop()
    await asyncio.sleep(0.05)  # the drain, then its timeout
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 10)
    assert [r.msg for r in caplog.records if r.exc_info] == []
    assert "settlement.failed_after_cancel" in [r.msg for r in caplog.records]


async def test_a_record_at_its_destination_when_the_grace_ends_completes_its_event(
    store: SQLiteStateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The grace ended during the DLQ index write that follows the send: the delivery counted
    # as not delivered and was cancelled, the event given back, and the next start sent the
    # record a second time.
    import triggerd.delivery.asyncpath as asyncpath

    monkeypatch.setattr(asyncpath, "DELIVERY_GRACE_S", 0.05)
    indexing, gate = asyncio.Event(), asyncio.Event()
    dlq_add = store.dlq_add

    async def held_dlq_add(**entry: Any) -> Any:
        indexing.set()
        await gate.wait()
        return await dlq_add(**entry)

    monkeypatch.setattr(store, "dlq_add", held_dlq_add)
    src, be, dest = FakeSource([make_record(1)]), FakeBackend(always_fail), MemDestination()
    t = build(store, src, be, dest, maximum_retry_attempts=0)
    await t.accept(await src.receive(10, 0.1))
    task = asyncio.create_task(t.run())
    await asyncio.wait_for(indexing.wait(), 10)
    t.stop()
    await asyncio.sleep(0.05)  # the drain, then its timeout
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 10)
    gate.set()
    await asyncio.sleep(0.05)
    assert len(dest.records) == 1
    assert await store.queue_depth("t") == 0, "given back: the next start sends it again"


async def test_a_retry_sent_to_the_destination_after_the_limit_was_lowered_carries_its_error(
    store: SQLiteStateStore,
) -> None:
    # Failed once with two retries allowed, then a restart with maximum_retry_attempts = 0:
    # the waiting retry is not invoked; its record has the first attempt's error, as the
    # record of a last attempt does (before, responseContext was null: "never ran").
    src, be = FakeSource([make_record(1)]), FakeBackend(always_fail)
    t = build(store, src, be, maximum_retry_attempts=2, retry_base_delay_s=3600)
    await t.accept(await src.receive(10, 0.1))
    await run_until(t, lambda: len(be.calls) == 1)
    [waiting] = await store.claim("t", 10, 30.0, time.time() + 7200)
    assert waiting.attempts == 1 and waiting.last_result is not None
    await store.release(waiting.id, available_at=0, attempts=waiting.attempts)
    dest, be2 = MemDestination(), FakeBackend()
    t2 = build(store, FakeSource(), be2, dest, maximum_retry_attempts=0)
    await run_until(t2, lambda: len(dest.records) == 1)
    assert be2.calls == []
    [record] = dest.records
    assert_carries_the_error(record, "RetriesExhausted", 1)
    assert await store.queue_depth("t") == 0


class _Later:
    """A clock `offset_s` ahead of the wall clock: a start that comes later."""

    def __init__(self, offset_s: float) -> None:
        self.offset_s = offset_s

    def time(self) -> float:
        return time.time() + self.offset_s

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


def _epoch(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


async def test_a_failure_record_sent_at_the_next_start_keeps_the_time_it_was_given_up(
    store: SQLiteStateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The record cut short by a stop is sent at the next start "as it would have been": its
    # timestamp is when the event was given up on (as without the stop, where a destination
    # retrying its delivery does not change it), not when the daemon started again.
    import triggerd.delivery.asyncpath as asyncpath

    monkeypatch.setattr(asyncpath, "DELIVERY_GRACE_S", 0.05, raising=False)
    await _cancel_during_delivery(store, HeldDestination())
    stopped = time.time()
    await store.recover_leases()
    src, be2, dest = FakeSource(), FakeBackend(), MemDestination()
    t = build(store, src, be2, dest, maximum_retry_attempts=0)
    t.rt.clock = _Later(3600.0)  # the next start is an hour later
    await run_until(t, lambda: len(dest.records) == 1)
    assert be2.calls == []
    [record] = dest.records
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert _epoch(record["timestamp"]) <= stopped, "stamped with the next start's time"


async def test_a_throttle_after_a_function_error_keeps_the_functions_error_for_the_record(
    store: SQLiteStateStore,
) -> None:
    # Attempt 1 failed (its error kept with the event); the retry was throttled until the
    # event's age ran out. A throttle is not an attempt (approximateInvokeCount stays 1): the
    # record carries the function's error, as the kept outcome promises, not the 429 that
    # replaced it in the store (responseContext 429, no functionError, no responsePayload).
    respond = scripted(
        ValueError("broken"), InvokeResult(Outcome.THROTTLED, b"", "", retry_after_s=120.0)
    )

    src, be, dest = FakeSource([make_record(1)]), FakeBackend(respond), MemDestination()
    t = build(store, src, be, dest, maximum_event_age_s=60, retry_base_delay_s=0.05)
    await run_until(t, lambda: len(dest.records) == 1)
    assert len(be.calls) == 2
    [record] = dest.records
    assert_carries_the_error(record, "EventAgeExceeded", 1)


async def test_a_throttle_after_a_function_error_does_not_write_the_kept_error_again(
    store: SQLiteStateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The function's error (up to 6 MB) is in the store already: a throttle's release keeps
    # it without sending it again.
    respond = scripted(
        ValueError("broken"), InvokeResult(Outcome.THROTTLED, b"", "", retry_after_s=30.0)
    )

    written: list[bytes | None] = []
    release = store.release

    async def recording_release(
        event_id: int, *, available_at: float, attempts: int, last_result: bytes | None = None
    ) -> None:
        written.append(last_result)
        await release(
            event_id, available_at=available_at, attempts=attempts, last_result=last_result
        )

    monkeypatch.setattr(store, "release", recording_release)
    src, be = FakeSource([make_record(1)]), FakeBackend(respond)
    t = build(store, src, be, maximum_event_age_s=600, retry_base_delay_s=0.05)
    await run_until(t, lambda: len(written) == 2)
    assert written[0] is not None and written[1] is None
    [event] = await store.claim("t", 10, 30.0, time.time() + 60)
    assert event.last_result == written[0], "the function's error is still the kept result"
