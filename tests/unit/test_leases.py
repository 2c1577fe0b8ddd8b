"""The `Lease` holder's side (triggerd.state.leases) against a fake lease store: renewals,
the local deadline that stops the work whatever the store does, standing by, and the
SQLite store that always grants."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Mapping, Sequence

import pytest

from triggerd.cli.readstate import StoreSnapshot
from triggerd.cli.status import print_cluster
from triggerd.state.base import NewEvent
from triggerd.state.leases import Fence, Lease, LeaseInfo, LeaseLostError, LeaseStore
from triggerd.state.sqlite import SQLiteStateStore, StateStoreUnavailableError


class FakeLeases:
    """One lease table in memory, on the real clock; `mode` makes renewals fail or hang."""

    def __init__(self) -> None:
        self.holder: str | None = None
        self.epoch = 0
        self.expires = 0.0
        self.mode = "ok"
        self.member = "me"
        self.renewals = 0

    async def acquire_lease(self, name: str, timeout_s: float) -> int | None:
        now = time.monotonic()
        if self.holder not in (None, self.member) and self.expires > now:
            return None
        if self.holder != self.member:
            self.epoch += 1
        self.holder, self.expires = self.member, now + timeout_s
        return self.epoch

    async def renew_lease(self, name: str, epoch: int, timeout_s: float) -> bool:
        self.renewals += 1
        if self.mode == "hang":
            await asyncio.Event().wait()
        if self.mode == "down":
            raise StateStoreUnavailableError("the state store is unavailable")
        now = time.monotonic()
        if self.holder != self.member or self.epoch != epoch or self.expires <= now:
            return False
        self.expires = now + timeout_s
        return True

    async def release_lease(self, name: str, epoch: int) -> None:
        if self.holder == self.member and self.epoch == epoch:
            self.holder = None

    async def enqueue_fenced(
        self,
        fence: Fence,
        events: Sequence[NewEvent],
        checkpoints: Mapping[str, Mapping[str, str | None]] | None = None,
    ) -> None:
        if fence.epoch != self.epoch or self.holder != self.member:
            raise LeaseLostError("moved on")

    async def leases(self) -> list[LeaseInfo]:
        return []


async def until(cond: Callable[[], bool], what: str, timeout: float = 20) -> None:
    """Wait for `cond` (a wide "did not hang" bound), not for a fixed moment."""
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.01)


def test_the_fake_is_a_lease_store() -> None:
    assert isinstance(FakeLeases(), LeaseStore)


async def test_held_only_until_timeout_minus_margin_without_renewal() -> None:
    lease = Lease(FakeLeases(), "l", timeout_s=1.6, margin_s=0.4)
    assert await lease.acquire()
    assert lease.held and lease.fence == Fence("l", 1)
    await asyncio.sleep(1.25)
    assert not lease.held
    with pytest.raises(LeaseLostError):
        _ = lease.fence


@pytest.mark.parametrize("mode", ["hang", "down"])
async def test_work_stops_at_the_local_deadline_when_renewals_hang_or_fail(mode: str) -> None:
    store = FakeLeases()
    # The margin is what lets a slow event loop still stop in time: wide enough for a loaded
    # machine (the local deadline is at 1.5 s, the store's expiry at 3 s).
    lease = Lease(store, "l", timeout_s=3.0, margin_s=1.5)
    started = asyncio.Event()
    stopped: list[float] = []

    async def work(fence: Fence) -> None:
        started.set()
        store.mode = mode
        try:
            await asyncio.Event().wait()
        finally:
            stopped.append(time.monotonic())

    began = time.monotonic()
    runner = asyncio.ensure_future(lease.run(work))
    await started.wait()
    try:
        await until(lambda: bool(stopped) or time.monotonic() > store.expires, "the work to stop")
        assert stopped, "the work outlived its lease"
        assert stopped[0] - began >= 3.0 - 1.5, "stopped at the local deadline, not before"
        assert stopped[0] < store.expires
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


async def test_renewals_keep_the_work_running_past_the_timeout() -> None:
    store = FakeLeases()
    lease = Lease(store, "l", timeout_s=1.2)
    ran: list[Fence] = []
    began = time.monotonic()

    async def work(fence: Fence) -> None:
        ran.append(fence)
        await asyncio.Event().wait()

    runner = asyncio.ensure_future(lease.run(work))
    await until(lambda: store.renewals >= 4, "four renewals")
    assert time.monotonic() - began > 1.2, "past the timeout"
    # One run of the work, never stopped and started again (a lost lease would have).
    assert not runner.done() and ran == [Fence("l", 1)]
    assert (store.holder, store.epoch) == ("me", 1)
    runner.cancel()
    await asyncio.gather(runner, return_exceptions=True)
    assert store.holder is None  # cancellation released it


async def test_a_standby_takes_over_when_the_holder_is_gone_and_stands_by_when_fenced() -> None:
    store = FakeLeases()
    store.holder, store.epoch, store.expires = "other", 4, time.monotonic() + 0.3
    lease = Lease(store, "l", timeout_s=0.5)
    fences: list[Fence] = []

    async def work(fence: Fence) -> None:
        fences.append(fence)
        # Another daemon took the lease meanwhile: the fenced write says so.
        store.holder, store.epoch, store.expires = "third", 6, time.monotonic() + 30
        raise LeaseLostError("moved on")

    runner = asyncio.ensure_future(lease.run(work))
    await until(lambda: bool(fences) and not lease.held, "the takeover, then standing by")
    await asyncio.sleep(0.3)  # standby attempts (every 0.1 s) find the third's lease
    assert not lease.held
    runner.cancel()
    await asyncio.gather(runner, return_exceptions=True)
    assert fences == [Fence("l", 5)]  # standing by since: the lease is the third's
    assert (store.holder, store.epoch) == ("third", 6)


async def test_work_that_ends_gives_the_lease_up() -> None:
    store = FakeLeases()
    lease = Lease(store, "l", timeout_s=10)
    done = asyncio.Event()

    async def work(fence: Fence) -> None:
        done.set()

    runner = asyncio.ensure_future(lease.run(work))
    await done.wait()
    await until(lambda: store.holder is None, "the lease to be given up")
    runner.cancel()
    await asyncio.gather(runner, return_exceptions=True)


async def test_the_sqlite_store_always_grants_and_its_fences_pass() -> None:
    store = SQLiteStateStore(":memory:")
    await store.open()
    try:
        assert isinstance(store, LeaseStore)
        lease = Lease(store, "schedule:t", timeout_s=30)
        assert await lease.acquire() and lease.fence == Fence("schedule:t", 1)
        assert await lease.renew()
        assert lease.remaining_s == math.inf  # held while the daemon runs: no renewals
        keeper = asyncio.ensure_future(lease.keep())
        await asyncio.sleep(0.05)
        assert not keeper.done()
        keeper.cancel()
        ev = NewEvent("t", "f", b"{}", "r1", 1.0, 1.0)
        await store.enqueue_fenced(lease.fence, [ev], {"t": {"last_fire": "x"}})
        assert await store.get_checkpoint("t", "last_fire") == "x"
        assert await store.queued(["r1"]) == {"r1"}
        await lease.release()
        assert not lease.held
    finally:
        await store.close()


def test_bad_timeouts_are_refused() -> None:
    with pytest.raises(ValueError, match="timeout_s"):
        Lease(FakeLeases(), "l", timeout_s=0)
    with pytest.raises(ValueError, match="margin_s"):
        Lease(FakeLeases(), "l", timeout_s=1, margin_s=1)


def test_status_prints_the_members_and_who_holds_each_lease(
    capsys: pytest.CaptureFixture[str],
) -> None:
    snap = StoreSnapshot(
        "postgresql://db/triggerd",
        {},
        {},
        members=({"member": "a:1:x", "up_s": 60.0, "heartbeat_age_s": 1.5},),
        leases=(
            {
                "lease": "schedule:t",
                "holder": "a:1:x",
                "epoch": 3,
                "expires_in_s": 9.0,
                "renewed_s_ago": 1.0,
            },
            {
                "lease": "schedule:u",
                "holder": None,
                "epoch": 2,
                "expires_in_s": None,
                "renewed_s_ago": 99.0,
            },
        ),
    )
    print_cluster(snap)
    assert capsys.readouterr().out.splitlines() == [
        "member a:1:x: heartbeat 1.5 s ago, up 60.0 s",
        "lease schedule:t: held by a:1:x at epoch 3, expires in 9.0 s unless renewed",
        "lease schedule:u: free (epoch 2)",
    ]
