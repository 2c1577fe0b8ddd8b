"""Spans around batches and invocations, without depending on OpenTelemetry.

The pipeline and the backends speak to a `Tracer`: `NoTracer` (the default, nearly free on
the hot path) or the OpenTelemetry one in `triggerd.telemetry.otel`, imported only when
`[telemetry.otel]` is configured (the `otel` extra). Who invokes (a trigger, which attempt)
reaches the invocation's span through a context variable, so that the backend interface stays
as it is.
"""

from __future__ import annotations

import contextlib
from contextlib import AbstractContextManager
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import Protocol

from triggerd.events.tracing import for_function

#: OpenTelemetry's `faas.trigger` per source type (FaaS semantic conventions: datasource,
#: http, pubsub, timer, other).
FAAS_TRIGGER = {
    "sqs": "pubsub",
    "rabbitmq": "pubsub",
    "kafka": "pubsub",
    "kinesis": "pubsub",
    "dynamodb_streams": "datasource",
    "postgres": "datasource",
    "s3": "datasource",
    "directory": "datasource",
    "schedule": "timer",
    "webhook": "http",
}


def faas_trigger(source_type: str) -> str:
    return FAAS_TRIGGER.get(source_type, "other")


@dataclass(frozen=True, slots=True)
class InvocationScope:
    """Who makes the invocations under way in this task: a trigger, and which attempt."""

    trigger: str
    attempt: int


_scope: ContextVar[InvocationScope | None] = ContextVar("triggerd_invocation_scope", default=None)


def current_scope() -> InvocationScope | None:
    return _scope.get()


class invocation_scope:
    """`with invocation_scope(trigger, attempt):` names who invokes in this task. A class
    rather than a generator-based context manager: it is entered once per async event, and
    the generator's machinery cost more than the context variable."""

    __slots__ = ("_scope", "_token")

    def __init__(self, trigger: str, attempt: int) -> None:
        self._scope = InvocationScope(trigger, attempt)
        self._token: Token[InvocationScope | None] | None = None

    def __enter__(self) -> None:
        self._token = _scope.set(self._scope)

    def __exit__(self, *exc: object) -> None:
        if self._token is not None:
            _scope.reset(self._token)
            self._token = None


class SpanHandle(Protocol):
    def finish(self, outcome: str, request_id: str) -> None:
        """Record the invocation's outcome and request id (the span ends with its block)."""

    def trace_header(self, incoming: str | None) -> str | None:
        """The X-Ray header the function gets: `incoming` (completed by `for_function`), or
        with this span as its parent when the span is sampled."""


class Tracer(Protocol):
    def batch(
        self, *, trigger: str, function: str, source_type: str, records: int, trace: str | None
    ) -> AbstractContextManager[SpanHandle]:
        """A span around one batch (all its invocations); `trace`: its first record's X-Ray
        header, the trace the batch joins."""

    def invocation(
        self, *, function: str, trace: str | None, request_id: str | None
    ) -> AbstractContextManager[SpanHandle]:
        """A span around one invocation: a child of the batch's span when there is one, else
        of the incoming trace (`trace`, an X-Ray header)."""

    async def shutdown(self) -> None:
        """Export what is left and stop."""


class _NoSpan:
    __slots__ = ()

    def finish(self, outcome: str, request_id: str) -> None:
        return None

    def trace_header(self, incoming: str | None) -> str | None:
        return for_function(incoming)


class NoTracer:
    """No spans: the daemon's tracer unless `[telemetry.otel]` is configured."""

    def __init__(self) -> None:
        self._span = contextlib.nullcontext(_NoSpan())

    def batch(
        self, *, trigger: str, function: str, source_type: str, records: int, trace: str | None
    ) -> AbstractContextManager[SpanHandle]:
        return self._span

    def invocation(
        self, *, function: str, trace: str | None, request_id: str | None
    ) -> AbstractContextManager[SpanHandle]:
        return self._span

    async def shutdown(self) -> None:
        return None
