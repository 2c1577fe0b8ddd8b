"""Stream shard leases balanced across the daemons sharing a state store, as the Kinesis
Client Library does with its lease table (triggerd.delivery.shards reads a shard only while
it holds the shard's lease).

Each shard that may be read now (not finished, its parents finished) has a lease named
`shard:<trigger>/<shard id>` (triggerd.state.leases: an epoch per acquisition, fenced
checkpoint writes). Every third of the lease timeout a daemon renews the leases it holds
(`renew`, on its own: a slow round never delays it) and, in a round of its own, reads the
lease table and the live members (heartbeats) and plans (`plan`):

- its share is ceil(shards / live members); a member counts as live while its heartbeat is
  recent or while it holds an unexpired lease;
- free or expired leases come first: it takes as many as it needs to reach its share, and
  one more per round when it has its share already (a shard nobody reads is worse than an
  uneven spread, e.g. while a killed daemon still counts as live);
- with no free lease and under its share, it takes one lease from the most loaded holder
  (a "steal"), when that holder has more than the share (or at least the share, when the
  stealer needs two or more): several stealers converge without taking leases back and
  forth.

A lease the daemon fails to renew (taken over, expired, the store unreachable past the
lease's local deadline) is lost: the reader stops reading the shard and gives its records
back (see triggerd.delivery.shards).
"""

from __future__ import annotations

import logging
import math
import zlib
from collections.abc import Collection
from dataclasses import dataclass

from triggerd.state.leases import (
    BalancesLeases,
    Fence,
    Lease,
    LeaseInfo,
    LeaseLostError,
    LeaseStore,
    LeaseTable,
)
from triggerd.state.sqlite import StateStoreError
from triggerd.types import Clock

log = logging.getLogger(__name__)

__all__ = ["Plan", "ShardLeases", "coordinated", "plan", "share"]


def coordinated(store: object) -> bool:
    """Several daemons may share this store: shards are read under leases. A store of one
    daemon (SQLite, whose leases are always granted) reads every shard without them."""
    return (
        isinstance(store, LeaseStore)
        and isinstance(store, BalancesLeases)
        and not getattr(store, "grants_forever", False)
    )


def share(shards: int, members: int) -> int:
    """The leases each live member aims at."""
    return math.ceil(shards / max(1, members))


@dataclass(frozen=True, slots=True)
class Plan:
    """One balancing round's moves: free or expired leases to take, a lease to steal."""

    take: tuple[str, ...] = ()
    steal: LeaseInfo | None = None


def plan(wanted: Collection[str], table: LeaseTable) -> Plan:
    """What this member (`table.member`) does this round about the leases `wanted` (the
    names of the shards to read now); see the module docstring."""
    by_name = {info.name: info for info in table.leases}
    held: dict[str, list[LeaseInfo]] = {}
    free: list[str] = []
    for name in sorted(wanted):
        info = by_name.get(name)
        if info is None or info.holder is None or info.expires_at <= table.now:
            free.append(name)
        else:
            held.setdefault(info.holder, []).append(info)
    members = set(table.members) | set(held) | {table.member}
    target = share(len(wanted), len(members))
    needed = target - len(held.get(table.member, ()))
    if free:
        # Start at a place of its own, so daemons starting together try different leases.
        at = zlib.crc32(table.member.encode()) % len(free)
        order = free[at:] + free[:at]
        return Plan(take=tuple(order[: max(needed, 1)]))
    if needed <= 0:
        return Plan()
    others = sorted((-len(v), h) for h, v in held.items() if h != table.member)
    if not others:
        return Plan()
    count, victim = -others[0][0], others[0][1]
    if count < (target if needed > 1 else target + 1):
        return Plan()
    return Plan(steal=min(held[victim], key=lambda i: i.name))


class ShardLeases:
    """The shard leases one reader holds, by shard id, and its balancing rounds."""

    def __init__(self, store: object, trigger: str, *, timeout_s: float, clock: Clock) -> None:
        if not (isinstance(store, LeaseStore) and isinstance(store, BalancesLeases)):
            raise TypeError(f"{store!r} cannot balance leases")
        self.store: LeaseStore = store
        self.balancer: BalancesLeases = store
        self.trigger = trigger
        self.timeout_s = timeout_s
        self.clock = clock
        self.prefix = f"shard:{trigger}/"
        self._held: dict[str, Lease] = {}

    def name(self, shard_id: str) -> str:
        return self.prefix + shard_id

    def held(self, shard_id: str) -> bool:
        lease = self._held.get(shard_id)
        return lease is not None and lease.held

    def held_shards(self) -> set[str]:
        return set(self._held)

    def fence(self, shard_id: str) -> Fence:
        """LeaseLostError when the shard's lease is not held (any more)."""
        lease = self._held.get(shard_id)
        if lease is None:
            raise LeaseLostError(f"the lease {self.name(shard_id)!r} is not held")
        return lease.fence

    def _lease(self, shard_id: str) -> Lease:
        return Lease(self.store, self.name(shard_id), timeout_s=self.timeout_s, clock=self.clock)

    async def renew(self) -> set[str]:
        """Renew every lease held; the shards whose lease was lost. Runs beside `balance`
        and `release`: a lease replaced or released meanwhile is not reported."""
        lost: set[str] = set()
        for sid, lease in list(self._held.items()):
            if not await lease.renew() and self._held.get(sid) is lease:
                lost.add(sid)
                del self._held[sid]
        return lost

    async def balance(self, wanted: Collection[str]) -> list[str]:
        """One round over the shards `wanted` (see `plan`): the shards gained, in the order
        they were taken."""
        table = await self.balancer.lease_table(self.prefix)
        moves = plan([self.name(sid) for sid in wanted], table)
        gained: list[str] = []
        for name in moves.take:
            sid = name[len(self.prefix) :]
            lease = self._lease(sid)
            try:
                if await lease.acquire():
                    self._held[sid] = lease
                    gained.append(sid)
            except StateStoreError as exc:  # the next round tries again
                log.warning("lease.acquire_failed", extra={"lease": name, "error": str(exc)})
        if moves.steal is not None:
            sid = moves.steal.name[len(self.prefix) :]
            lease = self._lease(sid)
            if await lease.steal(moves.steal.epoch):
                log.info(
                    "stream.shard_stolen",
                    extra={"trigger": self.trigger, "shard": sid, "from": moves.steal.holder},
                )
                self._held[sid] = lease
                gained.append(sid)
        return gained

    async def release(self, shard_id: str) -> None:
        lease = self._held.pop(shard_id, None)
        if lease is not None:
            await lease.release()

    async def release_all(self) -> None:
        for sid in list(self._held):
            await self.release(sid)
