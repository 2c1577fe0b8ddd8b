"""Leases with fencing on the PostgreSQL store: one holder at a time, the epoch growing at
every acquisition, a stale holder's fenced writes refused in their own transaction, and
a holder cut off from PostgreSQL stopping its work before its lease can expire. Against the
machine's PostgreSQL, one fresh database for the module (emptied between tests)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from tests.pg_state import empty_store, fresh_database
from triggerd.state.base import NewEvent
from triggerd.state.leases import BalancesLeases, Fence, Lease, LeaseLostError, LeaseStore
from triggerd.state.postgres import PostgresStateStore

pytestmark = pytest.mark.integration


def event(request_id: str) -> NewEvent:
    return NewEvent("t1", "f1", request_id.encode(), request_id, 100.0, 100.0)


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    with fresh_database() as url:
        yield url


@pytest.fixture
async def stores(pg_url: str) -> AsyncIterator[list[PostgresStateStore]]:
    """Three stores on the same database: three daemons."""
    await empty_store(pg_url)
    group = [PostgresStateStore(pg_url, member_id=f"daemon-{n}") for n in "abc"]
    for s in group:
        await s.open()
    yield group
    for s in group:
        await s.close()


async def test_one_holder_at_a_time_and_the_epoch_grows_with_each_acquisition(
    stores: list[PostgresStateStore],
) -> None:
    a, b, _ = stores
    assert isinstance(a, LeaseStore)
    assert await a.acquire_lease("schedule:t1", 30) == 1
    # Taken again by its holder: a new tenure, whose epoch fences the earlier one's writes.
    assert await a.acquire_lease("schedule:t1", 30) == 2
    assert await b.acquire_lease("schedule:t1", 30) is None
    assert await a.renew_lease("schedule:t1", 2, 30)
    assert not await a.renew_lease("schedule:t1", 1, 30)
    await a.release_lease("schedule:t1", 2)
    assert await b.acquire_lease("schedule:t1", 30) == 3  # at once after a release
    assert not await a.renew_lease("schedule:t1", 2, 30)
    assert await a.acquire_lease("schedule:t1", 30) is None
    [info] = await b.leases()
    assert (info.name, info.holder, info.epoch) == ("schedule:t1", "daemon-b", 3)
    assert info.expires_at - info.heartbeat == pytest.approx(30)


async def test_an_expired_lease_is_taken_over_and_the_old_holder_is_fenced(
    stores: list[PostgresStateStore],
) -> None:
    a, b, _ = stores
    assert await a.acquire_lease("schedule:t1", 0.2) == 1
    await a.enqueue_fenced(Fence("schedule:t1", 1), [event("r1")], {"t1": {"last_fire": "1"}})
    await asyncio.sleep(0.3)
    assert await b.acquire_lease("schedule:t1", 30) == 2
    assert not await a.renew_lease("schedule:t1", 1, 30)  # expired and taken
    with pytest.raises(LeaseLostError, match="moved on"):
        await a.enqueue_fenced(Fence("schedule:t1", 1), [event("r2")], {"t1": {"last_fire": "2"}})
    # Nothing of the refused write: neither its event nor its checkpoint.
    assert await b.queued(["r1", "r2"]) == {"r1"}
    assert await b.get_checkpoint("t1", "last_fire") == "1"
    await b.enqueue_fenced(Fence("schedule:t1", 2), [event("r3")], {"t1": {"last_fire": "3"}})
    assert await b.get_checkpoint("t1", "last_fire") == "3"


async def test_a_refused_fenced_write_fails_only_its_own_caller_in_a_group(
    stores: list[PostgresStateStore],
) -> None:
    a, _, _ = stores
    assert await a.acquire_lease("l1", 30) == 1
    results = await asyncio.gather(
        a.enqueue([event("plain")]),
        a.enqueue_fenced(Fence("l1", 7), [event("stale")]),
        a.enqueue_fenced(Fence("l1", 1), [event("good")], {"t1": {"k": "v"}}),
        return_exceptions=True,
    )
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], LeaseLostError)
    assert await a.queued(["plain", "stale", "good"]) == {"plain", "good"}


async def test_daemons_racing_for_a_free_lease_get_one_holder(
    stores: list[PostgresStateStore],
) -> None:
    for round_ in range(5):
        name = f"race{round_}"
        grants = await asyncio.gather(*(s.acquire_lease(name, 30) for s in stores))
        assert sorted(grants, key=lambda g: g is None) == [1, None, None]


async def test_a_takeover_waits_for_the_old_holders_write_in_flight(
    pg_url: str, stores: list[PostgresStateStore]
) -> None:
    """The fence check locks the lease row until the write commits: a daemon taking the
    lease over then reads the checkpoint that write left, never one from before it."""
    a, b, _ = stores
    assert await a.acquire_lease("l2", 0.2) == 1
    conn = await asyncpg.connect(pg_url)
    try:
        # Hold the row the way a fenced write's transaction does, past the lease's expiry.
        tx = conn.transaction()
        await tx.start()
        await conn.execute("SELECT 1 FROM triggerd.leases WHERE name = 'l2' FOR SHARE")
        await asyncio.sleep(0.3)
        takeover = asyncio.ensure_future(b.acquire_lease("l2", 30))
        await asyncio.sleep(0.2)
        assert not takeover.done()
        await conn.execute(
            "INSERT INTO triggerd.checkpoints VALUES ('t1', 'last_fire', 'from-a', 0)"
        )
        await tx.commit()
        assert await takeover == 2
        assert await b.get_checkpoint("t1", "last_fire") == "from-a"
    finally:
        await conn.close()


async def test_a_holder_cut_off_from_postgresql_stops_its_work_before_expiry(
    pg_url: str, stores: list[PostgresStateStore]
) -> None:
    """Its renewals fail (here: the table is renamed away): the work is cancelled at
    timeout - margin on its own clock, before the lease runs out in PostgreSQL, and another
    daemon takes over only after that."""
    a, b, _ = stores
    # The margin is the slack a slow event loop has to stop in time: wide enough for a loaded
    # machine (renewals every 1 s, the local deadline 1.8 s after the last one).
    lease = Lease(a, "schedule:cut", timeout_s=3.0, margin_s=1.2)
    stopped_at: list[float] = []
    started = asyncio.Event()

    async def work(fence: Fence) -> None:
        assert fence == Fence("schedule:cut", 1)
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            stopped_at.append(time.monotonic())

    runner = asyncio.ensure_future(lease.run(work))
    try:
        await asyncio.wait_for(started.wait(), 5)
        cut_at = time.monotonic()
        # From now on every renewal fails: the store's connections are refused.
        await a.run_on_connection(
            lambda c: c.execute("ALTER TABLE triggerd.leases RENAME TO leases_cut")
        )
        try:
            left = await a.run_on_connection(
                lambda c: c.fetchval(
                    "SELECT expires_at - extract(epoch FROM clock_timestamp()) "
                    "FROM triggerd.leases_cut WHERE name = 'schedule:cut'"
                )
            )
            expires_at = time.monotonic() + float(left)  # no renewal can move it now
            async with asyncio.timeout(20):  # did not hang
                while not stopped_at and time.monotonic() < expires_at + 1:
                    await asyncio.sleep(0.01)
            assert stopped_at, "the work was not stopped"
            assert stopped_at[0] < expires_at
            assert stopped_at[0] - cut_at >= 0, "stopped by the cut, not before"
            assert lease.epoch is None and not lease.held
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
        finally:
            await a.run_on_connection(
                lambda c: c.execute("ALTER TABLE triggerd.leases_cut RENAME TO leases")
            )
        await asyncio.sleep(max(0.0, expires_at - time.monotonic()) + 0.2)  # expired now
        assert await b.acquire_lease("schedule:cut", 30) == 2
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


async def test_a_daemon_is_a_member_while_its_store_is_open(pg_url: str) -> None:
    await empty_store(pg_url)
    store = PostgresStateStore(pg_url, member_id="daemon-m")
    await store.open()
    conn = await asyncpg.connect(pg_url)
    try:
        row = await conn.fetchrow(
            "SELECT heartbeat, extract(epoch FROM clock_timestamp()) FROM triggerd.members "
            "WHERE member = 'daemon-m'"
        )
        assert row is not None and abs(float(row[1]) - float(row[0])) < 5
        await store.close()
        assert await conn.fetchval("SELECT count(*) FROM triggerd.members") == 0
    finally:
        await conn.close()


async def test_lease_table_and_steal_for_balancing_shard_leases(
    stores: list[PostgresStateStore],
) -> None:
    """BalancesLeases: the live members and a prefix's leases in one read; a steal takes a
    held lease only at the epoch seen, and fences the holder it took it from."""
    a, b, c = stores
    assert isinstance(a, BalancesLeases)
    assert await a.acquire_lease("shard:t1/s0", 30) == 1
    assert await a.acquire_lease("shard:t1/s1", 30) == 1
    assert await a.acquire_lease("shard:t10/s0", 30) == 1  # another trigger's prefix
    table = await c.lease_table("shard:t1/")
    assert table.member == "daemon-c"
    assert table.members == ("daemon-a", "daemon-b", "daemon-c")
    assert [(i.name, i.holder, i.epoch) for i in table.leases] == [
        ("shard:t1/s0", "daemon-a", 1),
        ("shard:t1/s1", "daemon-a", 1),
    ]
    assert table.leases[0].expires_at - table.now == pytest.approx(30, abs=5)
    assert await c.steal_lease("shard:t1/s1", 1, 30) == 2
    assert await b.steal_lease("shard:t1/s1", 1, 30) is None  # it moved on meanwhile
    assert not await a.renew_lease("shard:t1/s1", 1, 30)
    with pytest.raises(LeaseLostError):
        await a.enqueue_fenced(Fence("shard:t1/s1", 1), [], {"t1": {"shard:s1": "9"}})
    await c.enqueue_fenced(Fence("shard:t1/s1", 2), [], {"t1": {"shard:s1": "5"}})
    assert await a.get_checkpoint("t1", "shard:s1") == "5"
