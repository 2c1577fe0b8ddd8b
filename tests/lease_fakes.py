"""One in-memory lease table shared by several fake daemons, for the unit tests of what runs
once or is balanced across a cluster (pipeline singletons, S3 poll, shard leases).

`FakeLeaseTable` is what the shared database holds (leases, heartbeats, checkpoints);
`FakeLeaseMember` is one daemon's `LeaseStore` view of it. Leases follow the rules of the real
stores: a free, expired or own lease is granted with the next epoch; renewing needs the same
holder and epoch before expiry; a fenced write from a stale epoch raises `LeaseLostError`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from triggerd.state.base import NewEvent
from triggerd.state.leases import Fence, LeaseInfo, LeaseLostError, LeaseTable
from triggerd.state.sqlite import StateStoreUnavailableError
from triggerd.types import SystemClock

#: A member whose heartbeat is older than this is no longer counted live.
LIVE_S = 15.0


class WallClock(Protocol):
    def time(self) -> float: ...


@dataclass
class FakeLeaseTable:
    """The shared lease table, checkpoints and heartbeats of a cluster."""

    clock: WallClock = field(default_factory=SystemClock)
    rows: dict[str, LeaseInfo] = field(default_factory=dict)
    heartbeats: dict[str, float] = field(default_factory=dict)
    checkpoints: dict[str, str] = field(default_factory=dict)
    #: Fences of the writes refused because the lease had moved on.
    refused: list[Fence] = field(default_factory=list)

    def holder(self, name: str) -> str | None:
        row = self.rows.get(name)
        return None if row is None else row.holder

    def take(self, name: str, member: str, hold_s: float = 3600) -> None:
        """Another daemon takes the lease (next epoch), whoever held it."""
        row = self.rows.get(name)
        now = self.clock.time()
        epoch = (row.epoch if row else 0) + 1
        self.rows[name] = LeaseInfo(name, member, epoch, now + hold_s, now)

    def give_up(self, name: str) -> None:
        """Whoever holds the lease lets it go (same epoch, free now)."""
        row = self.rows.get(name)
        if row is not None:
            self.rows[name] = LeaseInfo(name, None, row.epoch, self.clock.time(), row.heartbeat)


class FakeLeaseMember:
    """One daemon's view of the table: a LeaseStore that balances, with checkpoints."""

    def __init__(self, table: FakeLeaseTable, member: str) -> None:
        self.t = table
        self.member = member
        #: The database cannot be reached: renewing and reading the table fail.
        self.down = False
        table.heartbeats[member] = table.clock.time()

    def _grant(self, name: str, epoch: int, timeout_s: float) -> int:
        now = self.t.clock.time()
        self.t.rows[name] = LeaseInfo(name, self.member, epoch, now + timeout_s, now)
        return epoch

    async def acquire_lease(self, name: str, timeout_s: float) -> int | None:
        row = self.t.rows.get(name)
        now = self.t.clock.time()
        if row is not None and row.holder not in (None, self.member) and row.expires_at > now:
            return None
        return self._grant(name, (row.epoch if row else 0) + 1, timeout_s)

    async def renew_lease(self, name: str, epoch: int, timeout_s: float) -> bool:
        if self.down:
            raise StateStoreUnavailableError("the state store is unavailable")
        row = self.t.rows.get(name)
        now = self.t.clock.time()
        if row is None or (row.holder, row.epoch) != (self.member, epoch) or row.expires_at <= now:
            return False
        self._grant(name, epoch, timeout_s)
        return True

    async def release_lease(self, name: str, epoch: int) -> None:
        row = self.t.rows.get(name)
        if row is not None and (row.holder, row.epoch) == (self.member, epoch):
            self.t.give_up(name)

    async def steal_lease(self, name: str, epoch: int, timeout_s: float) -> int | None:
        row = self.t.rows.get(name)
        if row is None or row.epoch != epoch:
            return None
        return self._grant(name, epoch + 1, timeout_s)

    async def lease_table(self, prefix: str) -> LeaseTable:
        if self.down:
            raise StateStoreUnavailableError("the state store is unavailable")
        now = self.t.clock.time()
        self.t.heartbeats[self.member] = now
        live = tuple(sorted(m for m, at in self.t.heartbeats.items() if at >= now - LIVE_S))
        rows = tuple(r for n, r in sorted(self.t.rows.items()) if n.startswith(prefix))
        return LeaseTable(self.member, live, rows, now)

    def check_fence(self, fence: Fence) -> None:
        """Raise `LeaseLostError` (and note the fence) unless this member holds that epoch."""
        row = self.t.rows.get(fence.lease)
        if row is None or (row.holder, row.epoch) != (self.member, fence.epoch):
            self.t.refused.append(fence)
            raise LeaseLostError("moved on")

    async def enqueue_fenced(
        self,
        fence: Fence,
        events: Sequence[NewEvent],
        checkpoints: Mapping[str, Mapping[str, str | None]] | None = None,
    ) -> None:
        self.check_fence(fence)
        await self.write(events, checkpoints or {})

    async def write(
        self, events: Sequence[NewEvent], checkpoints: Mapping[str, Mapping[str, str | None]]
    ) -> None:
        """What an enqueue writes once its fence held: here the checkpoints, into the table."""
        for items in checkpoints.values():
            for key, value in items.items():
                if value is None:
                    self.t.checkpoints.pop(key, None)
                else:
                    self.t.checkpoints[key] = value

    async def leases(self) -> list[LeaseInfo]:
        return list(self.t.rows.values())

    async def list_checkpoints(self, scope: str, prefix: str = "") -> dict[str, str]:
        return {k: v for k, v in self.t.checkpoints.items() if k.startswith(prefix)}

    async def get_checkpoint(self, scope: str, key: str) -> str | None:
        return self.t.checkpoints.get(key)
