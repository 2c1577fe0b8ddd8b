"""Where a newly assigned partition starts.

A partition with a committed offset in the group starts there (aiokafka does it). Without one,
TRIM_HORIZON and LATEST are aiokafka's `auto_offset_reset` ("earliest", "latest"); AT_TIMESTAMP
looks up the first offset at or after `starting_position_timestamp` (ListOffsets by time) and
seeks there, or to the end of the partition when no record is that recent.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, Literal

from .config import KafkaSourceConfig

__all__ = ["auto_offset_reset", "position_new_partitions"]


def auto_offset_reset(cfg: KafkaSourceConfig) -> Literal["earliest", "latest"]:
    return "earliest" if cfg.starting_position == "TRIM_HORIZON" else "latest"


async def position_new_partitions(
    consumer: Any, partitions: Collection[Any], cfg: KafkaSourceConfig
) -> dict[Any, int | None]:
    """The committed offset of each partition (None when the group has none); with
    AT_TIMESTAMP, partitions without one are positioned by time."""
    committed: dict[Any, int | None] = {}
    for tp in partitions:
        committed[tp] = await consumer.committed(tp)
    if cfg.starting_position != "AT_TIMESTAMP" or cfg.starting_position_timestamp is None:
        return committed
    missing = [tp for tp, offset in committed.items() if offset is None]
    if not missing:
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
        await consumer.seek_to_end(*to_end)
    return committed
