"""Reserved concurrency for remote backends (http, aws): at most N invocations in flight; a
caller that cannot get a slot within the function timeout is throttled, as Lambda would."""

from __future__ import annotations

import asyncio
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


class ConcurrencySlots:
    def __init__(self, limit: int | None) -> None:
        #: None: unlimited; 0: every invocation is throttled.
        self.limit = limit
        self._sem = asyncio.Semaphore(limit) if limit else None

    async def run(
        self, call: Callable[[], Awaitable[InvokeResult]], request_id: str, wait_s: float
    ) -> InvokeResult:
        if self.limit == 0:
            return throttled_result(request_id)
        if self._sem is None:
            return await call()
        try:
            async with asyncio.timeout(wait_s):
                await self._sem.acquire()
        except TimeoutError:
            return throttled_result(request_id)
        try:
            return await call()
        finally:
            self._sem.release()
