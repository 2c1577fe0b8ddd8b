"""The poll pipeline against a fake source and backend: batching, filters, partial batch
responses, retries, bisect, ordering, concurrency, throttles, on-failure, shutdown."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import pytest

from tests.fakes import (
    FakeBackend,
    FakeSource,
    HeldDestination,
    MemDestination,
    make_record,
    run_until,
    trigger_runtime,
)
from triggerd.delivery.pipeline import SyncTrigger
from triggerd.state.sqlite import SQLiteStateStore
from triggerd.types import InvokeResult, Outcome


def build(
    store: SQLiteStateStore,
    source: FakeSource,
    backend: FakeBackend,
    dest: MemDestination | None = None,
    source_type: str = "fake",
    **trigger: Any,
) -> SyncTrigger:
    if source_type != "fakequeue":  # queue sources retry by redelivery: no backoff to set
        trigger.setdefault("retry_base_delay_s", 0.01)
    rt = trigger_runtime(store, source, backend, dest, source_type, **trigger)
    return SyncTrigger(rt)


def _body(raw: str) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw


def bodies(event: dict[str, Any]) -> list[Any]:
    return [_body(r["body"]) for r in event["Records"]]


async def test_batches_fill_to_batch_size(store: SQLiteStateStore) -> None:
    recs = [make_record(i) for i in range(25)]
    src, be = FakeSource(recs), FakeBackend()
    t = build(store, src, be, batch_size=10, batching_window_s=0.3)
    await run_until(t, lambda: len(src.acked) == 25)
    assert [len(c["Records"]) for c in be.calls] == [10, 10, 5]
    assert sum((bodies(c) for c in be.calls), []) == list(range(25))


async def test_window_holds_a_partial_batch_until_it_elapses(store: SQLiteStateStore) -> None:
    src, be = FakeSource([make_record(i) for i in range(3)]), FakeBackend()
    t = build(store, src, be, batch_size=10, batching_window_s=0.4)
    loop = asyncio.get_running_loop()
    start = loop.time()
    await run_until(t, lambda: len(src.acked) == 3)
    assert loop.time() - start >= 0.4
    assert [len(c["Records"]) for c in be.calls] == [3]


async def test_batch_payload_stays_under_six_mb(store: SQLiteStateStore) -> None:
    big = "x" * (1024 * 1024)
    src, be = FakeSource([make_record(big) for _ in range(8)]), FakeBackend()
    t = build(store, src, be, batch_size=10, batching_window_s=0.2)
    await run_until(t, lambda: len(src.acked) == 8)
    sizes = [len(orjson.dumps(c)) for c in be.calls]
    assert all(s <= 6 * 1024 * 1024 for s in sizes)
    assert [len(c["Records"]) for c in be.calls] == [5, 3]


async def test_filtered_out_records_are_acked_and_never_invoked(store: SQLiteStateStore) -> None:
    recs = [make_record({"kind": "image"}), make_record({"kind": "text"}), make_record("plain")]
    src, be = FakeSource(recs), FakeBackend()
    t = build(store, src, be, filters=[{"body": {"kind": ["image"]}}])
    await run_until(t, lambda: len(src.acked) == 3)
    assert [bodies(c) for c in be.calls] == [[{"kind": "image"}]]
    assert src.nacked == []


async def test_all_filtered_poll_causes_no_invocation(store: SQLiteStateStore) -> None:
    src, be = FakeSource([make_record({"kind": "text"})]), FakeBackend()
    t = build(store, src, be, filters=[{"body": {"kind": ["image"]}}])
    await run_until(t, lambda: len(src.acked) == 1)
    assert be.calls == []


async def test_partial_batch_failure_nacks_only_the_listed_items(store: SQLiteStateStore) -> None:
    recs = [make_record(i, item_id=f"m{i}") for i in range(4)]
    src = FakeSource(recs)
    be = FakeBackend(lambda e: {"batchItemFailures": [{"itemIdentifier": "m2"}]})
    t = build(store, src, be, source_type="fakequeue", report_batch_item_failures=True)
    await run_until(t, lambda: len(src.acked) + len(src.nacked) == 4)
    assert sorted(r.item_id for r in src.acked) == ["m0", "m1", "m3"]
    assert [r.item_id for r in src.nacked] == ["m2"]


async def test_batch_item_failures_ignored_without_the_flag(store: SQLiteStateStore) -> None:
    src = FakeSource([make_record(1, item_id="a"), make_record(2, item_id="b")])
    be = FakeBackend(lambda e: {"batchItemFailures": [{"itemIdentifier": "a"}]})
    t = build(store, src, be, source_type="fakequeue")
    await run_until(t, lambda: len(src.acked) == 2)
    assert src.nacked == []


async def test_malformed_partial_response_fails_the_whole_batch(store: SQLiteStateStore) -> None:
    src = FakeSource([make_record(1, item_id="a"), make_record(2, item_id="b")])
    be = FakeBackend(lambda e: {"batchItemFailures": [{"itemId": "a"}]})
    t = build(store, src, be, source_type="fakequeue", report_batch_item_failures=True)
    await run_until(t, lambda: len(src.nacked) == 2)
    assert src.acked == []


async def test_stream_retries_in_place_until_success(store: SQLiteStateStore) -> None:
    outcomes = iter([RuntimeError("boom"), RuntimeError("boom"), None])

    def respond(event: dict[str, Any]) -> Any:
        out = next(outcomes)
        if isinstance(out, Exception):
            raise out
        return out

    src, be = FakeSource([make_record(1), make_record(2)]), FakeBackend(respond)
    t = build(store, src, be)
    await run_until(t, lambda: len(src.acked) == 2)
    assert len(be.calls) == 3
    assert all(bodies(c) == [1, 2] for c in be.calls)


async def test_exhausted_retries_go_to_the_destination_then_ack(store: SQLiteStateStore) -> None:
    def fail(event: dict[str, Any]) -> Any:
        raise ValueError("always")

    src, dest = FakeSource([make_record(1)]), MemDestination()
    be = FakeBackend(fail)
    t = build(store, src, be, dest, maximum_retry_attempts=2)
    await run_until(t, lambda: len(src.acked) == 1)
    assert len(be.calls) == 3
    [record] = dest.records
    assert record["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 3
    assert record["responseContext"]["functionError"] == "Unhandled"
    assert record["FakeBatchInfo"] == {"batchSize": 1}
    [entry] = await store.dlq_list("t")
    assert entry.condition == "RetryAttemptsExhausted"


async def test_destination_failure_is_retried_before_the_ack(store: SQLiteStateStore) -> None:
    def fail(event: dict[str, Any]) -> Any:
        raise ValueError("always")

    src, dest = FakeSource([make_record(1)]), MemDestination(fail_times=2)
    t = build(store, src, FakeBackend(fail), dest, maximum_retry_attempts=0)
    await run_until(t, lambda: len(src.acked) == 1)
    assert len(dest.records) == 1


async def test_bisect_isolates_the_poison_record(store: SQLiteStateStore) -> None:
    def respond(event: dict[str, Any]) -> Any:
        if "poison" in bodies(event):
            raise ValueError("poison")
        return None

    recs = [make_record(v) for v in (1, 2, "poison", 4)]
    src, dest, be = FakeSource(recs), MemDestination(), FakeBackend(respond)
    t = build(
        store,
        src,
        be,
        dest,
        maximum_retry_attempts=1,
        bisect_batch_on_function_error=True,
        batch_size=4,
        batching_window_s=0.2,
    )
    await run_until(t, lambda: len(src.acked) == 4)
    ok_calls = [bodies(c) for c in be.calls if "poison" not in bodies(c)]
    assert sorted(b for call in ok_calls for b in call) == [1, 2, 4]
    assert ["poison"] in [bodies(c) for c in be.calls], "the poison record was isolated"
    [record] = dest.records
    assert bodies(record["payload"]) == ["poison"]


async def test_a_record_whose_event_cannot_be_built_goes_to_the_destination_alone(
    store: SQLiteStateStore, caplog: pytest.LogCaptureFixture
) -> None:
    # A batch whose event cannot be built (a plugin source's record that cannot be
    # serialised) is split down to that record, which goes to the on-failure destination
    # without a payload (there is none to carry) as a record its source could not build; the
    # others are invoked in order. Before, the batch crashed, was given back and crashed
    # again, with a traceback each time.
    bad = make_record("bad")
    bad.payload = {"body": {1, 2}}  # a set: orjson cannot serialise it
    recs = [make_record(1), make_record(2), bad, make_record(4)]
    src, dest, be = FakeSource(recs), MemDestination(), FakeBackend()
    t = build(store, src, be, dest, batch_size=4, batching_window_s=0.2)
    await run_until(t, lambda: len(src.acked) == 4)
    assert [b for c in be.calls for b in bodies(c)] == [1, 2, 4]
    [record] = dest.records
    assert record["requestContext"]["condition"] == "RecordBuildFailed"
    assert "payload" not in record
    assert record["FakeBatchInfo"] == {"batchSize": 1}
    error = record["buildError"]
    assert error["errorType"] == "TypeError" and error["subject"] == "fake record"
    assert "not JSON serializable" in error["errorMessage"]
    [line] = [r for r in caplog.records if r.getMessage() == "record.dead_lettered"]
    assert line.__dict__["item_id"] == bad.item_id
    assert line.__dict__["error_type"] == "TypeError"
    assert not [r for r in caplog.records if r.getMessage() == "batch.crashed"]


async def test_a_queue_message_whose_event_cannot_be_built_goes_back_without_a_destination(
    store: SQLiteStateStore, caplog: pytest.LogCaptureFixture
) -> None:
    # SQS/RabbitMQ without an on-failure destination: the queue ends a message's retries
    # (SQS redrive, RabbitMQ's dead-letter limit), counting failed receives, so a message whose
    # event cannot be built is given back failed, not acked (deleted from the queue, reaching
    # neither a destination nor the queue's DLQ); the messages of its group behind it go back
    # after it, unfailed, in order. The others are invoked.
    bad = make_record("bad", "a2", key="A")
    bad.payload = {"body": {1, 2}}  # a set: orjson cannot serialise it
    recs = [make_record(1, "a1", key="A"), bad, make_record(3, "a3", key="A")]
    recs.append(make_record(4, "b1", key="B"))
    src, be = FakeSource(recs), FakeBackend()
    t = build(store, src, be, source_type="fakequeue", batch_size=4, batching_window_s=0.2)
    await run_until(t, lambda: len(src.acked) + len(src.nacked) == 4)
    assert [r.item_id for r in src.acked] == ["a1", "b1"]
    assert [(r.item_id, r.failed) for r in src.nacked] == [("a2", True), ("a3", False)]
    assert [b for c in be.calls for b in bodies(c)] == [1, 4]
    [line] = [r for r in caplog.records if r.getMessage() == "record.unbuilt_given_back"]
    assert (line.__dict__["item_id"], line.__dict__["error_type"]) == ("a2", "TypeError")
    assert not [r for r in caplog.records if r.getMessage() == "record.discarded"]


async def test_a_queue_message_whose_event_cannot_be_built_goes_to_a_destination(
    store: SQLiteStateStore,
) -> None:
    # With an on-failure destination, the message goes there at once (no retry can build it)
    # and is acked.
    bad = make_record("bad", "a2", key="A")
    bad.payload = {"body": {1, 2}}
    src, dest = FakeSource([make_record(1, "a1", key="A"), bad]), MemDestination()
    be = FakeBackend()
    t = build(
        store,
        src,
        be,
        dest,
        source_type="fakequeue",
        batch_size=2,
        batching_window_s=0.2,
        on_failure={"type": "mem"},
    )
    await run_until(t, lambda: len(src.acked) == 2)
    assert src.nacked == []
    [record] = dest.records
    assert record["requestContext"]["condition"] == "RecordBuildFailed"


class JSONDestination(MemDestination):
    """Serialises each record, as the file, S3 and Kafka destinations do."""

    async def send(self, record: dict[str, Any]) -> None:
        orjson.dumps(record)
        await super().send(record)


async def test_a_record_too_old_whose_event_cannot_be_built_goes_to_the_destination(
    store: SQLiteStateStore,
) -> None:
    # A record past maximum_record_age_s is given up before its batch's event is built; if
    # that event cannot be built, the on-failure record goes without `payload` rather than
    # with one its destination cannot serialise (retried as a destination failure for good,
    # holding the key: the blockage the unbuildable path is there to avoid).
    bad = make_record("bad", created_at=1.0)
    bad.payload = {"body": {1, 2}}  # a set: orjson cannot serialise it
    good = make_record(2, created_at=time.time())
    src, dest, be = FakeSource([bad, good]), JSONDestination(), FakeBackend()
    t = build(store, src, be, dest, batch_size=2, batching_window_s=0.2, maximum_record_age_s=60)
    await run_until(t, lambda: len(src.acked) == 2)
    [record] = dest.records
    assert record["requestContext"]["condition"] == "RecordAgeExceeded"
    assert "payload" not in record
    assert [b for c in be.calls for b in bodies(c)] == [2]


async def test_poison_does_not_block_other_keys(store: SQLiteStateStore) -> None:
    def respond(event: dict[str, Any]) -> Any:
        if "poison" in bodies(event):
            raise ValueError("poison")
        return None

    recs = [make_record("poison", key="A")] + [make_record(i, key="B") for i in range(5)]
    src, dest = FakeSource(recs), MemDestination()
    be = FakeBackend(respond)
    t = build(store, src, be, dest, maximum_retry_attempts=3, retry_base_delay_s=0.2, batch_size=1)
    await run_until(t, lambda: len(src.acked) == 6)
    first_poison_done = next(i for i, c in enumerate(be.calls) if bodies(c) == ["poison"])
    b_calls = [i for i, c in enumerate(be.calls) if bodies(c) != ["poison"]]
    assert len(b_calls) == 5
    assert b_calls[-1] < len(be.calls) - 1, "key B finished while key A was still retrying"
    assert first_poison_done == 0
    assert len(dest.records) == 1


async def test_one_key_is_invoked_in_order_one_batch_at_a_time(store: SQLiteStateStore) -> None:
    recs = [make_record(f"{k}{i}", key=k) for i in range(6) for k in "AB"]
    src = FakeSource(recs)
    be = FakeBackend(delay_s=0.02)
    t = build(store, src, be, batch_size=2, maximum_concurrency=4)
    await run_until(t, lambda: len(src.acked) == 12)
    for k in "AB":
        seen = [b for c in be.calls for b in bodies(c) if b.startswith(k)]
        assert seen == [f"{k}{i}" for i in range(6)]
    assert be.max_concurrent <= 2  # one batch per key at a time, two keys


async def test_concurrency_is_bounded(store: SQLiteStateStore) -> None:
    src = FakeSource([make_record(i) for i in range(20)])
    be = FakeBackend(delay_s=0.05)
    t = build(store, src, be, batch_size=1, maximum_concurrency=3)
    await run_until(t, lambda: len(src.acked) == 20)
    assert be.max_concurrent == 3


async def test_throttles_do_not_count_as_attempts(store: SQLiteStateStore) -> None:
    results = iter(
        [
            InvokeResult(Outcome.THROTTLED, b"", "", retry_after_s=0.01),
            InvokeResult(Outcome.INVOKE_ERROR, b"", "", retry_after_s=0.01),
            None,
        ]
    )
    src, dest = FakeSource([make_record(1)]), MemDestination()
    be = FakeBackend(lambda e: next(results))
    t = build(store, src, be, dest, maximum_retry_attempts=0)
    await run_until(t, lambda: len(src.acked) == 1)
    assert len(be.calls) == 3
    assert dest.records == []


async def test_fifo_failure_fails_the_rest_of_its_group(store: SQLiteStateStore) -> None:
    recs = [
        make_record(1, "a1", key="A"),
        make_record(2, "b1", key="B"),
        make_record(3, "a2", key="A"),
    ]
    src = FakeSource(recs)
    be = FakeBackend(lambda e: {"batchItemFailures": [{"itemIdentifier": "a1"}]})
    t = build(store, src, be, source_type="fakequeue", report_batch_item_failures=True)
    await run_until(t, lambda: len(src.acked) + len(src.nacked) == 3)
    assert [r.item_id for r in src.acked] == ["b1"]
    assert [r.item_id for r in src.nacked] == ["a1", "a2"]


async def test_source_owned_retries_end_in_the_destination(store: SQLiteStateStore) -> None:
    def fail(event: dict[str, Any]) -> Any:
        raise ValueError("poison")

    src, dest = FakeSource([make_record("p", "p1")], redeliver=True), MemDestination()
    t = build(
        store,
        src,
        FakeBackend(fail),
        dest,
        source_type="fakequeue",
        maximum_retry_attempts=2,
        on_failure={"type": "mem"},
    )
    await run_until(t, lambda: len(src.acked) == 1)
    assert len(src.nacked) == 2
    assert dest.records[0]["requestContext"]["approximateInvokeCount"] == 3


async def test_queue_messages_given_up_together_get_one_record_each(
    store: SQLiteStateStore,
) -> None:
    """Deleted from their queue once written, each message is kept by its record only: in
    one record for all, a size-limited destination (SQS) dropped the payload of all of them
    when they did not fit together, though each fitted alone."""
    src, dest = FakeSource([make_record(i, f"m{i}") for i in range(3)]), MemDestination()
    failures = {"batchItemFailures": [{"itemIdentifier": f"m{i}"} for i in range(3)]}
    t = build(
        store,
        src,
        FakeBackend(lambda e: failures),
        dest,
        source_type="fakequeue",
        report_batch_item_failures=True,
        batch_size=3,
        maximum_retry_attempts=0,
        on_failure={"type": "mem"},
    )
    await run_until(t, lambda: len(src.acked) == 3)
    assert len(dest.records) == 3
    kept = [[r["messageId"] for r in rec["payload"]["Records"]] for rec in dest.records]
    assert sorted(kept) == [["m0"], ["m1"], ["m2"]]


async def test_old_records_are_given_up(store: SQLiteStateStore) -> None:
    def fail(event: dict[str, Any]) -> Any:
        raise ValueError("x")

    src, dest = FakeSource([make_record(1, created_at=1.0)]), MemDestination()
    t = build(store, src, FakeBackend(fail), dest, maximum_record_age_s=60)
    await run_until(t, lambda: len(src.acked) == 1)
    assert dest.records[0]["requestContext"]["condition"] == "RecordAgeExceeded"


async def test_stop_drains_in_flight_and_nacks_buffered(store: SQLiteStateStore) -> None:
    src = FakeSource([make_record(i) for i in range(5)])
    be = FakeBackend(delay_s=0.3)
    t = build(store, src, be, batch_size=1, maximum_concurrency=1)
    task = asyncio.create_task(t.run())
    while not be.calls:
        await asyncio.sleep(0.01)
    t.stop()
    await asyncio.wait_for(task, 5)
    assert len(src.acked) == 1  # the in-flight batch finished
    assert len(src.acked) + len(src.nacked) + len(src.queue) == 5
    assert not set(map(id, src.acked)) & set(map(id, src.nacked))


async def test_a_retrying_key_does_not_starve_other_keys(store: SQLiteStateStore) -> None:
    def respond(event: dict[str, Any]) -> Any:
        if any(str(b).startswith("A") for b in bodies(event)):
            raise ValueError("poison key")
        return None

    recs = [make_record(f"A{i}", key="A") for i in range(20)]
    recs += [make_record(f"B{i}", key="B") for i in range(5)]
    src = FakeSource(recs, redeliver=True)
    be = FakeBackend(respond)
    t = build(store, src, be, batch_size=2, maximum_concurrency=2, retry_base_delay_s=0.2)
    b_done = lambda: sum(str(r.payload["body"]).startswith("B") for r in src.acked) == 5  # noqa: E731
    await run_until(t, b_done, timeout=15)
    a_calls = [bodies(c) for c in be.calls if str(bodies(c)[0]).startswith("A")]
    assert all(call == a_calls[0] for call in a_calls), "key A kept its order: same head batch"


async def test_keys_in_retry_backoff_leave_their_concurrency_slots_to_healthy_keys(
    store: SQLiteStateStore,
) -> None:
    def respond(event: dict[str, Any]) -> Any:
        if any(str(b)[0] in "AB" for b in bodies(event)):
            raise ValueError("poison")
        return None

    recs = [make_record("A0", key="A"), make_record("B0", key="B")]
    recs += [make_record(f"C{i}", key="C") for i in range(6)]
    src = FakeSource(recs)
    be = FakeBackend(respond)
    # Both slots are taken by failing keys first; their backoff lasts far longer than the test.
    t = build(
        store, src, be, None, "fakestream", batch_size=2, maximum_concurrency=2,
        retry_base_delay_s=60,
    )  # fmt: skip
    c_done = lambda: sum(str(r.payload["body"]).startswith("C") for r in src.acked) == 6  # noqa: E731
    await run_until(t, c_done, timeout=10)
    heads = [str(bodies(c)[0])[0] for c in be.calls]
    assert heads[:2] == ["A", "B"] and heads.count("A") == heads.count("B") == 1, heads
    assert sorted(r.payload["body"] for r in src.nacked) == ["A0", "B0"], "given back on stop"
    assert t.inflight == 0 and t._reclaiming == 0


async def test_a_batch_back_from_its_backoff_waits_for_a_slot_before_new_batches(
    store: SQLiteStateStore,
) -> None:
    failed: list[str] = []

    def respond(event: dict[str, Any]) -> Any:
        if bodies(event) == ["A0"] and not failed:
            failed.append("A0")
            raise ValueError("once")
        return None

    recs = [make_record("A0", key="A")] + [make_record(f"C{i}", key=f"C{i}") for i in range(8)]
    src = FakeSource(recs)
    be = FakeBackend(respond, delay_s=0.02)
    t = build(store, src, be, batch_size=1, maximum_concurrency=1, retry_base_delay_s=0.05)
    await run_until(t, lambda: len(src.acked) == 9)
    assert be.max_concurrent == 1, "never more than maximum_concurrency invocations at once"
    assert [b for c in be.calls for b in bodies(c)].count("A0") == 2


async def test_a_crashed_batch_gives_its_key_back_in_order(store: SQLiteStateStore) -> None:
    crashed: list[bool] = []

    class CrashOnce(FakeBackend):
        async def invoke(self, payload: bytes, **kw: Any) -> InvokeResult:
            if not crashed:
                crashed.append(True)
                raise RuntimeError("backend bug")
            return await super().invoke(payload, **kw)

    recs = [make_record(f"a{i}", key="A") for i in range(3)]
    src, be = FakeSource(recs, redeliver=True), CrashOnce()
    t = build(store, src, be, batch_size=1, maximum_concurrency=2)
    await run_until(t, lambda: len(src.acked) == 3)
    assert [b for c in be.calls for b in bodies(c)] == ["a0", "a1", "a2"]


async def test_stop_cuts_a_retry_backoff_short_and_gives_records_back(
    store: SQLiteStateStore,
) -> None:
    def fail(event: dict[str, Any]) -> Any:
        raise ValueError("x")

    src, be = FakeSource([make_record(1)]), FakeBackend(fail)
    t = build(store, src, be, retry_base_delay_s=30)
    task = asyncio.create_task(t.run())
    while not be.calls:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)  # now in the 30 s backoff
    t.stop()
    await asyncio.wait_for(task, 15)  # a wide bound that still tells it from the 30 s backoff
    assert len(src.nacked) == 1 and src.acked == []


async def test_records_already_too_old_are_not_invoked(store: SQLiteStateStore) -> None:
    src, dest, be = FakeSource([make_record(1, created_at=1.0)]), MemDestination(), FakeBackend()
    t = build(store, src, be, dest, maximum_record_age_s=60)
    await run_until(t, lambda: len(src.acked) == 1)
    assert be.calls == []
    assert dest.records[0]["requestContext"]["condition"] == "RecordAgeExceeded"


class HeldNackSource(FakeSource):
    """Gives records back once `gate` is set (a broker slow to answer)."""

    def __init__(self, records: Any) -> None:
        super().__init__(records)
        self.nacking = asyncio.Event()
        self.gate = asyncio.Event()

    async def nack(self, records: Any) -> None:
        self.nacking.set()
        await self.gate.wait()
        await super().nack(records)


async def test_a_drain_timeout_waits_for_the_nack_under_way(store: SQLiteStateStore) -> None:
    # Cancelled while its nack was under way, the batch's task ended at once (the nack was
    # shielded and left running): the daemon then closed the source under it.
    def fail(event: Any) -> Any:
        raise ValueError("broken")

    src, be = HeldNackSource([make_record(1)]), FakeBackend(fail)
    t = build(store, src, be, source_type="fakequeue", batch_size=1)
    task = asyncio.create_task(t.run())
    await asyncio.wait_for(src.nacking.wait(), 5)  # the failed record is being given back
    t.stop()
    task.cancel()  # the drain timed out
    await asyncio.sleep(0.05)
    assert not task.done(), "the trigger ended before its records were given back"
    src.gate.set()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    assert len(src.nacked) == 1 and not src.acked


async def test_a_failure_record_delivered_after_a_drain_timeout_acks_its_records(
    store: SQLiteStateStore,
) -> None:
    # The cancelled batch gave its records back while the shielded delivery went on: the
    # record was written, and the source handed the records out again (invoked again, and a
    # second failure record once their retries ran out again).
    def fail(event: Any) -> Any:
        raise ValueError("broken")

    src, be, dest = FakeSource([make_record(1)]), FakeBackend(fail), HeldDestination()
    t = build(store, src, be, dest, maximum_retry_attempts=0)
    task = asyncio.create_task(t.run())
    await asyncio.wait_for(dest.sending.wait(), 5)
    t.stop()
    task.cancel()  # the drain timed out
    await asyncio.sleep(0.1)  # the delivery is still under way when the cancel lands
    dest.accept.set()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    assert len(dest.records) == 1
    assert (len(src.acked), src.nacked) == (1, [])


async def test_a_failure_record_at_its_destination_when_the_grace_ends_acks_its_records(
    store: SQLiteStateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The grace ended during the DLQ index write that follows the send: the records were
    # given back, so the restart invoked them again and wrote a second failure record.
    import triggerd.delivery.pipeline as pipeline

    def fail(event: Any) -> Any:
        raise ValueError("broken")

    monkeypatch.setattr(pipeline, "DELIVERY_GRACE_S", 0.05)
    indexing, gate = asyncio.Event(), asyncio.Event()
    dlq_add = store.dlq_add

    async def held_dlq_add(**entry: Any) -> Any:
        indexing.set()
        await gate.wait()
        return await dlq_add(**entry)

    monkeypatch.setattr(store, "dlq_add", held_dlq_add)
    src, be, dest = FakeSource([make_record(1)]), FakeBackend(fail), MemDestination()
    t = build(store, src, be, dest, maximum_retry_attempts=0)
    task = asyncio.create_task(t.run())
    await asyncio.wait_for(indexing.wait(), 5)
    t.stop()
    task.cancel()  # the drain timed out
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    gate.set()
    await asyncio.sleep(0.05)
    assert len(dest.records) == 1
    assert (len(src.acked), src.nacked) == (1, [])
