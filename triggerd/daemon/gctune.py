"""The garbage collector's settings for the daemon's process.

Records are many small dicts that live for a batch or two. With CPython's default threshold
(a young-generation collection every 700 container allocations) the collector runs every few
records, and its older generations walk every record waiting in the buffers: in the Kafka
benchmark that was about 1.7 us of 15 us of CPU per record, 0.3 us with the setting below.
Reference counting still frees records as soon as they are settled; only reference cycles
wait longer to be collected.
"""

from __future__ import annotations

import gc

__all__ = ["YOUNG_THRESHOLD", "defer_gc", "tune_gc"]

#: Container allocations between two young-generation collections.
YOUNG_THRESHOLD = 50_000


def tune_gc() -> None:
    """Collect less often, and never scan again what exists at start-up (imported modules,
    the config): call once the daemon is set up, before it serves."""
    gc.collect()
    gc.freeze()
    young, middle, old = gc.get_threshold()
    gc.set_threshold(max(YOUNG_THRESHOLD, young), middle, old)


def defer_gc() -> None:
    """While the daemon starts, before `tune_gc`: what the imports made (modules, classes)
    lives as long as the process, so it is frozen now rather than walked by every
    collection until then, and the config's load (pydantic builds its validators from many
    short-lived containers) runs with the young threshold `tune_gc` sets. About 3% of the
    CPU from spawning `triggerd run` to ready on the bundled example."""
    gc.freeze()
    young, middle, old = gc.get_threshold()
    gc.set_threshold(max(YOUNG_THRESHOLD, young), middle, old)
