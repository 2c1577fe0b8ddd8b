"""Where a newly assigned partition starts.

A partition with a committed offset in the group starts there (aiokafka does it), unless the
partition no longer holds that offset: records deleted by retention before they were
delivered. It then starts at the oldest record the partition still has (`expired_commits`
finds them and says how many were lost). A committed offset found out of range while
fetching (the consumer fell behind retention while it ran, a topic re-created) is reset the
same way: aiokafka's `auto_offset_reset` is always "earliest", whatever the starting
position, so no record the partition still holds is skipped.

Without a committed offset the starting position applies: TRIM_HORIZON is the reset
("earliest"), LATEST seeks to the end, AT_TIMESTAMP looks up the first offset at or after
`starting_position_timestamp` (ListOffsets by time) and seeks there, or to the end of the
partition when no record is that recent.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, Literal

from .config import KafkaSourceConfig

__all__ = ["OFFSET_RESET", "expired_commits", "position_new_partitions"]

#: aiokafka's `auto_offset_reset`, for partitions the starting position does not place.
OFFSET_RESET: Literal["earliest"] = "earliest"


async def position_new_partitions(
    consumer: Any, partitions: Collection[Any], cfg: KafkaSourceConfig
) -> dict[Any, int | None]:
    """The committed offset of each partition (None when the group has none); partitions
    without one are positioned by the starting position."""
    committed: dict[Any, int | None] = {}
    for tp in partitions:
        committed[tp] = await consumer.committed(tp)
    missing = [tp for tp, offset in committed.items() if offset is None]
    if not missing or cfg.starting_position == "TRIM_HORIZON":
        return committed
    if cfg.starting_position == "LATEST" or cfg.starting_position_timestamp is None:
        await _seek_to_end(consumer, missing)
        return committed
    at_ms = int(cfg.starting_position_timestamp * 1000)
    found = await consumer.offsets_for_times({tp: at_ms for tp in missing})
    to_end = []
    for tp in missing:
        hit = found.get(tp)
        if hit is None:
            to_end.append(tp)
        else:
            consumer.seek(tp, hit.offset)
    if to_end:
        await _seek_to_end(consumer, to_end)
    return committed


async def _seek_to_end(consumer: Any, partitions: list[Any]) -> None:
    """Seek to the end offsets, read first: not aiokafka's `seek_to_end`, a reset request
    that any answer to a reset already under way satisfies, such as the "earliest" lookup
    aiokafka may have started for the partition before it was handed to us (the partition
    would then start at its first record). A seek clears a pending reset."""
    ends = await consumer.end_offsets(partitions)
    for tp in partitions:
        consumer.seek(tp, ends[tp])


async def expired_commits(
    consumer: Any, committed: Mapping[Any, int | None]
) -> dict[Any, tuple[int, int]]:
    """The partitions whose committed offset is before their oldest record (deleted by
    retention before it was delivered), each with (committed offset, oldest offset); they
    are positioned at the oldest record."""
    held = [tp for tp, offset in committed.items() if offset is not None]
    if not held:
        return {}
    firsts = await consumer.beginning_offsets(held)
    expired: dict[Any, tuple[int, int]] = {}
    for tp in held:
        offset, first = committed[tp], firsts.get(tp)
        if offset is not None and first is not None and offset < first:
            expired[tp] = (offset, first)
            consumer.seek(tp, first)
    return expired
