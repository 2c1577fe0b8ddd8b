"""Per-partition bookkeeping of the kafka source: which records were fetched, handed to the
pipeline, settled, and so which offset may be committed.

A partition's records move `ready` (fetched, in offset order) -> `live` (handed to the
pipeline, unsettled) -> settled (acked: succeeded, filtered out, or written to the on-failure
destination). A nacked record goes back to `ready`, in offset order, and is handed out again:
nothing is fetched twice and no seek is needed. The commit point is the lowest offset not
settled yet: the lowest live or ready record, else the offset after the last fetched one. So
a commit never passes a record that was not processed, whatever order acks arrive in.

A partition being revoked (`revoking`) hands nothing out any more: a record nacked into it
does not go back to `ready` (another member will own the partition), it only holds the commit
point at its offset.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from triggerd.types import Record

__all__ = ["Handle", "PartitionState"]


@dataclass(eq=False, slots=True)
class Handle:
    """A record's handle: its partition's state (of one assignment) and offset."""

    state: PartitionState
    offset: int


class PartitionState:
    """One assigned partition. A new object per assignment: records handed out under an
    earlier assignment settle against their own (inactive) state and change nothing."""

    def __init__(self, key: str, topic: str, partition: int, committed: int | None = None) -> None:
        self.key = key
        self.topic = topic
        self.partition = partition
        #: False once the partition was revoked (or the source stopped).
        self.active = True
        self.ready: deque[Record] = deque()
        self.ready_bytes = 0
        #: offset -> created_at of records handed out and not settled.
        self._live: dict[int, float] = {}
        self._heap: list[int] = []
        #: At least the largest offset in `_heap` (appending above it keeps the heap order).
        self._heap_top = -1
        #: The offset after the last record fetched (None before the first fetch).
        self.fetched_to: int | None = None
        #: The last offset committed to the group (None before the first commit).
        self.committed: int | None = committed
        self.paused = False
        #: True while the partition is being positioned after its assignment (not fetched).
        self.positioning = False
        #: True once its revocation started: nothing is handed out or accepted any more.
        self.revoking = False

    # ---- moving records ----

    def add_fetched(self, records: Iterable[Record]) -> int:
        """Append fetched records (in offset order); duplicates of records already fetched
        are dropped. Returns how many were added."""
        if isinstance(records, list) and records:
            first = records[0].handle.offset
            if self.fetched_to is None or first >= self.fetched_to:
                # The usual case, a fetch that follows the last one: appended as a whole.
                self.ready.extend(records)
                self.ready_bytes += sum(rec.size for rec in records)
                self.fetched_to = records[-1].handle.offset + 1
                return len(records)
        added = 0
        for rec in records:
            offset = rec.handle.offset
            if self.fetched_to is not None and offset < self.fetched_to:
                continue
            self.ready.append(rec)
            self.ready_bytes += rec.size
            self.fetched_to = offset + 1
            added += 1
        return added

    def take(self, limit: int) -> list[Record]:
        count = min(limit, len(self.ready))
        if count <= 0:
            return []
        ready, live, heap = self.ready, self._live, self._heap
        out = [ready.popleft() for _ in range(count)]
        self.ready_bytes -= sum(rec.size for rec in out)
        offsets = [rec.handle.offset for rec in out]
        for rec, offset in zip(out, offsets, strict=True):
            live[offset] = rec.created_at
        if not heap or offsets[0] >= self._heap_top:
            # Ascending offsets above everything in the heap keep it a heap as they are
            # appended (the usual case: records handed out in order).
            heap.extend(offsets)
        else:
            for offset in offsets:
                heapq.heappush(heap, offset)
        self._heap_top = max(self._heap_top, offsets[-1])
        return out

    def ack(self, offsets: Iterable[int]) -> None:
        for offset in offsets:
            self._live.pop(offset, None)

    def nack(self, records: Iterable[Record]) -> None:
        """Give records back: they are handed out again, before any later record."""
        back = [r for r in records if self._live.pop(r.handle.offset, None) is not None]
        if not back:
            return
        if self.revoking:
            self._hold_commit_point(min(r.handle.offset for r in back))
            return
        self.ready_bytes += sum(r.size for r in back)
        merged = sorted([*back, *self.ready], key=lambda r: r.handle.offset)
        self.ready = deque(merged)

    def clear_ready(self) -> int:
        """Drop the records not handed out (the partition is being given up); the commit
        point stays at the first of them, so they are fetched again by the next owner."""
        dropped = len(self.ready)
        if self.ready:
            self._hold_commit_point(self.ready[0].handle.offset)
        self.ready.clear()
        self.ready_bytes = 0
        return dropped

    def _hold_commit_point(self, offset: int) -> None:
        """Records from `offset` on were given up: the commit point never passes it."""
        if self.fetched_to is None or offset < self.fetched_to:
            self.fetched_to = offset

    # ---- positions ----

    def _first_live(self) -> int | None:
        heap = self._heap
        while heap and heap[0] not in self._live:
            heapq.heappop(heap)
        return heap[0] if heap else None

    def commit_point(self) -> int | None:
        """The offset to commit: the lowest record not settled, else the next to fetch (which
        is also the first record given up, after a revocation started)."""
        candidates = [o for o in (self._first_live(), self.fetched_to) if o is not None]
        if self.ready:
            candidates.append(self.ready[0].handle.offset)
        return min(candidates) if candidates else None

    def needs_commit(self) -> bool:
        point = self.commit_point()
        return point is not None and point != self.committed

    def oldest_unprocessed(self) -> float | None:
        """created_at of the record at the commit point (None when caught up)."""
        first = self._first_live()
        ready = self.ready[0] if self.ready else None
        if first is not None and (ready is None or first < ready.handle.offset):
            return self._live[first]
        return ready.created_at if ready is not None else None

    @property
    def unsettled(self) -> int:
        return len(self._live)
