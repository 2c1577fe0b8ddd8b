"""The batcher: records wait here until a batch is full, its window has elapsed, or the next
record would push the payload over the 6 MB cap, whichever comes first.

Ordering: a record whose key has a batch in flight (a "busy" key) is not eligible, and neither
is any later record with that key, so one key's records are invoked in order, one batch at a
time, while other keys proceed.

With `per_key`, a batch holds the records of one key only (Kafka partitions, stream shards):
each key fills and times its own batch, and the first key whose batch is due goes first.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping
from itertools import repeat
from operator import attrgetter

from triggerd.types import MAX_SYNC_PAYLOAD, Record

#: Bytes for the envelope around the records ({"Records":[...]} and the like).
ENVELOPE_OVERHEAD = 1024


_KEY = attrgetter("key")
_SIZE = attrgetter("size")


def _keys_of(records: list[Record]) -> Mapping[str | None, int]:
    """How many of `records` have each ordering key: a set first, as a stream's records
    mostly share one key (then no count per record)."""
    keys = set(map(_KEY, records))
    if len(keys) == 1:
        return {keys.pop(): len(records)}
    return Counter(map(_KEY, records))


class BatchBuffer:
    def __init__(
        self,
        *,
        batch_size: int,
        window_s: float,
        capacity: int,
        max_bytes: int = MAX_SYNC_PAYLOAD,
        max_buffered_bytes: int | None = None,
        per_key: bool = False,
    ) -> None:
        self.per_key = per_key
        self.batch_size = batch_size
        self.window_s = window_s
        self.capacity = max(capacity, batch_size)
        self.max_bytes = max_bytes
        #: Bytes the buffer may hold (records beyond it wait upstream).
        self.max_buffered_bytes = max_buffered_bytes or 2 * max_bytes
        #: The waiting records in order, and when each arrived (the same index): two lists,
        #: so that adding and taking a batch are list operations, not a loop per record.
        self._items: list[Record] = []
        self._arrived: list[float] = []
        self._bytes = 0
        #: Waiting records per ordering key: when every key waiting is busy (a stream's one
        #: key while its batch is in flight, most of the time), nothing is eligible, which
        #: is then known without a pass over every waiting record.
        self._keys: Counter[str | None] = Counter()

    def __len__(self) -> int:
        return len(self._items)

    def room(self) -> int:
        if self._bytes >= self.max_buffered_bytes:
            return 0
        return max(0, self.capacity - len(self._items))

    def add(self, records: list[Record], now: float) -> None:
        self._items.extend(records)
        self._arrived.extend(repeat(now, len(records)))
        self._bytes += sum(map(_SIZE, records))
        self._keys.update(_keys_of(records))

    def _all_busy(self, busy: set[str]) -> bool:
        """Every waiting record's key is busy (none is eligible)."""
        return bool(busy) and all(key is not None and key in busy for key in self._keys)

    def _remove(self, picked: Collection[int]) -> list[Record]:
        items = self._items
        count = len(picked)
        if count == len(items) or (count and max(picked) == count - 1):
            # The oldest records (or all of them): a slice, not a pass over every index.
            out = items[:count]
            del items[:count]
            del self._arrived[:count]
        else:
            out = []
            keep: list[Record] = []
            arrived: list[float] = []
            for i, (rec, at) in enumerate(zip(items, self._arrived, strict=True)):
                if i in picked:
                    out.append(rec)
                else:
                    keep.append(rec)
                    arrived.append(at)
            self._items, self._arrived = keep, arrived
        self._bytes -= sum(map(_SIZE, out))
        keys = self._keys
        keys.subtract(_keys_of(out))
        for key in [k for k, n in keys.items() if n <= 0]:
            del keys[key]
        return out

    def next_batch_possible(self, busy: set[str]) -> bool:
        """Whether any waiting record is eligible now (its key is not busy)."""
        return self._first_eligible(busy) is not None

    def _first_eligible(self, busy: set[str]) -> int | None:
        """The index of the oldest waiting record whose key is not busy."""
        if self._all_busy(busy):
            return None
        for i, rec in enumerate(self._items):
            key = rec.key
            if key is None or key not in busy:
                return i
        return None

    def _select(self, busy: set[str]) -> tuple[Collection[int], bool]:
        """Indexes of the next batch in order, and whether it is full (size or bytes)."""
        items = self._items
        if ENVELOPE_OVERHEAD + self._bytes + len(items) <= self.max_bytes and not any(
            key is not None and key in busy for key in self._keys
        ):
            # No key busy and everything waiting fits in one payload (the usual case): the
            # oldest records, without a look at each.
            count = min(len(items), self.batch_size)
            return range(count), count >= self.batch_size
        chosen: list[int] = []
        size = ENVELOPE_OVERHEAD
        skipped_keys: set[str] = set(busy)
        for i, rec in enumerate(items):
            if rec.key is not None and rec.key in skipped_keys:
                continue
            if chosen and size + rec.size + 1 > self.max_bytes:
                return chosen, True
            chosen.append(i)
            size += rec.size + 1
            if len(chosen) >= self.batch_size:
                return chosen, True
            if size > self.max_bytes:  # a single record over the cap goes alone
                return chosen, True
        return chosen, False

    def _select_per_key(self, busy: set[str]) -> list[tuple[Collection[int], bool]]:
        """Per key (in order of each key's oldest record): its next batch and whether full."""
        groups: dict[str | None, tuple[list[int], list[int]]] = {}  # key -> (indexes, [bytes])
        done: set[str | None] = set()
        for i, rec in enumerate(self._items):
            key = rec.key
            if key in done or (key is not None and key in busy):
                continue
            group = groups.get(key)
            if group is None:
                group = groups[key] = ([], [ENVELOPE_OVERHEAD])
            chosen, size = group
            rec_size = rec.size + 1
            if chosen and size[0] + rec_size > self.max_bytes:
                done.add(key)
            else:
                chosen.append(i)
                size[0] += rec_size
                if len(chosen) >= self.batch_size or size[0] > self.max_bytes:
                    done.add(key)
            if key in done and key == next(iter(groups)):
                break  # the oldest key's batch is full: it goes first, look no further
        return [(chosen, key in done) for key, (chosen, _) in groups.items()]

    def next_batch(self, now: float, busy: set[str], *, flush: bool = False) -> list[Record] | None:
        """The next batch if one is due (full, window elapsed, or `flush`), else None."""
        if self._all_busy(busy):
            return None
        candidates: list[tuple[Collection[int], bool]]
        candidates = self._select_per_key(busy) if self.per_key else [self._select(busy)]
        for chosen, full in candidates:
            if not chosen:
                continue
            first = self._arrived[next(iter(chosen))]
            if full or flush or now - first >= self.window_s:
                return self._remove(chosen if isinstance(chosen, range) else set(chosen))
        return None

    def deadline(self, busy: set[str]) -> float | None:
        """When the window of the oldest eligible record expires (None if nothing eligible)."""
        first = self._first_eligible(busy)
        if first is None:
            return None
        return self._arrived[first] + self.window_s

    def take_key(self, key: str) -> list[Record]:
        """Remove and return every waiting record with `key` (to give them back in order)."""
        return self._remove({i for i, rec in enumerate(self._items) if rec.key == key})

    def take_all(self) -> list[Record]:
        return self._remove(range(len(self._items)))
