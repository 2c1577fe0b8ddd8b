"""Poison isolation on queue sources (SQS/RabbitMQ-style, failed records go back to the source):
a wholly failed batch is bisected down to single records before anything reaches the on-failure
destination, so only a record that failed on its own lands there; and what the switch does."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tests.fakes import (
    FakeBackend,
    FakeSource,
    MemDestination,
    SteppedClock,
    fake_registry,
    make_record,
    one_trigger,
    run_until,
    trigger_runtime,
)
from triggerd.delivery.pipeline import SyncTrigger
from triggerd.state.sqlite import SQLiteStateStore
from triggerd.types import Record

MEM = {"type": "mem"}


def queue_trigger(
    store: SQLiteStateStore, src: FakeSource, be: FakeBackend, dest: MemDestination, **kw: Any
) -> SyncTrigger:
    kw.setdefault("batch_size", 10)
    kw.setdefault("batching_window_s", 0.2)
    kw.setdefault("maximum_concurrency", 1)
    return SyncTrigger(trigger_runtime(store, src, be, dest, "fakequeue", **kw))


def bodies(event: dict[str, Any]) -> list[Any]:
    """Each record's body: the JSON value, or the raw text ("poison")."""
    out: list[Any] = []
    for r in event["Records"]:
        try:
            out.append(orjson.loads(r["body"]))
        except orjson.JSONDecodeError:
            out.append(r["body"])
    return out


def poison_raises(event: dict[str, Any]) -> Any:
    if "poison" in bodies(event):
        raise ValueError("poison")
    return None


def ten_with_a_poison(poison_at: int = 6, key: str | None = None) -> list[Record]:
    return [make_record("poison" if i == poison_at else i, f"m{i}", key=key) for i in range(10)]


def successful_bodies(be: FakeBackend) -> list[Any]:
    return sorted(b for call in be.calls if "poison" not in bodies(call) for b in bodies(call))


async def test_only_the_poison_reaches_the_destination_once(store: SQLiteStateStore) -> None:
    src, dest, be = (
        FakeSource(ten_with_a_poison(), redeliver=True),
        MemDestination(),
        FakeBackend(poison_raises),
    )
    t = queue_trigger(store, src, be, dest, maximum_retry_attempts=1, on_failure=MEM)
    assert t.policy.bisect_batch_on_function_error, "on by default with a retry limit"
    await run_until(t, lambda: len(src.acked) == 10)
    [record] = dest.records
    assert bodies(record["payload"]) == ["poison"]
    assert record["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 2
    assert successful_bodies(be) == [i for i in range(10) if i != 6], "each good one once"
    assert {r.item_id for r in src.nacked} == {"m6"}, "only the poison went back to the queue"
    assert sorted(r.item_id for r in src.acked) == sorted(f"m{i}" for i in range(10))


async def test_bisection_takes_halves_down_to_the_single_poison(
    store: SQLiteStateStore,
) -> None:
    src, dest, be = (
        FakeSource(ten_with_a_poison(), redeliver=True),
        MemDestination(),
        FakeBackend(poison_raises),
    )
    t = queue_trigger(store, src, be, dest, maximum_retry_attempts=0, on_failure=MEM)
    await run_until(t, lambda: len(src.acked) == 10)
    sizes = [len(c["Records"]) for c in be.calls]
    # 10 -> 5 + 5(poison); 5 -> 2(poison) + 3; 2 -> 1 + 1(poison): 7 calls, not 1 + 10
    assert sizes == [10, 5, 5, 2, 1, 1, 3]
    assert [bodies(c) for c in be.calls if len(c["Records"]) == 1] == [[5], ["poison"]]
    assert [bodies(r["payload"]) for r in dest.records] == [["poison"]]
    assert src.nacked == []


async def test_switched_off_the_whole_batch_fails_together(store: SQLiteStateStore) -> None:
    src, dest, be = (
        FakeSource(ten_with_a_poison(), redeliver=True),
        MemDestination(),
        FakeBackend(poison_raises),
    )
    t = queue_trigger(
        store,
        src,
        be,
        dest,
        maximum_retry_attempts=1,
        on_failure=MEM,
        bisect_batch_on_function_error=False,
    )
    await run_until(t, lambda: len(src.acked) == 10)
    assert [len(c["Records"]) for c in be.calls] == [10, 10]
    # One record per message given up (each kept whole where its queue deletes it).
    assert [len(bodies(record["payload"])) for record in dest.records] == [1] * 10
    assert sorted((b for r in dest.records for b in bodies(r["payload"])), key=str) == sorted(
        [i for i in range(10) if i != 6] + ["poison"], key=str
    )


async def test_a_failed_single_record_goes_back_to_the_queue_before_its_last_attempt(
    store: SQLiteStateStore,
) -> None:
    src, dest, be = (
        FakeSource(ten_with_a_poison(), redeliver=True),
        MemDestination(),
        FakeBackend(poison_raises),
    )
    t = queue_trigger(store, src, be, dest, maximum_retry_attempts=2, on_failure=MEM)
    await run_until(t, lambda: len(src.acked) == 10)
    assert [r.item_id for r in src.nacked] == ["m6", "m6"]
    assert [bodies(c) for c in be.calls].count(["poison"]) == 3
    assert dest.records[0]["requestContext"]["approximateInvokeCount"] == 3


async def test_a_batch_the_function_answered_is_not_split(store: SQLiteStateStore) -> None:
    def respond(event: dict[str, Any]) -> Any:
        failed = [r["messageId"] for r in event["Records"] if r["body"] == "poison"]
        return {"batchItemFailures": [{"itemIdentifier": i} for i in failed]}

    src, dest, be = (
        FakeSource(ten_with_a_poison(), redeliver=True),
        MemDestination(),
        FakeBackend(respond),
    )
    t = queue_trigger(
        store,
        src,
        be,
        dest,
        maximum_retry_attempts=0,
        on_failure=MEM,
        report_batch_item_failures=True,
    )
    await run_until(t, lambda: len(src.acked) == 10)
    assert [len(c["Records"]) for c in be.calls] == [10], "its partial response is trusted"
    assert [bodies(r["payload"]) for r in dest.records] == [["poison"]]


async def test_with_partial_responses_a_batch_that_raised_is_still_split(
    store: SQLiteStateStore,
) -> None:
    """report_batch_item_failures = true, but the poison makes the function raise (no
    response to read): the batch is bisected, and only the poison reaches the destination."""
    src, dest, be = (
        FakeSource(ten_with_a_poison(), redeliver=True),
        MemDestination(),
        FakeBackend(poison_raises),
    )
    t = queue_trigger(
        store,
        src,
        be,
        dest,
        maximum_retry_attempts=1,
        on_failure=MEM,
        report_batch_item_failures=True,
    )
    await run_until(t, lambda: len(src.acked) == 10)
    [record] = dest.records
    assert bodies(record["payload"]) == ["poison"]
    assert successful_bodies(be) == [i for i in range(10) if i != 6], "each good one once"
    assert {r.item_id for r in src.nacked} == {"m6"}


async def test_a_key_stays_in_order_when_its_poison_goes_back(store: SQLiteStateStore) -> None:
    """FIFO groups: once a record of a key failed on its own and went back to the queue, the
    key's later records in the bisected batch are given back behind it, not invoked."""
    recs = [make_record(i, f"m{i}", key="g") for i in range(4)]
    recs.insert(1, make_record("poison", "mp", key="g"))
    recs.append(make_record(9, "other", key="h"))
    src, dest, be = FakeSource(recs), MemDestination(), FakeBackend(poison_raises)
    t = queue_trigger(store, src, be, dest, maximum_retry_attempts=5, on_failure=MEM)
    await run_until(t, lambda: len(src.acked) + len(src.nacked) == 6)
    assert [r.item_id for r in src.nacked] == ["mp", "m1", "m2", "m3"]
    assert [r.failed for r in src.nacked] == [True, False, False, False], (
        "only the poison failed an attempt; the rest of its key is only given back"
    )
    assert sorted(r.item_id for r in src.acked) == ["m0", "other"]
    calls = [bodies(c) for c in be.calls]
    alone = calls.index(["poison"])
    assert calls[alone + 1 :] == [[9]], "after the poison failed alone only key h went on"
    succeeded = [b for c in calls if "poison" not in c for b in c]
    assert sorted(succeeded) == [0, 9]
    assert dest.records == []


async def test_stop_mid_bisect_gives_every_unsettled_record_back(
    store: SQLiteStateStore,
) -> None:
    src, dest = FakeSource(ten_with_a_poison()), MemDestination()
    triggers: list[SyncTrigger] = []

    def respond(event: dict[str, Any]) -> Any:
        if len(event["Records"]) == 5:
            triggers[0].stop()  # stopping while the halves are being tried
        return poison_raises(event)

    be = FakeBackend(respond)
    t = queue_trigger(store, src, be, dest, maximum_retry_attempts=0, on_failure=MEM)
    triggers.append(t)
    await run_until(t, lambda: t.stopping)
    settled = [r.item_id for r in src.acked + src.nacked]
    assert sorted(settled) == sorted(f"m{i}" for i in range(10)), "each settled exactly once"
    assert dest.records == []
    assert "m6" in [r.item_id for r in src.nacked]
    assert not any(r.failed for r in src.nacked), "giving back at stop is not a failed attempt"


@pytest.mark.parametrize(
    ("source", "trigger", "expected"),
    [
        ("fakequeue", {"maximum_retry_attempts": 2, "on_failure": MEM}, True),
        ("fakequeue", {"maximum_retry_attempts": -1, "on_failure": MEM}, False),
        ("fakequeue", {"on_failure": MEM}, False),
        ("fakequeue", {}, False),
        ("fakequeue", {"bisect_batch_on_function_error": True}, True),
        (
            "fakequeue",
            {"maximum_retry_attempts": 2, "on_failure": MEM, "report_batch_item_failures": True},
            True,
        ),
        ("fakestream", {"maximum_retry_attempts": 2, "on_failure": MEM}, False),
        ("fakestream", {"bisect_batch_on_function_error": True}, True),
    ],
)
def test_when_isolation_is_on_by_default(
    source: str, trigger: dict[str, Any], expected: bool
) -> None:
    assert one_trigger(fake_registry(), {"type": source}, **trigger).effective_bisect is expected


class HoldingSource(FakeSource):
    """A queue that takes back records left unsettled for `limit_s` (HoldsRecords)."""

    def __init__(self, records: list[Record], limit_s: float) -> None:
        super().__init__(records)
        self.limit_s = limit_s

    def hold_limit_s(self) -> float | None:
        return self.limit_s


async def test_a_split_nearing_the_queues_hold_limit_gives_the_batch_back_unfailed(
    store: SQLiteStateStore,
) -> None:
    """Past the source's hold limit (SQS visibility ceiling, RabbitMQ consumer_timeout) a
    split stops: the unsettled records go back to the queue as given back, not failed."""
    clock = SteppedClock()
    src, dest = HoldingSource(ten_with_a_poison(poison_at=2), limit_s=100), MemDestination()

    def respond(event: dict[str, Any]) -> Any:
        if len(event["Records"]) == 5:
            clock.offset += 200  # the first half took longer than the queue holds records
        return poison_raises(event)

    be = FakeBackend(respond)
    rt = trigger_runtime(
        store,
        src,
        be,
        dest,
        "fakequeue",
        batch_size=10,
        batching_window_s=0.2,
        maximum_concurrency=1,
        maximum_retry_attempts=0,
        on_failure=MEM,
    )
    rt.clock = clock
    t = SyncTrigger(rt)
    await run_until(t, lambda: len(src.nacked) == 10)
    assert [len(c["Records"]) for c in be.calls] == [10, 5], "no invocation past the limit"
    assert [r.item_id for r in src.nacked] == [f"m{i}" for i in range(10)], "in order"
    assert not any(r.failed for r in src.nacked), "given back, not failed"
    assert dest.records == [] and src.acked == []
