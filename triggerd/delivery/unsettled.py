"""The records of one batch that the pipeline has not settled yet (acked or nacked): what it
gives back if the batch is cancelled or crashes."""

from __future__ import annotations

from collections.abc import Sequence

from triggerd.types import Record

__all__ = ["Unsettled"]


class Unsettled:
    """A batch's unsettled records, in batch order. Until a settlement of part of the batch,
    this is the batch's own list (a batch is mostly acked whole, in one call: then nothing is
    built per record); from the first partial one on, a dict by `id()`, built once."""

    __slots__ = ("_all", "_batch", "_left")

    def __init__(self, batch: list[Record]) -> None:
        self._all = batch
        self._batch: list[Record] | None = batch
        self._left: dict[int, Record] = {}

    def __len__(self) -> int:
        return len(self._batch) if self._batch is not None else len(self._left)

    def records(self) -> list[Record]:
        """The unsettled records, in batch order (a new list)."""
        if self._batch is not None:
            return list(self._batch)
        return list(self._left.values())

    def clear(self) -> None:
        """Every record is settled."""
        self._batch = None
        self._left = {}

    def discard(self, records: Sequence[Record]) -> None:
        """`records` are settled (any of them not in the batch, or settled already, is
        ignored)."""
        if self._batch is not None:
            self._left = {id(r): r for r in self._batch}
            self._batch = None
        left = self._left
        for rec in records:
            left.pop(id(rec), None)

    def restore(self, records: Sequence[Record]) -> None:
        """`records` were not settled after all (their ack raised): unsettled again, in
        batch order (a record not in the batch comes after the batch's)."""
        left = self._left if self._batch is None else {id(r): r for r in self._batch}
        self._batch = None
        back = {id(r): r for r in records}
        order = {id(r): r for r in self._all if id(r) in left or id(r) in back}
        order.update(back)
        self._left = order
