"""Reserved concurrency: at most N invocations in flight; a caller that cannot get a slot
within the function timeout is throttled, as Lambda would. `Slots` is the counting primitive
(used by every backend); `ConcurrencySlots` wraps a call in one for the remote backends."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable

import orjson

from triggerd.types import InvokeResult, Outcome

#: Lambda's TooManyRequestsException body for a function at its reserved concurrency.
_THROTTLE_BODY = orjson.dumps(
    {
        "Reason": "ReservedFunctionConcurrentInvocationLimitExceeded",
        "Type": "User",
        "message": "Rate Exceeded.",
    }
)


def throttled_result(request_id: str) -> InvokeResult:
    return InvokeResult(Outcome.THROTTLED, _THROTTLE_BODY, request_id, retry_after_s=1.0)


def _expire(waiter: asyncio.Future[bool]) -> None:
    if not waiter.done():
        waiter.set_result(False)


class Slots:
    """A counting semaphore with a timed, first-come-first-served `acquire`. A waiter costs a
    future and a timer (no task cancellation, unlike a semaphore inside asyncio.timeout: this
    is on every queued invocation's path)."""

    def __init__(self, count: int) -> None:
        self._free = count
        self._waiters: collections.deque[asyncio.Future[bool]] = collections.deque()
        #: The loop of the last wait: while it runs, it is the loop of the next one (a slot
        #: pool is used from one thread), which spares a getpid(2) per queued invocation.
        self._loop: asyncio.AbstractEventLoop | None = None

    def locked(self) -> bool:
        return self._free <= 0

    def try_acquire(self) -> bool:
        if self._free > 0:
            self._free -= 1
            return True
        return False

    async def acquire(self, timeout_s: float | None = None) -> bool:
        """Take a slot; False when none came free within `timeout_s`."""
        if self._free > 0:
            self._free -= 1
            return True
        loop = self._loop
        if loop is None or not loop.is_running():
            loop = self._loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()
        self._waiters.append(waiter)
        timer = loop.call_later(timeout_s, _expire, waiter) if timeout_s is not None else None
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.result():
                self.release()  # handed a slot just as the caller was cancelled: pass it on
            raise
        finally:
            if timer is not None:
                timer.cancel()

    def release(self) -> None:
        """Give a slot back: to the longest waiter still waiting, or to the pool."""
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(True)
                return
        self._free += 1


class ConcurrencySlots:
    def __init__(self, limit: int | None) -> None:
        #: None: unlimited; 0: every invocation is throttled.
        self.limit = limit
        self._slots = Slots(limit) if limit else None

    async def run(
        self, call: Callable[[], Awaitable[InvokeResult]], request_id: str, wait_s: float
    ) -> InvokeResult:
        if self.limit == 0:
            return throttled_result(request_id)
        if self._slots is None:
            return await call()
        if not await self._slots.acquire(wait_s):
            return throttled_result(request_id)
        try:
            return await call()
        finally:
            self._slots.release()
