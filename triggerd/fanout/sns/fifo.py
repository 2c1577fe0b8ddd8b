"""Order per message group for functions subscribed to FIFO topics.

A function's Event queue invokes several events at once and retries a failed one later, after
the ones behind it, as Lambda's asynchronous invocation does; that would reorder a group. So a
FIFO topic's deliveries to a function are not put on its Event queue directly: the publish
commits them to a holding queue in the state store (`sns-fifo:<function>`), and this relay
moves them to the function's Event queue **one per (subscription, MessageGroupId) at a time**:
the next message of a group is released only once the previous one has left the Event queue
(invoked successfully, or given up on and sent to the on-failure destination after its
retries). Groups are independent, so different groups run in parallel up to the function's
concurrency, and a failing message holds back only its own group, as in SNS FIFO.

The released event's request id is derived from the held one's, and the held row is completed
only once its release has left the Event queue: until then it marks its group as busy, across
a restart too (the relay looks up which releases are still queued, `StateStore.queued`). A
crash in the moment between a release leaving the Event queue and the held row's completion
releases that message again: at least once, never out of order."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Protocol

import orjson

from triggerd.delivery.settle import settle
from triggerd.state.base import NewEvent, QueuedEvent, StateStore

__all__ = ["FifoRelay", "held_payload", "holding_queue"]

log = logging.getLogger("triggerd.sns")

_NS = uuid.UUID("3d8c1f0e-6a2b-4f7d-9e51-0c4b8a2d7f13")
_LEASE_S = 600.0
_CLAIM = 200
#: How often released events are looked up while some are in flight.
_CHECK_S = 0.05
_IDLE_S = 2.0
#: Groups remembered with a released event; more wait until some finish.
MAX_IN_FLIGHT = 10_000


def holding_queue(function: str) -> str:
    return f"sns-fifo:{function}"


def held_payload(key: str, event: bytes) -> bytes:
    return orjson.dumps({"key": key, "event": event.decode()})


class _Queues(Protocol):
    def queue_of(self, function: str) -> str | None: ...

    def wake(self, function: str) -> None: ...


class FifoRelay:
    def __init__(
        self,
        functions: list[str],
        *,
        state: StateStore,
        queues: _Queues,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.functions = sorted(set(functions))
        self.state = state
        self.queues = queues
        self.clock = clock
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        #: Per function: group key -> its held event whose release is on the Event queue (the
        #: held row stays, leased, until the release is done: it marks the group as busy
        #: across a restart).
        self._released: dict[str, dict[str, QueuedEvent]] = {f: {} for f in functions}
        #: Per function: held events claimed here, per group key, in order.
        self._held: dict[str, dict[str, deque[QueuedEvent]]] = {f: {} for f in functions}
        #: Functions with held or released events, or just woken: looked at every _CHECK_S;
        #: the others every _IDLE_S.
        self._active: set[str] = set()

    def wake(self, function: str) -> None:
        """New held events for `function` (a function a reload added is taken up here)."""
        if function not in self._held:
            self.functions = sorted({*self.functions, function})
            self._released[function] = {}
            self._held[function] = {}
        self._active.add(function)
        self._wake.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        # Runs even without functions: a reload may add one that a FIFO topic delivers to.
        await self._recover()
        last_extend = last_all = time.monotonic()
        while not self._stopping.is_set():
            self._wake.clear()
            everyone = time.monotonic() - last_all >= _IDLE_S
            if everyone:
                last_all = time.monotonic()
            for function in self.functions:
                if everyone or function in self._active:
                    await self._step(function)
                    if not self._released[function] and not self._held[function]:
                        self._active.discard(function)
            if time.monotonic() - last_extend > _LEASE_S / 3:
                await self._extend_leases()
                last_extend = time.monotonic()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), _CHECK_S if self._active else _IDLE_S)
        await settle(self._give_back())

    async def _recover(self) -> None:
        """After a restart: the held events are claimable again (their leases were recovered
        at start); a group whose first held event is on the Event queue (released, not yet
        done) is in flight."""
        for function in self.functions:
            if self.queues.queue_of(function) is None:
                continue
            claimed = await self.state.claim(
                holding_queue(function), _CLAIM, _LEASE_S, self.clock()
            )
            for event in claimed:
                self._hold(function, event)
            if claimed:
                self._active.add(function)
            heads = [group[0] for group in self._held[function].values()]
            still = await self.state.queued([released_id(e.request_id) for e in heads])
            for event in heads:
                if released_id(event.request_id) in still:
                    key = _key(event)
                    self._held[function][key].popleft()
                    self._released[function][key] = event

    def _hold(self, function: str, event: QueuedEvent) -> None:
        self._held[function].setdefault(_key(event), deque()).append(event)

    async def _step(self, function: str) -> None:
        queue = self.queues.queue_of(function)
        if queue is None:
            return
        released = self._released[function]
        if released:
            still = await self.state.queued([released_id(e.request_id) for e in released.values()])
            for key, event in list(released.items()):
                if released_id(event.request_id) not in still:
                    await self.state.complete(event.id)
                    del released[key]
        held = self._held[function]
        if sum(len(g) for g in held.values()) < _CLAIM:
            now = self.clock()
            for event in await self.state.claim(holding_queue(function), _CLAIM, _LEASE_S, now):
                self._hold(function, event)
        ready = [
            key
            for key, group in held.items()
            if group and key not in released and len(released) < MAX_IN_FLIGHT
        ]
        if not ready:
            return
        now = self.clock()
        moving = [held[key].popleft() for key in ready]
        events = [
            NewEvent(
                queue,
                function,
                orjson.loads(e.payload)["event"].encode(),
                released_id(e.request_id),
                e.enqueued_at,
                now,
                e.trace_id,
            )
            for e in moving
        ]
        await self.state.enqueue(events)
        for key, event in zip(ready, moving, strict=True):
            released[key] = event
        for key in [k for k, g in held.items() if not g]:
            del held[key]
        self.queues.wake(function)

    async def _extend_leases(self) -> None:
        ids = [e.id for held in self._held.values() for g in held.values() for e in g]
        ids += [e.id for released in self._released.values() for e in released.values()]
        if ids:
            await self.state.extend_lease(ids, _LEASE_S, self.clock())

    async def _give_back(self) -> None:
        """Stopping: the held events (released ones included) are claimable again at the
        next start."""
        for function, released in self._released.items():
            for event in released.values():
                self._hold(function, event)
            released.clear()
        for held in self._held.values():
            for group in held.values():
                for event in group:
                    await self.state.release(
                        event.id, available_at=event.enqueued_at, attempts=event.attempts
                    )
            held.clear()


def released_id(held_request_id: str) -> str:
    """The request id of a held event once released (a request id is stored once in the whole
    queue, so it cannot be the held one's; derived, so a release repeated after a crash is
    stored once)."""
    return str(uuid.uuid5(_NS, held_request_id))


def _key(event: QueuedEvent) -> str:
    return str(orjson.loads(event.payload)["key"])
