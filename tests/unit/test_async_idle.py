"""An idle asynchronous trigger waits for work instead of polling: no claims and no source
calls while nothing happens, yet an enqueue is claimed at once, a retry at its due time and a
stop is prompt."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import pytest

from tests.fakes import FakeBackend, FakeSource, make_record, trigger_runtime
from triggerd.delivery.asyncpath import AsyncTrigger
from triggerd.state.base import NewEvent, QueuedEvent
from triggerd.state.sqlite import SQLiteStateStore
from triggerd.types import InvokeResult, Record


class CountingSource(FakeSource):
    def __init__(self, records: Sequence[Record] = ()) -> None:
        super().__init__(records)
        self.receives = 0

    async def receive(self, max_records: int, timeout_s: float) -> list[Record]:
        self.receives += 1
        return await super().receive(max_records, timeout_s)


class Counting:
    """Counts the store's claims and due-time look-ups, passing everything through."""

    def __init__(self, store: SQLiteStateStore) -> None:
        self.store = store
        self.claims = 0
        self.lookups = 0

    async def claim(
        self, trigger: str, limit: int, lease_s: float, now: float
    ) -> list[QueuedEvent]:
        self.claims += 1
        return await self.store.claim(trigger, limit, lease_s, now)

    async def next_due(self, trigger: str) -> float | None:
        self.lookups += 1
        return await self.store.next_due(trigger)

    def __getattr__(self, name: str) -> object:
        return getattr(self.store, name)


def build(store: SQLiteStateStore, source: FakeSource, backend: FakeBackend) -> AsyncTrigger:
    # The fakes' poll interval is 0.05 s: a polling loop would call the store 10 times in 0.5 s.
    counted = Counting(store)
    rt = trigger_runtime(counted, source, backend, None, "fakepush", retry_base_delay_s=0.05)
    return AsyncTrigger(rt, counted, lease_s=30)  # type: ignore[arg-type]


async def wait_for(done: object, timeout: float = 5.0) -> float:
    """Seconds until `done()` held."""
    t0 = time.monotonic()
    async with asyncio.timeout(timeout):
        while not done():  # type: ignore[operator]
            await asyncio.sleep(0.005)
    return time.monotonic() - t0


def event(store_now: float, n: int, *, at: float | None = None) -> NewEvent:
    return NewEvent(
        trigger="t",
        function="f",
        payload=b'{"n": %d}' % n,
        request_id=f"req-{n}",
        enqueued_at=store_now,
        available_at=store_now if at is None else at,
    )


@pytest.fixture
def counted_trigger(store: SQLiteStateStore) -> tuple[AsyncTrigger, CountingSource, FakeBackend]:
    src, be = CountingSource(), FakeBackend()
    return build(store, src, be), src, be


async def test_an_idle_trigger_neither_claims_nor_asks_its_source(
    counted_trigger: tuple[AsyncTrigger, CountingSource, FakeBackend],
) -> None:
    t, src, _ = counted_trigger
    counted = t.state
    assert isinstance(counted, Counting)
    task = asyncio.create_task(t.run())
    # Both loops' first look (a loaded machine may take a while to get there), then an idle
    # spell in which they must not look again.
    await wait_for(lambda: counted.claims and counted.lookups and src.receives, 20)
    await asyncio.sleep(0.6)
    claims, lookups, receives = counted.claims, counted.lookups, src.receives
    t.stop()
    stop_s = await wait_for(task.done, 20.0)
    await task
    assert claims == 1, f"{claims} claims while idle: the invoke loop polls the store"
    assert lookups == 1, f"{lookups} due-time look-ups while idle"
    assert receives == 1, f"{receives} receives while idle: the accept loop polls its source"
    # Without the stop waking it, the source's wait would last ACCEPT_WAIT_S (300 s).
    assert stop_s < 10, f"an idle trigger took {stop_s:.2f} s to stop"


async def test_a_record_is_invoked_at_once_after_a_long_idle_wait(
    counted_trigger: tuple[AsyncTrigger, CountingSource, FakeBackend],
) -> None:
    t, src, be = counted_trigger
    task = asyncio.create_task(t.run())
    try:
        await asyncio.sleep(0.3)
        src.push(make_record({"n": 1}, item_id="r1"))
        took = await wait_for(lambda: len(be.calls) == 1, 20)
        assert took < 10, f"a record waited {took:.2f} s for its invocation"
    finally:
        t.stop()
        await asyncio.wait_for(task, 20)


async def test_an_enqueue_by_another_writer_wakes_the_queue_at_once(
    store: SQLiteStateStore, counted_trigger: tuple[AsyncTrigger, CountingSource, FakeBackend]
) -> None:
    """The Invoke API and event buses enqueue themselves and then call `wake`."""
    t, _, be = counted_trigger
    task = asyncio.create_task(t.run())
    try:
        await asyncio.sleep(0.3)
        await store.enqueue([event(t.rt.clock.time(), 1)])
        t.wake()
        took = await wait_for(lambda: len(be.calls) == 1, 20)
        # Without the wake, the next safety poll comes after IDLE_POLL_S (60 s).
        assert took < 10, f"an enqueued event waited {took:.2f} s to be claimed"
    finally:
        t.stop()
        await asyncio.wait_for(task, 20)


async def test_a_queued_retry_is_claimed_at_its_due_time(
    store: SQLiteStateStore, counted_trigger: tuple[AsyncTrigger, CountingSource, FakeBackend]
) -> None:
    """An event due later (a retry, here queued before the start) is claimed when due, not at
    the next safety poll, and not before."""
    t, _, be = counted_trigger
    invoked_at: list[float] = []
    be.respond = lambda _: invoked_at.append(t.rt.clock.time())
    now = t.rt.clock.time()
    await store.enqueue([event(now, 1, at=now + 0.4)])
    task = asyncio.create_task(t.run())
    try:
        await wait_for(lambda: len(be.calls) == 1, 20)
        # Timed on the trigger's own clock from the due time's base (the enqueue itself may
        # take a while on a loaded machine, so a stopwatch started after it cannot say "not
        # before").
        took = invoked_at[0] - now
        assert 0.4 <= took < 10, f"a retry due in 0.4 s was invoked after {took:.2f} s"
    finally:
        t.stop()
        await asyncio.wait_for(task, 20)


async def test_a_failed_invocation_is_retried_at_its_backoff(store: SQLiteStateStore) -> None:
    """The retry the invoke loop schedules itself (function error, ~0.05 s base here) is
    picked up when due although nothing wakes the loop then."""
    src = CountingSource([make_record({"n": 1}, item_id="r1")])
    failed: list[float] = []

    def fail_once(payload: object) -> object:
        failed.append(time.monotonic())
        if len(failed) == 1:
            raise ValueError("first attempt fails")
        return None

    be = FakeBackend(fail_once)
    t = build(store, src, be)
    task = asyncio.create_task(t.run())
    try:
        await wait_for(lambda: len(be.calls) == 2, 20)
        gap = failed[1] - failed[0]
        assert gap < 10, f"the retry came {gap:.2f} s after the failure"
    finally:
        t.stop()
        await asyncio.wait_for(task, 20)


class SlowFirst(FakeBackend):
    """The event `{"slow": true}` takes three seconds; the others are as `respond` says."""

    slow_running = False

    async def invoke(self, payload: bytes, **kwargs: Any) -> InvokeResult:
        if b"slow" in payload:
            self.slow_running = True
            try:
                await asyncio.sleep(3.0)
            finally:
                self.slow_running = False
        return await super().invoke(payload, **kwargs)


async def test_a_retry_is_claimed_when_due_while_another_event_is_in_flight(
    store: SQLiteStateStore,
) -> None:
    """Under load the loop does not ask the store for due times on every turn; the retries it
    schedules itself are still claimed when due, not when the slow invocation ends."""
    attempts: list[float] = []

    def fail_once(payload: Any) -> object:
        if "slow" not in str(payload):
            attempts.append(time.monotonic())
            if len(attempts) == 1:
                raise ValueError("first attempt fails")
        return None

    src = CountingSource(
        [make_record({"slow": True}, item_id="s"), make_record({"n": 1}, item_id="r1")]
    )
    be = SlowFirst(fail_once)
    t = build(store, src, be)
    task = asyncio.create_task(t.run())
    try:
        await wait_for(lambda: len(attempts) == 2, 20)
        assert be.slow_running, "the retry waited for the slow invocation to end"
        gap = attempts[1] - attempts[0]
        assert gap < 3.0, f"the retry came {gap:.2f} s after the failure"
    finally:
        t.stop()
        await asyncio.wait_for(task, 20)
