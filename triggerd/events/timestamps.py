"""ISO-8601 UTC timestamps with milliseconds, as AWS writes them (`2024-05-01T12:00:05.568Z`):
S3's `eventTime`, on-failure records' `timestamp`, Lambda's timeout texts and our log lines."""

from __future__ import annotations

import functools
import time

__all__ = ["iso_ms"]


@functools.lru_cache(maxsize=16)
def _second(whole: int) -> str:
    # Cached because many log lines and records share a second: strftime per line showed up
    # in profiles of busy daemons.
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))


def iso_ms(epoch: float) -> str:
    """`epoch` (seconds) in ISO-8601 UTC with milliseconds and a `Z` suffix. Rounded to the
    nearest millisecond, so a float that stands for .568 s is not written as .567."""
    whole, millis = divmod(round(epoch * 1000), 1000)
    return f"{_second(whole)}.{millis:03d}Z"
