"""S3 poll mode across a cluster: two daemons' poll sources on one lease table, only the
holder of `s3poll:<trigger>` lists the bucket, and the other takes over when it stops.
A shared in-memory SQLite store stands for the shared database; the leases are a fake
table with one view per daemon."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from tests.fakes import FakeBackend, trigger_runtime
from tests.lease_fakes import FakeLeaseMember
from tests.lease_fakes import FakeLeaseTable as LeaseTable
from triggerd.delivery.asyncpath import AsyncTrigger
from triggerd.state.base import NewEvent
from triggerd.state.leases import LeaseLostError, LeaseStore
from triggerd.state.sqlite import MEMORY_PATH, SQLiteStateStore
from triggerd.types import LeadsWork, RunsOnce, SourceContext, SystemClock
from triggerd_s3 import S3SourceConfig
from triggerd_s3.poll import PollSource


class Member(FakeLeaseMember):
    """One daemon's store: the shared SQLite store, with its leases in the shared table."""

    grants_forever = False

    def __init__(self, store: SQLiteStateStore, table: LeaseTable, member: str) -> None:
        super().__init__(table, member)
        self._store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def write(
        self, events: Sequence[NewEvent], checkpoints: Mapping[str, Mapping[str, str | None]]
    ) -> None:
        await self._store.enqueue(events, checkpoints)

    async def list_checkpoints(self, scope: str, prefix: str = "") -> dict[str, str]:
        return await self._store.list_checkpoints(scope, prefix)

    async def get_checkpoint(self, scope: str, key: str) -> str | None:
        return await self._store.get_checkpoint(scope, key)


class Bucket:
    """Objects as a dict, listed in one page; counts the listings made by each daemon."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.listings: Counter[str] = Counter()


class Client:
    def __init__(self, bucket: Bucket, member: str) -> None:
        self.bucket = bucket
        self.member = member

    def get_paginator(self, name: str) -> Any:
        assert name == "list_objects_v2"
        return self

    async def paginate(self, **kwargs: Any) -> AsyncIterator[dict[str, Any]]:
        self.bucket.listings[self.member] += 1
        stamp = datetime(2024, 5, 1, tzinfo=UTC)
        objects = self.bucket.objects
        yield {
            "Name": "bkt",
            "Contents": [
                {"Key": k, "ETag": f'"{objects[k]!r}"', "Size": len(v), "LastModified": stamp}
                for k, v in sorted(objects.items())
            ],
        }

    async def get_bucket_versioning(self, **kwargs: Any) -> dict[str, Any]:
        return {}


async def daemon(
    store: SQLiteStateStore, table: LeaseTable, bucket: Bucket, member: str
) -> tuple[AsyncTrigger, FakeBackend]:
    state = Member(store, table, member)
    config = S3SourceConfig.model_validate(
        {
            "type": "s3",
            "bucket": "bkt",
            "mode": "poll",
            "poll_interval_s": 0.05,
            "starting_position": "TRIM_HORIZON",
        }
    )
    ctx = SourceContext(
        trigger="t", state=state, clock=SystemClock(), log=logging.getLogger(f"test.{member}")
    )
    source = PollSource(config, ctx, Client(bucket, member))
    await source.start()
    backend = FakeBackend()
    rt = trigger_runtime(state, source, backend, None, "fakepush")
    # A 3 s singleton lease: the holder keeps it through a loaded machine's stalls (with 1 s,
    # a 0.7 s stall let the standby take it and list too).
    return AsyncTrigger(rt, state, lease_s=30, singleton_lease_s=3.0), backend


def keys(backend: FakeBackend) -> list[str]:
    return [str(call["Records"][0]["s3"]["object"]["key"]) for call in backend.calls]


async def until(done: Callable[[], bool], timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while not done():
            await asyncio.sleep(0.01)


async def test_the_poll_source_is_a_singleton_with_its_own_fenced_work() -> None:
    store = SQLiteStateStore(MEMORY_PATH)
    await store.open()
    try:
        trigger, _ = await daemon(store, LeaseTable(), Bucket(), "a")
        source = trigger.rt.source
        assert isinstance(source, RunsOnce) and isinstance(source, LeadsWork)
        assert source.singleton_lease == "s3poll:t"
        assert isinstance(trigger.state, LeaseStore)
    finally:
        await store.close()


async def test_two_poll_sources_on_one_lease_store_list_one_at_a_time() -> None:
    store = SQLiteStateStore(MEMORY_PATH)
    await store.open()
    table, bucket = LeaseTable(), Bucket()
    bucket.objects.update({"a": b"1", "b": b"22"})
    (one, be_one), (two, be_two) = [await daemon(store, table, bucket, m) for m in ("a", "b")]
    tasks = {"a": asyncio.create_task(one.run()), "b": asyncio.create_task(two.run())}
    try:
        # Both run for many poll intervals: one lists, the other never does.
        await until(lambda: sum(bucket.listings.values()) >= 10)
        assert len(bucket.listings) == 1, bucket.listings
        [holder] = bucket.listings
        assert sorted(keys(be_one) + keys(be_two)) == ["a", "b"]
        # The holder stops (gives the lease up): the other takes over, lists, and delivers
        # only what is new since the holder's last committed listing.
        (one if holder == "a" else two).stop()
        await asyncio.wait_for(tasks.pop(holder), 5)
        standby = "b" if holder == "a" else "a"
        bucket.objects["c"] = b"333"
        await until(lambda: sorted(keys(be_one) + keys(be_two)) == ["a", "b", "c"])
        assert bucket.listings[standby] > 0
        assert keys(be_two if standby == "b" else be_one)[-1] == "c"
    finally:
        for name, task in tasks.items():
            (one if name == "a" else two).stop()
            await asyncio.wait_for(task, 5)
        await store.close()


async def test_a_refused_fenced_write_stops_the_listing_until_led_again(
    caplog: Any,
) -> None:
    store = SQLiteStateStore(MEMORY_PATH)
    await store.open()
    bucket = Bucket()
    try:
        trigger, _ = await daemon(store, LeaseTable(), bucket, "a")
        source = trigger.rt.source
        assert isinstance(source, PollSource)

        async def refuse(checkpoints: Mapping[str, str | None]) -> None:
            raise LeaseLostError("moved on")

        await source.resume()
        await source.lead(refuse)
        caplog.set_level(logging.WARNING)
        caplog.clear()  # what opening the store logged (an earlier test may have set INFO)
        # The first scan's only write (the listing is initialised) is refused: no more scans,
        # where a poll interval of 0.05 s would have made several.
        assert await source.receive(10, 0.5) == []
        assert bucket.listings["a"] == 1
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert warnings == ["s3.poll_fenced"]
        assert await store.get_checkpoint("t", "meta:initialized") is None
        await source.stand_by()
        assert await source.receive(10, 0.2) == []
        assert bucket.listings["a"] == 1  # standing by: receive does not start it either
        await source.stop()
    finally:
        await store.close()


async def test_each_scan_is_logged_at_debug_level_with_its_counts(caplog: Any) -> None:
    store = SQLiteStateStore(MEMORY_PATH)
    await store.open()
    bucket = Bucket()
    bucket.objects.update({"a": b"1", "b": b"22"})
    try:
        trigger, _ = await daemon(store, LeaseTable(), bucket, "a")
        source = trigger.rt.source
        assert isinstance(source, PollSource)
        caplog.set_level(logging.DEBUG, logger="test.a")
        records = await source.receive(10, 5)
        await store.set_checkpoints(
            "t", {k: v for r in records for k, v in (r.checkpoint or {}).items()}
        )
        await source.ack(records)
        await until(lambda: source.scans >= 2)
        await source.stop()
    finally:
        await store.close()
    scanned = [r.__dict__ for r in caplog.records if r.getMessage() == "s3.scanned"]
    assert [(s["listed"], s["puts"], s["deletes"]) for s in scanned[:2]] == [(2, 2, 0), (2, 0, 0)]
    assert not [r for r in caplog.records if r.getMessage() == "s3.poll_failed"]
