"""How the poll pipeline acks: a source whose acks only update its memory (`AcksInMemory`) is
acked through `ack_now`, without a task per ack; the trigger's metric series are labelled
once and appear when first counted; a batch's unsettled records; an ack that raises settles
nothing: its records are given back."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import pytest

from tests.fakes import (
    AckFailsFirst,
    FakeBackend,
    FakeSource,
    make_record,
    run_until,
    trigger_runtime,
)
from triggerd.delivery.pipeline import SyncTrigger
from triggerd.delivery.retry import Backoff
from triggerd.delivery.unsettled import Unsettled
from triggerd.state.sqlite import SQLiteStateStore
from triggerd.types import AcksInMemory, Record, RetryableError


class InMemorySource(FakeSource):
    """Acks through `ack_now` only: its coroutine `ack` fails the test if called."""

    def ack_now(self, records: Sequence[Record]) -> None:
        self.acked.extend(records)

    async def ack(self, records: Sequence[Record]) -> None:
        raise AssertionError("the pipeline awaited ack instead of calling ack_now")


async def test_in_memory_acks_go_through_ack_now(store: SQLiteStateStore) -> None:
    recs = [make_record({"kind": "image"}, item_id=f"m{i}") for i in range(5)]
    recs.append(make_record({"kind": "text"}, item_id="dropped"))
    src, be = InMemorySource(recs), FakeBackend()
    assert isinstance(src, AcksInMemory)
    rt = trigger_runtime(store, src, be, filters=[{"body": {"kind": ["image"]}}], batch_size=2)
    await run_until(SyncTrigger(rt), lambda: len(src.acked) == 6)
    # delivered ones (in three batches) and the filtered-out one, none given back
    assert sorted(r.item_id for r in src.acked) == sorted(r.item_id for r in recs)
    assert src.nacked == []
    assert [len(c["Records"]) for c in be.calls] == [2, 2, 1]
    m = rt.metrics
    assert m.records_succeeded.labels("t")._value.get() == 5
    assert m.records_filtered.labels("t")._value.get() == 1
    assert m.records_received.labels("t")._value.get() == 6


async def test_a_series_appears_only_once_counted(store: SQLiteStateStore) -> None:
    src, be = FakeSource([make_record(1), make_record(2)]), FakeBackend()
    rt = trigger_runtime(store, src, be)
    await run_until(SyncTrigger(rt), lambda: len(src.acked) == 2)
    text = rt.metrics.exposition().decode()
    assert 'triggerd_records_succeeded_total{trigger="t"} 2.0' in text
    # nothing was filtered out or retried: as with labels() at each use, no series
    assert 'triggerd_records_filtered_total{trigger="t"}' not in text
    assert 'triggerd_records_retried_total{trigger="t"}' not in text


def test_unsettled_records_keep_batch_order_through_partial_settlements() -> None:
    batch = [make_record(i) for i in range(5)]
    whole = Unsettled(batch)
    assert len(whole) == 5 and whole.records() == batch
    assert whole.records() is not batch, "a copy: giving back must not change the batch"
    whole.clear()
    assert len(whole) == 0 and whole.records() == []
    part = Unsettled(batch)
    part.discard([batch[3], batch[1], make_record("not in the batch")])
    assert len(part) == 3 and part.records() == [batch[0], batch[2], batch[4]]
    part.discard([batch[3], batch[0]])  # batch[3] was settled already
    assert part.records() == [batch[2], batch[4]]


def test_records_whose_ack_raised_are_unsettled_again_in_batch_order() -> None:
    batch = [make_record(i) for i in range(5)]
    part = Unsettled(batch)
    part.discard([batch[0], batch[1], batch[3]])
    part.restore([batch[3], batch[0]])
    assert part.records() == [batch[0], batch[2], batch[3], batch[4]]
    whole = Unsettled(batch)
    whole.clear()
    stranger = make_record("not in the batch")
    whole.restore([batch[4], stranger, batch[1]])
    assert whole.records() == [batch[1], batch[4], stranger]
    untouched = Unsettled(batch)
    untouched.restore([batch[2]])
    assert untouched.records() == batch


async def test_records_whose_ack_raised_are_given_back_and_delivered_again(
    store: SQLiteStateStore,
) -> None:
    # A plugin source whose ack raises (a request that failed): the records are not settled.
    # Before, they were neither acked nor nacked: held by the source for good, never handed
    # out again while the daemon ran.
    recs = [make_record(i, item_id=f"m{i}") for i in range(3)]
    src, be = AckFailsFirst(recs, redeliver=True), FakeBackend()
    rt = trigger_runtime(store, src, be, batch_size=10)
    await run_until(SyncTrigger(rt), lambda: len(src.acked) == 3)
    assert src.failed_acks == [recs]
    assert src.nacked == recs, "given back, in batch order"
    assert not any(r.failed for r in src.nacked), "given back, not a failed attempt"
    assert [[r["body"] for r in c["Records"]] for c in be.calls] == [["0", "1", "2"]] * 2
    assert src.acked == recs


async def test_an_ack_that_keeps_failing_backs_off_rather_than_invoking_in_a_loop(
    store: SQLiteStateStore,
) -> None:
    # Each failed ack crashes its batch, whose records go back and come out again: without a
    # pause between, the function was invoked about 2,300 times a second. Now the crashed
    # batch holds its records for the throttle backoff (here longer than the test), and the
    # stop cuts that wait short and gives them back.
    src, be = AckFailsFirst([make_record(1)], redeliver=True, failures=10**9), FakeBackend()
    trigger, task = await crashed_once(store, src, be)
    await asyncio.sleep(0.5)
    assert len(be.calls) == 1 and src.nacked == [], "held for the backoff, not invoked again"
    trigger.stop()
    await asyncio.wait_for(task, 5)
    assert {r.item_id for r in src.nacked} == {src.failed_acks[0][0].item_id}, "given back"


async def test_a_crashed_batch_s_wait_ends_when_its_keys_are_released(
    store: SQLiteStateStore,
) -> None:
    # A revocation or a lease's end releases the keys: the crashed batch gives its records
    # back then, not after its backoff (the release would time out, and a revoked Kafka
    # partition commit while the batch still held its records).
    rec = make_record(1, key="k")
    src, be = AckFailsFirst([rec], failures=10**9), FakeBackend()
    trigger, task = await crashed_once(store, src, be)
    try:
        assert "k" in trigger.retrying
        async with asyncio.timeout(10):
            await trigger.release_keys(["k"], 5.0)
        assert [r.item_id for r in src.nacked] == [rec.item_id]
        assert "k" not in trigger.busy and "k" not in trigger.retrying
    finally:
        trigger.stop()
        await asyncio.wait_for(task, 5)


async def test_a_full_buffer_of_a_waiting_key_is_given_back_once_per_poll_not_in_a_loop(
    store: SQLiteStateStore,
) -> None:
    # The buffer fills with the records of a key whose batch waits (here a crash's backoff);
    # they are given back so that other keys can be received, and a source that hands them
    # straight back had them given back again at once, for the whole wait.
    src, be = (
        AckFailsFirst([make_record(0, key="k")], redeliver=True, failures=10**9),
        FakeBackend(),
    )
    trigger, task = await crashed_once(store, src, be, batch_size=2)
    try:
        src.push(*[make_record(i, key="k") for i in range(1, 60)])
        await asyncio.sleep(0.5)
        # one give-back of at most a buffer (10) per poll timeout (0.05 s): well under 500
        assert 0 < len(src.nacked) < 500, len(src.nacked)
        assert len(be.calls) == 1
    finally:
        trigger.stop()
        await asyncio.wait_for(task, 5)


async def test_filtered_out_records_whose_ack_raised_are_given_back(
    store: SQLiteStateStore,
) -> None:
    kept, dropped = make_record({"kind": "image"}), make_record({"kind": "text"})
    src, be = AckFailsFirst([kept, dropped], redeliver=True), FakeBackend()
    rt = trigger_runtime(store, src, be, filters=[{"body": {"kind": ["image"]}}])
    await run_until(SyncTrigger(rt), lambda: len(src.acked) == 2)
    assert src.failed_acks == [[dropped]]
    assert src.nacked == [dropped]
    assert sorted(r.item_id for r in src.acked) == sorted([kept.item_id, dropped.item_id])
    assert len(be.calls) == 1, "the filtered-out record is filtered out again, not invoked"


async def test_records_all_filtered_out_and_acked_in_memory_let_other_tasks_run(
    store: SQLiteStateStore,
) -> None:
    # A source with records ready in memory (the postgres source's shard log, a streamed
    # transaction read back from its spill) returns them without suspending, and its ack does
    # not suspend either: with every record filtered out, the producer must still let the
    # event loop run between two receives (lease renewals, stop, other triggers), as it did
    # when the ack was a task of its own.
    recs = [make_record({"kind": "text"}) for _ in range(500)]
    src = InMemorySource(recs)
    rt = trigger_runtime(store, src, FakeBackend(), filters=[{"body": {"kind": ["image"]}}])
    t = SyncTrigger(rt)
    task = asyncio.create_task(t.run())
    seen: list[int] = []
    try:
        for _ in range(20):
            await asyncio.sleep(0)
            seen.append(len(src.acked))
    finally:
        t.stop()
        await asyncio.wait_for(task, 5)
    assert any(0 < n < len(recs) for n in seen), f"no turn while the records were acked: {seen}"
    # the stop was heard before the source ran out: the rest was never received
    assert len(src.acked) + len(src.queue) == len(recs) and src.nacked == []


class ReceiveFails(FakeSource):
    """Its first receive raises `error`."""

    def __init__(self, records: list[Record], error: Exception) -> None:
        super().__init__(records)
        self.error: Exception | None = error

    async def receive(self, max_records: int, timeout_s: float) -> list[Record]:
        if self.error is not None:
            error, self.error = self.error, None
            raise error
        return await super().receive(max_records, timeout_s)


async def test_a_receive_failure_the_source_knows_is_one_line_and_others_keep_their_traceback(
    store: SQLiteStateStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="test")
    for error in (RetryableError("slot s is in use elsewhere"), KeyError("a bug")):
        src, be = ReceiveFails([make_record(1)], error), FakeBackend()
        rt = trigger_runtime(store, src, be)
        rt.throttle_backoff = Backoff(base_s=0.01, max_s=0.01)
        await run_until(SyncTrigger(rt), lambda src=src: len(src.acked) == 1)  # type: ignore[misc]
    known, bug = [r for r in caplog.records if r.getMessage() == "source.receive_failed"]
    assert known.levelno == logging.ERROR and known.exc_info is None
    assert known.__dict__["error"] == "slot s is in use elsewhere"
    assert bug.exc_info is not None and bug.exc_info[0] is KeyError


async def crashed_once(
    store: SQLiteStateStore, src: AckFailsFirst, be: FakeBackend, **trigger: Any
) -> tuple[SyncTrigger, asyncio.Task[None]]:
    """`src`'s trigger, running, once its first batch crashed on the failed ack: the batch
    waits its throttle backoff (60 s, longer than the test) before it gives back."""
    rt = trigger_runtime(store, src, be, **trigger)
    rt.throttle_backoff = Backoff(base_s=60, max_s=60)
    trigger_ = SyncTrigger(rt)
    task = asyncio.create_task(trigger_.run())
    async with asyncio.timeout(10):
        while not src.failed_acks:
            await asyncio.sleep(0.01)
    return trigger_, task
