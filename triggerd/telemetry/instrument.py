"""One place every invocation of a function passes through, whatever makes it (a trigger's
batch, an async event, a webhook in sync mode, the Invoke API): it is counted once
(`triggerd_invocations`), timed, counted among the function's concurrent executions, and
wrapped in an invocation span."""

from __future__ import annotations

from typing import Any

from triggerd.telemetry.metrics import Metrics
from triggerd.types import Backend, Clock, InvocationType, InvokeResult, Outcome


class InstrumentedBackend:
    """A backend with its invocations measured; anything else is the wrapped backend's
    (e.g. the local backend's workers)."""

    def __init__(self, inner: Backend, function: str, metrics: Metrics, clock: Clock) -> None:
        self.inner = inner
        self.function = function
        self._metrics = metrics
        self._clock = clock
        self._concurrent = metrics.concurrent.labels(function)
        self._seconds = metrics.invoke_seconds.labels(function)
        #: Per outcome, the counter's child (`labels()` costs more than the increment).
        self._outcomes: dict[Outcome, Any] = {}

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
            self._concurrent.inc()
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
            finally:
                self._concurrent.dec()
            self._seconds.observe(self._clock.monotonic() - start)
            counter = self._outcomes.get(result.outcome)
            if counter is None:
                counter = self._outcomes[result.outcome] = metrics.invocations.labels(
                    self.function, result.outcome.value
                )
            counter.inc()
            span.finish(result.outcome.value, result.request_id)
        return result
