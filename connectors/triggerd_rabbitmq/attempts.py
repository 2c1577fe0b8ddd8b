"""How many times a message's invocation already failed.

Quorum queues count returns themselves (`x-delivery-count`). Classic queues only say
`redelivered`, so the source also counts its own nacks in a bounded in-memory map keyed by
message id (or, without one, a digest of the message). The map forgets on restart and drops
its oldest entries past `capacity`: then a message starts counting again from the broker's
figure (0 for classic queues), so a limit can be reached later than configured, never earlier.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any

__all__ = ["RedeliveryCounter", "counter_key", "delivery_count"]


def counter_key(message_id: str | None, body: bytes, routing_key: str | None) -> str:
    if message_id:
        return "id:" + message_id
    digest = hashlib.blake2b(body, digest_size=16)
    digest.update(b"\0" + (routing_key or "").encode())
    return "h:" + digest.hexdigest()


def delivery_count(headers: Any) -> int:
    """The broker's `x-delivery-count` header (quorum queues), 0 when absent or invalid."""
    if not isinstance(headers, dict):
        return 0
    value = headers.get("x-delivery-count")
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return 0
    return value


class RedeliveryCounter:
    """Failed attempts per message key, least recently touched dropped first."""

    def __init__(self, capacity: int = 100_000) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self._counts: OrderedDict[str, int] = OrderedDict()

    def __len__(self) -> int:
        return len(self._counts)

    def get(self, key: str) -> int:
        return self._counts.get(key, 0)

    def failed(self, key: str, at_least: int = 0) -> int:
        """Count one more failed attempt (and at least `at_least`); returns the new count."""
        count = max(self._counts.pop(key, 0) + 1, at_least)
        self._counts[key] = count
        while len(self._counts) > self.capacity:
            self._counts.popitem(last=False)
        return count

    def forget(self, key: str) -> None:
        self._counts.pop(key, None)

    def attempts(self, key: str, redelivered: bool, broker_count: int) -> int:
        """Attempts already made on a message just received: a first delivery starts at 0 (and
        clears a stale entry, say a message id reused by the publisher)."""
        if not redelivered and broker_count == 0:
            self.forget(key)
            return 0
        return max(self.get(key), broker_count)
