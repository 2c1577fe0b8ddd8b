"""Records a push source has ready to hand out: `receive` waits for the first one."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable

from triggerd.types import Record


class ReadyRecords:
    def __init__(self) -> None:
        self._items: deque[Record] = deque()
        self._event = asyncio.Event()

    def __len__(self) -> int:
        return len(self._items)

    def push(self, record: Record) -> None:
        self._items.append(record)
        self._event.set()

    def extend(self, records: Iterable[Record]) -> None:
        self._items.extend(records)
        if self._items:
            self._event.set()

    def push_front(self, record: Record) -> None:
        """Put a record back at the head (a nacked record is handed out first)."""
        self._items.appendleft(record)
        self._event.set()

    def wake(self) -> None:
        """Release a waiting `take` (e.g. when the source stops)."""
        self._event.set()

    async def take(self, max_records: int, timeout_s: float) -> list[Record]:
        """Up to `max_records` records, waiting at most `timeout_s` for the first."""
        if max_records <= 0:
            return []
        if not self._items:
            self._event.clear()
            try:
                async with asyncio.timeout(max(0.0, timeout_s)):
                    await self._event.wait()
            except TimeoutError:
                return []
        out: list[Record] = []
        while self._items and len(out) < max_records:
            out.append(self._items.popleft())
        if not self._items:
            self._event.clear()
        return out
