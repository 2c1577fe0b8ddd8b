"""Backoff and give-up decisions, shared by the poll pipeline and the async queue."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from triggerd.types import Record


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff: base * 2**(n-1), capped, with up to `jitter` of it taken off at
    random so that many failing batches do not retry in lockstep."""

    base_s: float
    max_s: float
    jitter: float = 0.2
    rng: random.Random = field(default_factory=random.Random, compare=False)

    def delay(self, attempt: int) -> float:
        """Delay before retry number `attempt` (1 = the first retry)."""
        # base * 2 ** (attempt - 1), exact; past the largest float (more than 1,024 doublings)
        # it is past any cap. Not a bounded exponent: a tiny base (a poll_interval_s of 1e-200
        # is accepted) needs over 512 doublings to reach its cap.
        try:
            raw = min(self.max_s, math.ldexp(self.base_s, max(0, attempt - 1)))
        except OverflowError:
            raw = self.max_s
        return float(raw * (1.0 - self.jitter * self.rng.random()))


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Event-source-mapping retry settings: -1 means unlimited, as in Lambda."""

    maximum_retry_attempts: int = -1
    maximum_record_age_s: float = -1
    bisect_batch_on_function_error: bool = False

    def exhausted(self, record: Record) -> bool:
        """True when the record has used up its retries (attempts counts tries made)."""
        limit = self.maximum_retry_attempts
        return limit >= 0 and record.attempts > limit

    def too_old(self, record: Record, now: float) -> bool:
        age = self.maximum_record_age_s
        return age >= 0 and now - record.created_at > age
