"""A sync (pipeline) source that runs once across a cluster (`RunsOnce`): received from only
while this daemon holds its lease; losing the lease stops receiving, gives back what is
buffered, lets the batch in flight end, and only then stands by (fake lease store that another
"daemon" can take the lease from)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import Any

from tests.fakes import FakeBackend, FakeSource, make_record, run_until, trigger_runtime
from tests.lease_fakes import FakeLeaseMember, FakeLeaseTable
from triggerd.delivery.pipeline import SyncTrigger
from triggerd.state.leases import LeaseStore
from triggerd.state.sqlite import SQLiteStateStore
from triggerd.types import InvokeResult, Outcome, Record, RunsOnce

LEASE_S = 1.0


#: The lease of the one source here that runs once per cluster.
SLOT = "pgslot:db/slot"


def cluster(holder: str | None = None) -> tuple[FakeLeaseTable, FakeLeaseMember]:
    """A lease table and this daemon ("me") in it; `holder`, if any, holds the slot first."""
    table = FakeLeaseTable()
    if holder is not None:
        table.take(SLOT, holder)
    return table, FakeLeaseMember(table, "me")


class SlotSource(FakeSource):
    """A FakeSource (redelivering what it is given back) that runs once per cluster; logs
    every call in order."""

    def __init__(self, records: Sequence[Record] = ()) -> None:
        super().__init__(records, redeliver=True)
        self.log: list[str] = []

    @property
    def singleton_lease(self) -> str:
        return SLOT

    async def resume(self) -> None:
        self.log.append("resume")

    async def receive(self, max_records: int, timeout_s: float) -> list[Record]:
        self.log.append("receive")
        return await super().receive(max_records, timeout_s)

    async def ack(self, records: Sequence[Record]) -> None:
        self.log.append("ack " + ",".join(r.item_id for r in records))
        await super().ack(records)

    async def nack(self, records: Sequence[Record]) -> None:
        self.log.append("nack " + ",".join(r.item_id for r in records))
        await super().nack(records)


def build(
    store: SQLiteStateStore, src: FakeSource, be: FakeBackend, leases: Any, **kw: Any
) -> SyncTrigger:
    rt = trigger_runtime(store, src, be, None, "fake", **kw)
    return SyncTrigger(rt, leases, singleton_lease_s=LEASE_S)


async def wait_for(cond: Callable[[], bool], timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):  # "did not hang"
        while not cond():
            await asyncio.sleep(0.01)


def invoked(be: FakeBackend) -> list[str]:
    return [r["messageId"] for call in be.calls for r in call["Records"]]


def test_the_fakes_are_what_the_pipeline_checks_for() -> None:
    assert isinstance(cluster()[1], LeaseStore)
    assert isinstance(SlotSource(), RunsOnce)
    assert not isinstance(FakeSource(), RunsOnce)


async def test_a_standby_never_receives_and_the_new_holder_resumes_then_delivers(
    store: SQLiteStateStore,
) -> None:
    table, leases = cluster(holder="other")
    src, be = SlotSource([make_record(i, item_id=f"r{i}") for i in range(3)]), FakeBackend()
    t = build(store, src, be, leases, batch_size=10)
    task = asyncio.create_task(t.run())
    try:
        await asyncio.sleep(LEASE_S)  # several standby attempts to take the lease
        assert src.log == [] and be.calls == []
        table.give_up(SLOT)
        await wait_for(lambda: len(src.acked) == 3)
        assert src.log[0] == "resume" and src.log.count("resume") == 1
        assert invoked(be) == ["r0", "r1", "r2"]
    finally:
        t.stop()
        await asyncio.wait_for(task, 5)
    assert table.holder(SLOT) is None  # stopping gave the lease up


async def test_losing_the_lease_gives_back_the_buffer_lets_the_batch_in_flight_end_then_stands_by(
    store: SQLiteStateStore,
) -> None:
    table, leases = cluster()
    src = SlotSource([make_record(i, item_id=f"r{i}") for i in range(3)])
    entered = asyncio.Event()

    class HoldsTheFirst(FakeBackend):
        """r0 stays in flight until the buffered records went back (at most 20 s, then the
        assertions below fail): no fixed delay for the lease loss to race."""

        async def invoke(self, payload: bytes, **kw: Any) -> InvokeResult:
            if not entered.is_set():
                entered.set()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(20):
                        while len(src.nacked) < 2:
                            await asyncio.sleep(0.01)
            return await super().invoke(payload, **kw)

    be = HoldsTheFirst()
    t = build(store, src, be, leases, batch_size=1, maximum_concurrency=1)
    task = asyncio.create_task(t.run())
    try:
        await asyncio.wait_for(entered.wait(), 20)  # r0 in flight, r1 and r2 buffered
        await wait_for(lambda: not src.queue)
        table.take(SLOT, "other")
        await wait_for(lambda: "ack r0" in src.log and len(src.nacked) == 2)
        assert invoked(be) == ["r0"]  # nothing more was invoked in the lost term
        # The buffered records went back before the batch in flight ended (receiving had
        # stopped), and the batch in flight ended with its invocation, acknowledged.
        assert src.log.index("nack r1,r2") < src.log.index("ack r0")
        ended = len(src.log)
        await asyncio.sleep(LEASE_S)  # standing by while another daemon holds the lease
        assert src.log[ended:] == []
        table.give_up(SLOT)
        await wait_for(lambda: len(src.acked) == 3)
        # Taken again only after the old term's batch had ended; the rest delivered then.
        assert src.log[ended] == "resume" and src.log.count("resume") == 2
        assert invoked(be) == ["r0", "r1", "r2"]
    finally:
        t.stop()
        await asyncio.wait_for(task, 5)


async def test_a_batch_waiting_to_retry_gives_its_records_back_when_the_lease_is_lost(
    store: SQLiteStateStore,
) -> None:
    table, leases = cluster()
    src, calls = SlotSource([make_record("x", item_id="r0")]), 0

    def fail_first(event: Any) -> InvokeResult | None:
        nonlocal calls
        calls += 1
        if calls == 1:
            return InvokeResult(Outcome.FUNCTION_ERROR, b'{"errorMessage": "no"}', "", "Unhandled")
        return None

    be = FakeBackend(respond=fail_first)
    # The retry would wait 30 s: the term ends long before that.
    t = build(store, src, be, leases, batch_size=1, retry_base_delay_s=30, maximum_retry_attempts=5)
    task = asyncio.create_task(t.run())
    try:
        await wait_for(lambda: len(be.calls) == 1)
        table.take(SLOT, "other")
        await wait_for(lambda: len(src.nacked) == 1)
        assert src.acked == [] and len(be.calls) == 1
        assert not src.nacked[0].failed  # given back, not counted as a failed attempt
        table.give_up(SLOT)
        await wait_for(lambda: len(src.acked) == 1)
        assert invoked(be) == ["r0", "r0"]
    finally:
        t.stop()
        await asyncio.wait_for(task, 5)


async def test_a_source_that_does_not_run_once_receives_without_any_lease(
    store: SQLiteStateStore,
) -> None:
    table, leases = cluster(holder="other")
    src, be = FakeSource([make_record(i) for i in range(2)]), FakeBackend()
    t = build(store, src, be, leases)
    await run_until(t, lambda: len(src.acked) == 2)
    assert table.holder(SLOT) == "other"


async def test_on_the_sqlite_store_a_runs_once_source_is_resumed_once_and_delivers(
    store: SQLiteStateStore,
) -> None:
    assert isinstance(store, LeaseStore)  # one daemon: the lease is always granted
    src, be = SlotSource([make_record(i) for i in range(2)]), FakeBackend()
    t = build(store, src, be, store)
    await run_until(t, lambda: len(src.acked) == 2)
    assert src.log.count("resume") == 1
