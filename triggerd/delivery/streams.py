"""Read-ahead and checkpoint bookkeeping of one ordered stream: a PostgreSQL replication slot,
a Kinesis or DynamoDB Streams shard. Shared by the stream sources so that they checkpoint the
same way.

A source appends what it reads, in stream order: records, and checkpoint markers (a position
the stream may be checkpointed at that is not a record, such as the end of a transaction or
"read up to here"). Records move `ready` (read, not handed out) -> `live` (handed to the
pipeline) -> settled (acked: delivered, filtered out, or written to the on-failure
destination). A record given back (nacked) returns to `ready`, in stream order, and is handed
out again before anything after it, but not before `redeliver_delay_s` has passed (the pipeline
gives records back when it stops, or to make room while a key retries: handing them straight
back would spin).

`checkpoint()` returns the newest entry of the settled prefix: the stream may be checkpointed
there, however out of order the acknowledgements arrived (ordering keys run in parallel), and
never past a record that was not settled. A barrier record (a TRUNCATE, a schema change) is
handed out only when nothing before it is in flight, and nothing after it is handed out until it
is settled.

Memory is bounded by the source: it reads only while `has_room()`, which counts every entry
not yet checkpointed (ready, live, and settled ones behind an unsettled one).
"""

from __future__ import annotations

import heapq
import zlib
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from triggerd.types import Clock, Record

__all__ = ["RecordRate", "ShardLog", "lane_key"]


def lane_key(base: str, item_key: bytes, parallelization_factor: int) -> str:
    """The ordering key of a record of stream `base` (a shard, a table) with
    `parallelization_factor` batches in flight per stream: records with the same `item_key`
    (a partition key, an item's primary key) always get the same lane, so they stay in order.
    """
    if parallelization_factor <= 1:
        return base
    return f"{base}#{zlib.crc32(item_key) % parallelization_factor}"


@dataclass(eq=False)
class RecordRate:
    """Records processed per second over the last `window_s` (or since `started`, when
    that is more recent), counted per second of the monotonic clock."""

    started: float
    window_s: float = 60.0
    _counts: deque[tuple[int, int]] = field(default_factory=deque)

    def add(self, count: int, now: float) -> None:
        second = int(now)
        counts = self._counts
        if counts and counts[-1][0] == second:
            counts[-1] = (second, counts[-1][1] + count)
        else:
            counts.append((second, count))
        self._prune(now)

    def per_second(self, now: float) -> float:
        self._prune(now)
        span = min(self.window_s, now - self.started)
        total = sum(n for _, n in self._counts)
        return total / span if span > 0 else 0.0

    def _prune(self, now: float) -> None:
        counts = self._counts
        while counts and counts[0][0] <= now - self.window_s:
            counts.popleft()


@dataclass(eq=False, slots=True)
class _Entry:
    seq: int
    record: Record | None
    marker: object = None
    settled: bool = False
    barrier: bool = False
    not_before: float = 0.0
    live: bool = False

    def __lt__(self, other: _Entry) -> bool:
        return self.seq < other.seq


@dataclass(eq=False)
class ShardLog:
    clock: Clock
    #: Entries (records and markers) held before `has_room()` turns false.
    max_entries: int = 10_000
    #: Bytes of records held before `has_room()` turns false.
    max_bytes: int = 64 * 1024 * 1024
    #: A record given back is handed out again no sooner than this.
    redeliver_delay_s: float = 1.0
    _next_seq: int = 0
    _pending: deque[_Entry] = field(default_factory=deque)
    _ready: deque[_Entry] = field(default_factory=deque)
    _entries: dict[int, _Entry] = field(default_factory=dict)
    _live_barriers: int = 0
    _live: int = 0
    _bytes: int = 0

    # ---- reading ----

    def append(self, record: Record, *, barrier: bool = False) -> None:
        entry = _Entry(self._next_seq, record, barrier=barrier)
        self._next_seq += 1
        self._pending.append(entry)
        self._ready.append(entry)
        self._entries[id(record)] = entry
        self._bytes += record.size

    def extend(self, records: list[Record]) -> None:
        """`append` of each record (none a barrier), with one pass over them: a page of
        rows read at once."""
        seq = self._next_seq
        # map, not a comprehension: no frame and no index tuple per record
        entries = list(map(_Entry, range(seq, seq + len(records)), records))
        self._next_seq = seq + len(entries)
        self._pending.extend(entries)
        self._ready.extend(entries)
        self._entries.update(zip(map(id, records), entries, strict=True))
        self._bytes += sum([rec.size for rec in records])

    def mark(self, marker: object) -> None:
        """A checkpoint position that is not a record (settled as soon as it is appended)."""
        entry = _Entry(self._next_seq, None, marker=marker, settled=True)
        self._next_seq += 1
        self._pending.append(entry)

    def has_room(self) -> bool:
        return len(self._pending) < self.max_entries and self._bytes < self.max_bytes

    # ---- handing out ----

    def take(self, limit: int) -> list[Record]:
        """Up to `limit` ready records, in stream order."""
        out: list[Record] = []
        if self._live_barriers:
            return out
        now = self.clock.monotonic()
        ready = self._ready
        while ready and len(out) < limit:
            entry = ready[0]
            if entry.not_before > now:
                break
            if entry.barrier and (out or self._live):
                break
            ready.popleft()
            entry.live = True
            self._live += 1
            assert entry.record is not None
            out.append(entry.record)
            if entry.barrier:
                self._live_barriers += 1
                break
        return out

    def waiting_until(self) -> float | None:
        """When the first ready record may be handed out (monotonic), if it is held back by
        the redelivery delay; None when nothing ready is held back that way."""
        if self._ready and self._ready[0].not_before > self.clock.monotonic():
            return self._ready[0].not_before
        return None

    @property
    def ready(self) -> int:
        return len(self._ready)

    @property
    def live(self) -> int:
        return self._live

    @property
    def pending(self) -> int:
        """Entries not checkpointed yet."""
        return len(self._pending)

    # ---- settling ----

    def _leave_live(self, entry: _Entry) -> None:
        entry.live = False
        self._live -= 1
        if entry.barrier:
            self._live_barriers -= 1

    def settle(self, records: Iterable[Record]) -> None:
        entries = self._entries
        settled = freed = barriers = 0
        for rec in records:
            entry = entries.pop(id(rec), None)
            if entry is None or not entry.live:
                if entry is not None:  # settled while not handed out: keep it ready
                    entries[id(rec)] = entry
                continue
            # `_leave_live`, counted once for all of them
            entry.live = False
            entry.settled = True
            settled += 1
            freed += rec.size
            if entry.barrier:
                barriers += 1
        self._live -= settled
        self._live_barriers -= barriers
        self._bytes -= freed

    def give_back(self, records: Iterable[Record]) -> None:
        back: list[_Entry] = []
        until = self.clock.monotonic() + self.redeliver_delay_s
        for rec in records:
            entry = self._entries.get(id(rec))
            if entry is None or not entry.live:
                continue
            self._leave_live(entry)
            entry.not_before = until
            back.append(entry)
        if back:
            back.sort()
            self._ready = deque(heapq.merge(back, self._ready))

    # ---- checkpoints ----

    def checkpoint(self) -> Record | object | None:
        """The newest entry (record, or marker value) of the settled prefix that was not
        returned before; None when the prefix did not move."""
        newest: _Entry | None = None
        pending = self._pending
        while pending and pending[0].settled:
            newest = pending.popleft()
        if newest is None:
            return None
        return newest.record if newest.record is not None else newest.marker

    def oldest_unsettled(self) -> float | None:
        """`created_at` of the first record not settled yet (None when all are)."""
        for entry in self._pending:
            if not entry.settled and entry.record is not None:
                return entry.record.created_at
        return None
