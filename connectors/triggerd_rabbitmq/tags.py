"""Delivery tags of one channel still unsettled at the broker, so that acks can be coalesced:
one `basic.ack(multiple=True)` settles the oldest run of tags when every outstanding tag up to
it is being acked, which saves the broker a frame per message. Tags that other batches still
hold stop the run; those acks go one by one.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

__all__ = ["Outstanding"]


class Outstanding:
    def __init__(self) -> None:
        #: Tags in delivery order (the broker hands them out increasing).
        self._order: deque[int] = deque()
        #: Tags settled out of order, still in `_order`.
        self._settled: set[int] = set()

    def __len__(self) -> int:
        return len(self._order) - len(self._settled)

    def delivered(self, tag: int) -> None:
        self._order.append(tag)

    def plan_ack(self, tags: Iterable[int]) -> tuple[int | None, list[int]]:
        """Mark `tags` settled; returns (the tag to ack with multiple=True or None, the tags
        to ack one by one)."""
        want = set(tags)
        upto: int | None = None
        order, settled = self._order, self._settled
        while order:
            head = order[0]
            if head in want:
                want.discard(head)
                upto = head
            elif head in settled:
                settled.discard(head)
            else:
                break
            order.popleft()
        settled.update(want)
        return upto, sorted(want)

    def settle(self, tags: Iterable[int]) -> None:
        """Mark `tags` settled one by one (nack, reject)."""
        self._settled.update(tags)
        order, settled = self._order, self._settled
        while order and order[0] in settled:
            settled.discard(order.popleft())
