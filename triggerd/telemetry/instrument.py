"""One place every invocation of a function passes through, whatever makes it (a trigger's
batch, an async event, a webhook in sync mode, the Invoke API): it is counted once
(`triggerd_invocations`), timed, counted among the function's concurrent executions, and
wrapped in an invocation span."""

from __future__ import annotations

import asyncio
from typing import Any

from triggerd.telemetry.metrics import Metrics
from triggerd.telemetry.spans import InvocationScope, ScopeBlock
from triggerd.types import Backend, Clock, InvocationType, InvokeFn, InvokeResult, Outcome


def trigger_invoke(backend: Backend, trigger: str) -> InvokeFn:
    """A source's synchronous invocation (a webhook in sync mode) made on behalf of
    `trigger`, so that its invocation span names the trigger and its single attempt."""

    scope = InvocationScope(trigger, 1)  # the same for every call: made once

    async def invoke(payload: bytes, *, trace_id: str | None = None) -> InvokeResult:
        with ScopeBlock(scope):
            return await backend.invoke(payload, trace_id=trace_id)

    return invoke


class InstrumentedBackend:
    """A backend with its invocations measured; anything else is the wrapped backend's
    (e.g. the local backend's workers)."""

    def __init__(self, inner: Backend, function: str, metrics: Metrics, clock: Clock) -> None:
        self.inner = inner
        self.function = function
        self._metrics = metrics
        self._clock = clock
        self._tally = metrics.invokes.tally(function)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def start(self) -> None:
        await self.inner.start()

    async def stop(self) -> None:
        await self.inner.stop()

    async def invoke(
        self,
        payload: bytes,
        *,
        request_id: str | None = None,
        invocation_type: InvocationType = "RequestResponse",
        client_context: str | None = None,
        want_log_tail: bool = False,
        trace_id: str | None = None,
    ) -> InvokeResult:
        metrics = self._metrics
        with metrics.tracer.invocation(
            function=self.function, trace=trace_id, request_id=request_id
        ) as span:
            tally = self._tally
            tally.concurrent += 1
            start = self._clock.monotonic()
            try:
                result = await self.inner.invoke(
                    payload,
                    request_id=request_id,
                    invocation_type=invocation_type,
                    client_context=client_context,
                    want_log_tail=want_log_tail,
                    trace_id=span.trace_header(trace_id),
                )
            except asyncio.CancelledError:
                # The caller stopped waiting (a webhook route's timeout answered 504, or the
                # daemon is stopping): the invocation still happened, cut off as a timeout.
                self._record(Outcome.TIMEOUT, start)
                span.finish(Outcome.TIMEOUT.value, request_id or "")
                raise
            finally:
                tally.concurrent -= 1
            self._record(result.outcome, start)
            span.finish(result.outcome.value, result.request_id)
        return result

    def _record(self, outcome: Outcome, start: float) -> None:
        tally = self._tally
        tally.duration.observe(self._clock.monotonic() - start)
        tally.count(outcome.value)
