"""The poll pipeline's per-key features used by partitioned sources (Kafka, streams): batches
of one key, a failing key that never holds back another, releasing keys on a rebalance, and
the retry cap AWS applies to infinite retries with an on-failure destination."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import orjson

from tests.fakes import FakeBackend, FakeSource, MemDestination, make_record, run_until
from tests.unit.test_pipeline import bodies, build
from triggerd.delivery.pipeline import SyncTrigger
from triggerd.state.sqlite import SQLiteStateStore
from triggerd.types import PipelineControl, Record


class ControlledFakeSource(FakeSource):
    """A FakeSource that keeps the pipeline's control (as the kafka source does)."""

    control: PipelineControl | None = None

    def attach(self, control: PipelineControl) -> None:
        self.control = control


def keys_of(event: dict[str, Any]) -> set[str]:
    return {str(b)[0] for b in bodies(event)}


async def test_batches_hold_one_key_and_a_failing_key_never_blocks_another(
    store: SQLiteStateStore,
) -> None:
    def respond(event: dict[str, Any]) -> Any:
        if "A" in keys_of(event):
            raise ValueError("partition A is broken")
        return None

    recs = [make_record(f"{k}{i}", key=k) for i in range(10) for k in "AB"]
    src, be, dest = FakeSource(recs), FakeBackend(respond), MemDestination()
    t = build(store, src, be, dest, "fakestream", batch_size=5, maximum_retry_attempts=2)
    await run_until(t, lambda: len(src.acked) == 20)
    assert all(len(keys_of(c)) == 1 for c in be.calls), "every batch holds one key"
    b_seen = [b for c in be.calls if keys_of(c) == {"B"} for b in bodies(c)]
    assert b_seen == [f"B{i}" for i in range(10)]
    assert src.nacked == []
    given_up = [bodies(r["payload"]) for r in dest.records]
    assert given_up == [[f"A{i}" for i in range(5)], [f"A{i}" for i in range(5, 10)]]


async def test_infinite_retries_are_capped_with_an_on_failure_destination(
    store: SQLiteStateStore,
) -> None:
    mem = {"type": "mem"}
    t = build(store, FakeSource(), FakeBackend(), None, "fakestream", on_failure=mem)
    assert t.policy.maximum_retry_attempts == 10
    t = build(store, FakeSource(), FakeBackend(), None, "fakestream")
    assert t.policy.maximum_retry_attempts == -1
    t = build(store, FakeSource(), FakeBackend(), None, "fake", on_failure=mem)
    assert t.policy.maximum_retry_attempts == -1
    t = build(
        store,
        FakeSource(),
        FakeBackend(),
        None,
        "fakestream",
        on_failure=mem,
        maximum_retry_attempts=3,
    )
    assert t.policy.maximum_retry_attempts == 3


async def test_source_gets_the_pipeline_control() -> None:
    from tests.fakes import trigger_runtime

    src = ControlledFakeSource()
    rt = trigger_runtime(None, src, FakeBackend(), None, "fakestream")
    trigger = SyncTrigger(rt)
    assert src.control is trigger


async def test_release_nacks_buffered_records_and_waits_for_the_batch_in_flight(
    store: SQLiteStateStore,
) -> None:
    gate, started = asyncio.Event(), asyncio.Event()

    class Gated(FakeBackend):
        async def invoke(self, payload: bytes, **kw: Any) -> Any:
            if "A0" in str(orjson.loads(payload)):
                started.set()
                await gate.wait()
            return await super().invoke(payload, **kw)

    recs = [make_record(f"A{i}", key="A") for i in range(4)]
    src, be = ControlledFakeSource(recs), Gated()
    t = build(store, src, be, None, "fakestream", batch_size=2, batching_window_s=0)
    task = asyncio.create_task(t.run())
    await asyncio.wait_for(started.wait(), 5)
    async with asyncio.timeout(20):  # A2, A3 now wait in the buffer behind the batch in flight
        while src.queue:
            await asyncio.sleep(0.01)
    await asyncio.sleep(0)  # the receive that took them put them in the buffer
    assert src.control is not None
    release = asyncio.create_task(src.control.release_keys(["A"], 30))
    async with asyncio.timeout(20):
        while not src.nacked:
            await asyncio.sleep(0.01)
    assert [r.payload["body"] for r in src.nacked] == ["A2", "A3"]
    assert not release.done(), "waits for the batch in flight"
    gate.set()
    await asyncio.wait_for(release, 5)
    assert [r.payload["body"] for r in src.acked] == ["A0", "A1"]
    t.stop()
    await asyncio.wait_for(task, 5)
    assert len(be.calls) == 1, "released records were not dispatched"


async def test_release_gives_back_a_batch_waiting_to_be_retried(store: SQLiteStateStore) -> None:
    def fail(event: dict[str, Any]) -> Any:
        raise ValueError("x")

    src, be = ControlledFakeSource([make_record("A0", key="A")]), FakeBackend(fail)
    t = build(store, src, be, None, "fakestream", retry_base_delay_s=30)
    task = asyncio.create_task(t.run())
    while not be.calls:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)  # in the 30 s backoff
    assert src.control is not None
    await asyncio.wait_for(src.control.release_keys(["A"], 10), 15)  # not the 30 s backoff
    assert [r.payload["body"] for r in src.nacked] == ["A0"] and src.acked == []
    t.stop()
    await asyncio.wait_for(task, 5)


async def test_release_times_out_on_a_batch_that_does_not_finish(
    store: SQLiteStateStore,
) -> None:
    gate, started = asyncio.Event(), asyncio.Event()

    class Held(FakeBackend):
        async def invoke(self, payload: bytes, **kw: Any) -> Any:
            started.set()
            await gate.wait()  # the batch does not finish until the test lets it
            return await super().invoke(payload, **kw)

    src, be = ControlledFakeSource([make_record("A0", key="A")]), Held()
    t = build(store, src, be, None, "fakestream")
    task = asyncio.create_task(t.run())
    await asyncio.wait_for(started.wait(), 20)
    assert src.control is not None
    await asyncio.wait_for(src.control.release_keys(["A"], 0.2), 20)  # 20 s: did not hang
    assert src.acked == [] and src.nacked == [], "returned with the batch still in flight"
    gate.set()
    t.stop()
    await asyncio.wait_for(task, 5)
    assert [r.payload["body"] for r in src.acked] == ["A0"]


async def test_a_released_key_flows_again_when_its_records_come_back(
    store: SQLiteStateStore,
) -> None:
    class Redelivering(ControlledFakeSource):
        async def nack(self, records: Sequence[Record]) -> None:
            self.nacked.extend(records)
            self.queue[0:0] = list(records)
            self.arrived.set()

    recs = [make_record(f"A{i}", key="A") for i in range(6)]
    src = Redelivering(recs)
    be = FakeBackend(delay_s=0.05)
    t = build(store, src, be, None, "fakestream", batch_size=2)
    task = asyncio.create_task(t.run())
    while not be.calls:
        await asyncio.sleep(0.01)
    assert src.control is not None
    await src.control.release_keys(["A"], 5)
    try:
        async with asyncio.timeout(5):
            while len(src.acked) < 6:
                await asyncio.sleep(0.01)
    finally:
        t.stop()
        await asyncio.wait_for(task, 5)
    assert sorted(r.payload["body"] for r in src.acked) == [f"A{i}" for i in range(6)]
