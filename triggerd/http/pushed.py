"""The records that HTTP push sources (a webhook in event mode, SNS's HTTP deliveries) hand to
the pipeline: a request's handler pushes its record and awaits the record's future, which the
pipeline settles (True once the event is stored, False when it was not); the handler answers
its caller from that. A handler that stops waiting (its caller got 503) withdraws the record
by finishing the future: `take` skips it unless the pipeline already has it."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence

from triggerd.types import BaseSource, JSONDict, Record


class Pending:
    """A pushed request waiting for the pipeline (the handle of its Record)."""

    __slots__ = ("future", "taken")

    def __init__(self, future: asyncio.Future[bool]) -> None:
        self.future = future
        #: Handed to the pipeline by `take`: it can no longer be withdrawn.
        self.taken = False


class PushedRecords:
    """The queue between the handlers (`push`) and the source's `receive` (`take`)."""

    def __init__(self) -> None:
        self._records: deque[Record] = deque()
        self._arrived = asyncio.Event()

    def __len__(self) -> int:
        return len(self._records)

    def push(self, record: Record) -> None:
        """Queue `record`, whose handle is its `Pending`."""
        self._records.append(record)
        self._arrived.set()

    async def take(self, max_records: int, timeout_s: float) -> list[Record]:
        """Up to `max_records` records not withdrawn, marked taken; waits up to `timeout_s`
        for the first (then returns none)."""
        if not self._records:
            self._arrived.clear()
            try:
                async with asyncio.timeout(timeout_s):
                    await self._arrived.wait()
            except TimeoutError:
                return []
        out: list[Record] = []
        while self._records and len(out) < max_records:
            rec = self._records.popleft()
            pending: Pending = rec.handle
            if pending.future.done():  # withdrawn: its caller already has its answer
                continue
            pending.taken = True
            out.append(rec)
        return out

    @staticmethod
    def settle(records: Sequence[Record], ok: bool) -> None:
        """Answer each record's handler: stored (`ok`) or not; a withdrawn one is left alone."""
        for rec in records:
            pending = rec.handle
            if isinstance(pending, Pending) and not pending.future.done():
                pending.future.set_result(ok)

    def refuse_all(self) -> None:
        """Settle every record not yet taken as not stored, and forget them (on stop)."""
        self.settle(list(self._records), False)
        self._records.clear()


class PushedSource(BaseSource):
    """The pipeline side of a source its HTTP handlers feed through `self._pending`: one
    pushed request's event per invocation, acked once stored."""

    def __init__(self) -> None:
        self._pending = PushedRecords()

    async def receive(self, max_records: int, timeout_s: float) -> list[Record]:
        return await self._pending.take(max_records, timeout_s)

    async def ack(self, records: Sequence[Record]) -> None:
        self._pending.settle(records, True)

    async def nack(self, records: Sequence[Record]) -> None:
        self._pending.settle(records, False)

    def envelope(self, records: Sequence[Record]) -> JSONDict:
        return records[0].payload
