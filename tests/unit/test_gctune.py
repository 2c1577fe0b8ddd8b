"""The daemon's garbage collector settings."""

from __future__ import annotations

import gc

from triggerd.daemon.gctune import YOUNG_THRESHOLD, tune_gc


def test_tune_gc_collects_young_objects_less_often_and_freezes_start_up_objects() -> None:
    before = gc.get_threshold()
    try:
        tune_gc()
        young, middle, old = gc.get_threshold()
        assert young >= YOUNG_THRESHOLD
        assert (middle, old) == before[1:]
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
