"""The state store interface: checkpoints, the durable async queue, and the DLQ index.

The embedded SQLite store implements it today; a PostgreSQL store will implement the same
interface. Every method that writes returns only once the write is durable.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from triggerd.state import MEMORY_PATH as MEMORY_PATH  # re-exported: its old home


@dataclass(slots=True, frozen=True)
class NewEvent:
    """An event to put on the async queue."""

    trigger: str
    function: str
    payload: bytes
    request_id: str
    #: Epoch seconds when the event was accepted (maximum event age counts from here).
    enqueued_at: float
    #: Earliest epoch seconds it may be claimed (normally = enqueued_at).
    available_at: float
    #: The X-Ray trace header the event came with, kept for every retry.
    trace_id: str | None = None


@dataclass(slots=True, frozen=True)
class QueuedEvent:
    """An event claimed from the async queue."""

    id: int
    trigger: str
    function: str
    payload: bytes
    request_id: str
    enqueued_at: float
    #: Function-error attempts already made (throttles are not counted).
    attempts: int
    trace_id: str | None = None
    #: The last failed attempt's outcome, kept by `release` (`triggerd.delivery.outcomes`):
    #: the on-failure record sent after a restart carries the function's error.
    last_result: bytes | None = None


@dataclass(slots=True, frozen=True)
class DlqEntry:
    """An index entry for a record written to an on-failure destination."""

    id: int
    trigger: str
    function: str
    destination: str
    condition: str
    created_at: float
    #: The on-failure record as written (JSON bytes), for `dlq show` and `dlq replay`.
    record: bytes


class StateStore(Protocol):
    async def open(self) -> None:
        """Create or migrate the schema. Idempotent."""
        ...

    async def close(self) -> None: ...

    # ---- checkpoints: (scope, key) -> value; scope is usually the trigger name ----

    async def get_checkpoint(self, scope: str, key: str) -> str | None: ...

    async def set_checkpoints(self, scope: str, items: Mapping[str, str | None]) -> None:
        """Write several keys atomically; a value of None deletes the key."""
        ...

    async def list_checkpoints(self, scope: str, prefix: str = "") -> dict[str, str]:
        """All keys of a scope that start with `prefix`."""
        ...

    # ---- the durable async queue ----

    async def enqueue(
        self,
        events: Sequence[NewEvent],
        checkpoints: Mapping[str, Mapping[str, str | None]] | None = None,
    ) -> None:
        """Persist events, and the checkpoint entries given per scope (None deletes a key),
        in one transaction; durable when this returns."""
        ...

    async def enqueue_unless_checkpoint(
        self, events: Sequence[NewEvent], scope: str, key: str, value: str
    ) -> bool:
        """In one write transaction: if the checkpoint (scope, key) exists, change nothing
        and return False; else persist the events and set it to `value`, and return True.
        A check-and-mark that two writers cannot both pass (`dlq replay`'s markers)."""
        ...

    async def claim(
        self, trigger: str, limit: int, lease_s: float, now: float
    ) -> list[QueuedEvent]:
        """Claim up to `limit` events of a trigger whose available_at <= now and whose lease is
        free or expired, oldest first; the claim lasts `lease_s` seconds."""
        ...

    async def extend_lease(self, event_ids: Sequence[int], lease_s: float, now: float) -> None: ...

    async def release(
        self,
        event_id: int,
        *,
        available_at: float,
        attempts: int,
        last_result: bytes | None = None,
    ) -> None:
        """Give a claimed event back, claimable again from `available_at`; `last_result`, when
        given, replaces the outcome kept with the event (None keeps the one it has)."""
        ...

    async def complete(self, event_id: int) -> None:
        """Remove a delivered (or dead-lettered) event."""
        ...

    async def queue_depth(self, trigger: str | None = None) -> int: ...

    async def next_due(self, trigger: str) -> float | None:
        """When the trigger's next event becomes claimable (its available_at, or its lease's
        end if it is leased): the time an idle queue waits for. None with an empty queue."""
        ...

    async def queued(self, request_ids: Sequence[str]) -> set[str]:
        """Which of these request ids are still on the queue (not yet completed)."""
        ...

    async def recover_leases(self) -> int:
        """Make every claimed event claimable again (start-up of the single owner).
        Returns how many were recovered."""
        ...

    # ---- the DLQ index ----

    async def dlq_add(
        self,
        *,
        trigger: str,
        function: str,
        destination: str,
        condition: str,
        created_at: float,
        record: bytes,
    ) -> int: ...

    async def dlq_list(self, trigger: str | None = None, limit: int = 100) -> list[DlqEntry]:
        """Newest first."""
        ...

    async def dlq_get(self, entry_id: int) -> DlqEntry | None: ...

    async def dlq_delete(self, entry_id: int) -> None: ...

    # ---- paused triggers (`triggerd pause`), kept across restarts ----

    async def set_paused(self, trigger: str, paused: bool) -> None:
        """Record that a trigger is paused (True) or not (False). Idempotent."""
        ...

    async def paused_triggers(self) -> set[str]:
        """The names of the triggers recorded as paused."""
        ...

    # ---- SNS topics and subscriptions created through the API (triggerd.fanout.sns) ----

    async def sns_put(self, arn: str, kind: str, doc: bytes) -> None:
        """Store (or replace) a topic's or subscription's document under its ARN."""
        ...

    async def sns_delete(self, arn: str) -> None:
        """Forget a topic or subscription. Idempotent."""
        ...

    async def sns_list(self) -> list[tuple[str, str, bytes]]:
        """Every stored (arn, kind, doc), oldest first."""
        ...


@dataclass(slots=True, frozen=True)
class ArchivedEvent:
    """An event of an event bus's archive: the EventBridge event as it was put on the bus."""

    event_id: str
    #: Epoch seconds when the bus accepted it (replays select by this).
    ingested_at: float
    event: bytes
    #: The store's row id (0 before it is stored); replays page by it.
    id: int = 0


@runtime_checkable
class EventArchive(Protocol):
    """A store that keeps event bus archives (an optional capability: a bus with an
    `archive` needs it)."""

    async def archive_events(self, bus: str, events: Sequence[ArchivedEvent]) -> None:
        """Persist events in the bus's archive; durable when this returns."""
        ...

    async def archived_events(
        self, bus: str, *, since: float, until: float, after_id: int = 0, limit: int = 500
    ) -> list[ArchivedEvent]:
        """The bus's events ingested in [since, until) with an id above `after_id`, oldest
        first."""
        ...

    async def prune_archive(self, bus: str, before: float) -> int:
        """Delete the bus's events ingested before `before`; how many went."""
        ...


@runtime_checkable
class CompletesLater(Protocol):
    """A store that takes a completion without a coroutine to await it: the async path's
    invocation slot goes on with the next event at once, and the event is settled when its
    commit is done (no task per event for the wait)."""

    def complete_later(self, event_id: int) -> asyncio.Future[None]:
        """Queue `complete(event_id)` for the next group commit; the future is answered (or
        fails) once that commit is done."""
        ...


@runtime_checkable
class ReportsWriteHealth(Protocol):
    """A store that tells whether its writes currently fail (a full disk, a read-only file)."""

    @property
    def write_error(self) -> str | None:
        """Why the last write failed; None once a write succeeds again."""
        ...


@runtime_checkable
class NotifiesEnqueues(Protocol):
    """A store shared by several daemons that tells when events were enqueued (by any of
    them), so that an idle queue wakes at once. Only a hint: claims remain the truth, and
    idle queues still look again at least once a minute."""

    def on_enqueued(self, callback: Callable[[str], None]) -> None:
        """Call `callback(trigger)` (on the event loop) for each trigger enqueued to."""
        ...
