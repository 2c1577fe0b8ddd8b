"""Leases with fencing for the sources that must run once across a cluster (schedules, and
each stream shard: triggerd.delivery.shardleases balances those with `BalancesLeases`).

A lease is a named row in the state store: its holder (a daemon's member id), an epoch that
grows by one on every acquisition (a change of holder, or the same holder taking it again
after it gave it up), and when it expires. A daemon works as the singleton
only while it holds the lease, and every checkpoint it writes for that work carries the
epoch (a `Fence`): the store checks the epoch in the same transaction as the write and
refuses it with `LeaseLostError` once another daemon has taken the lease, so a daemon that
paused (a long GC, a suspended VM, a partition) cannot write over its successor's progress.

The holder does not wait to be told: it stops its singleton work itself once it has not
renewed for `timeout_s - margin_s` (measured on its own monotonic clock from the moment it
sent the last successful renewal, which is before the store set the expiry), so it has
stopped before any other daemon can take the lease.

The PostgreSQL store implements `LeaseStore` on its `leases` table (expiry on the database's
clock, so the daemons' clocks need not agree); the SQLite store (one daemon) always grants.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from triggerd.state.base import NewEvent
from triggerd.state.sqlite import StateStoreError
from triggerd.types import Clock, SystemClock

log = logging.getLogger(__name__)

#: A lease's default duration without renewal.
DEFAULT_TIMEOUT_S = 15.0
#: How long a standby waits between attempts to take a lease, as a fraction of its timeout.
_STANDBY_FRACTION = 1 / 5
#: Renewals per timeout while held.
_RENEWALS_PER_TIMEOUT = 3


class LeaseLostError(StateStoreError):
    """A fenced write was refused: the lease's epoch moved on (another daemon holds it now,
    or it was released), so the singleton work that tried it must stop."""


@dataclass(frozen=True, slots=True)
class Fence:
    """What a fenced write carries: the lease and the epoch its writer holds."""

    lease: str
    epoch: int


@dataclass(frozen=True, slots=True)
class LeaseInfo:
    """A lease as `triggerd status` shows it (times in epoch seconds of the store)."""

    name: str
    holder: str | None
    epoch: int
    expires_at: float
    heartbeat: float


@runtime_checkable
class LeaseStore(Protocol):
    """A store that grants leases and checks fences (an optional capability)."""

    async def acquire_lease(self, name: str, timeout_s: float) -> int | None:
        """Take the lease `name` for this store's member for `timeout_s`: its new epoch
        (one more than the last) when granted, None while another member holds it
        unexpired."""
        ...

    async def renew_lease(self, name: str, epoch: int, timeout_s: float) -> bool:
        """Extend the lease held at `epoch` by `timeout_s` from now; False when it is no
        longer ours (taken, released or expired)."""
        ...

    async def release_lease(self, name: str, epoch: int) -> None:
        """Give the lease up (if still held at `epoch`), so a standby takes it at once."""
        ...

    async def enqueue_fenced(
        self,
        fence: Fence,
        events: Sequence[NewEvent],
        checkpoints: Mapping[str, Mapping[str, str | None]] | None = None,
    ) -> None:
        """`enqueue`, in a transaction that first checks that this member still holds
        `fence.lease` at `fence.epoch`; LeaseLostError (nothing written) when not."""
        ...

    async def leases(self) -> list[LeaseInfo]:
        """Every lease, by name."""
        ...


@dataclass(frozen=True, slots=True)
class LeaseTable:
    """What a daemon balancing many leases (stream shards) sees of the store in one read."""

    #: This store's member id (the holder its leases carry).
    member: str
    #: The members whose heartbeat is recent (this one included).
    members: tuple[str, ...]
    #: The leases whose name starts with the prefix asked for.
    leases: tuple[LeaseInfo, ...]
    #: The store's clock (epoch seconds), to tell expired leases.
    now: float


@runtime_checkable
class BalancesLeases(Protocol):
    """A lease store that several daemons balance leases on (an optional capability):
    one read of the live members and a prefix's leases, and taking a lease over from its
    holder (the Kinesis Client Library's "steal")."""

    async def lease_table(self, prefix: str) -> LeaseTable: ...

    async def steal_lease(self, name: str, epoch: int, timeout_s: float) -> int | None:
        """Take the lease `name` from whoever holds it at `epoch`: its new epoch, or None
        when it moved on meanwhile (another daemon renewed nothing, but stole or took it)."""
        ...


def _grants_forever(store: LeaseStore) -> bool:
    """A store of one daemon (SQLite) whose leases never need renewing: no timer per lease."""
    return bool(getattr(store, "grants_forever", False))


class Lease:
    """One named lease as its would-be holder sees it: `acquire`, `renew`, `release`, and
    `held` (false as soon as the local deadline passed, renewed or not)."""

    def __init__(
        self,
        store: LeaseStore,
        name: str,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        margin_s: float | None = None,
        clock: Clock | None = None,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError("a lease's timeout_s must be positive")
        self.store = store
        self.name = name
        self.timeout_s = timeout_s
        #: Stop this long before the store's expiry (clock rate error, a slow event loop).
        self.margin_s = timeout_s / 4 if margin_s is None else margin_s
        if not 0 <= self.margin_s < timeout_s:
            raise ValueError("a lease's margin_s must be at least 0 and below timeout_s")
        self._clock: Clock = clock if clock is not None else SystemClock()
        self.epoch: int | None = None
        self._valid_until = 0.0

    @property
    def held(self) -> bool:
        return self.epoch is not None and self._clock.monotonic() < self._valid_until

    @property
    def remaining_s(self) -> float:
        """Seconds until the holder must have stopped (0 when not held)."""
        return max(0.0, self._valid_until - self._clock.monotonic()) if self.held else 0.0

    @property
    def fence(self) -> Fence:
        """The fence for writes of the singleton work; LeaseLostError when not held."""
        if self.epoch is None or not self.held:
            raise LeaseLostError(f"the lease {self.name!r} is not held")
        return Fence(self.name, self.epoch)

    async def acquire(self) -> bool:
        """Try to take the lease once; True when held."""
        sent = self._clock.monotonic()
        epoch = await self.store.acquire_lease(self.name, self.timeout_s)
        if epoch is None:
            self.epoch = None
            return False
        if epoch != self.epoch:
            log.info("lease.acquired", extra={"lease": self.name, "epoch": epoch})
        self.epoch = epoch
        self._valid_until = self._deadline(sent)
        return True

    async def steal(self, epoch: int) -> bool:
        """Take the lease over from its holder at `epoch` (`BalancesLeases`); True when
        held."""
        assert isinstance(self.store, BalancesLeases), "the store cannot steal leases"
        sent = self._clock.monotonic()
        new = await self.store.steal_lease(self.name, epoch, self.timeout_s)
        if new is None:
            return False
        log.info("lease.stolen", extra={"lease": self.name, "epoch": new, "from_epoch": epoch})
        self.epoch = new
        self._valid_until = self._deadline(sent)
        return True

    async def renew(self) -> bool:
        """Renew once, giving up at the local deadline; True while still held. A store
        error before the deadline is not a loss (the next renewal may succeed)."""
        if self.epoch is None or not self.held:
            return self._lost("expired")
        sent = self._clock.monotonic()
        try:
            async with asyncio.timeout(self.remaining_s):
                ok = await self.store.renew_lease(self.name, self.epoch, self.timeout_s)
        except TimeoutError:
            return self._lost("renewal_timed_out")
        except StateStoreError as exc:
            log.warning("lease.renew_failed", extra={"lease": self.name, "error": str(exc)})
            return self.held or self._lost("unreachable")
        if not ok:
            return self._lost("taken")
        self._valid_until = self._deadline(sent)
        return True

    def _deadline(self, sent: float) -> float:
        """When the holder must have stopped, for a grant or renewal sent at `sent`."""
        if _grants_forever(self.store):
            return math.inf
        return sent + self.timeout_s - self.margin_s

    async def release(self) -> None:
        """Give the lease up (best effort: an unreachable store lets it expire instead)."""
        epoch, self.epoch = self.epoch, None
        if epoch is None:
            return
        with contextlib.suppress(StateStoreError, TimeoutError):
            async with asyncio.timeout(self.timeout_s - self.margin_s):
                await self.store.release_lease(self.name, epoch)
        log.info("lease.released", extra={"lease": self.name, "epoch": epoch})

    def _lost(self, reason: str) -> bool:
        if self.epoch is not None:
            log.warning(
                "lease.lost", extra={"lease": self.name, "epoch": self.epoch, "reason": reason}
            )
        self.epoch = None
        return False

    async def keep(self) -> None:
        """Renew every third of the timeout until the lease is lost; returns then (at the
        latest at the local deadline)."""
        if _grants_forever(self.store):  # nothing to renew: held until cancelled
            await asyncio.Event().wait()
        interval = self.timeout_s / _RENEWALS_PER_TIMEOUT
        while self.held:
            await self._clock.sleep(min(interval, self.remaining_s))
            if not await self.renew():
                return

    async def run(self, work: Callable[[Fence], Awaitable[None]]) -> None:
        """Forever (until cancelled): wait to take the lease, then run `work(fence)` while
        it is held. `work` is cancelled when the lease is lost, and the lease is given up
        when `work` ends (returning or raising LeaseLostError); then the daemon stands by
        again. Cancellation releases the lease."""
        try:
            while True:
                if not await self._try_acquire():
                    await self._clock.sleep(self.timeout_s * _STANDBY_FRACTION)
                    continue
                await self._hold(work)
                await self._clock.sleep(self.timeout_s * _STANDBY_FRACTION)
        finally:
            await asyncio.shield(self.release())

    async def _try_acquire(self) -> bool:
        try:
            return await self.acquire()
        except StateStoreError as exc:
            log.warning("lease.acquire_failed", extra={"lease": self.name, "error": str(exc)})
            return False

    async def _hold(self, work: Callable[[Fence], Awaitable[None]]) -> None:
        fence = self.fence
        keeper = asyncio.ensure_future(self.keep())
        worker = asyncio.ensure_future(work(fence))
        try:
            await asyncio.wait({keeper, worker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (worker, keeper):
                task.cancel()
            results = await asyncio.gather(worker, keeper, return_exceptions=True)
        error = results[0]
        if isinstance(error, LeaseLostError):
            self._lost("fenced")
        elif isinstance(error, Exception):
            log.error("lease.work_failed", extra={"lease": self.name, "error": repr(error)})
        if self.epoch is not None:  # the work ended while the lease was still ours
            await self.release()
