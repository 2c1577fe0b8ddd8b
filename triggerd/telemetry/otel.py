"""OpenTelemetry spans exported over OTLP/HTTP (the `otel` extra; imported only when
`[telemetry.otel]` is configured).

Spans follow the FaaS semantic conventions where they fit: a batch span (kind CONSUMER) per
batch a trigger invokes, an invocation span (kind CLIENT) per invocation, with `faas.trigger`,
`faas.invoked_name` and `faas.invocation_id`, plus `triggerd.trigger`, `triggerd.attempt`
and `triggerd.outcome`.

They join the incoming trace: the records' X-Ray header (an SQS message's `AWSTraceHeader`,
a webhook's or Invoke API request's `X-Amzn-Trace-Id` or W3C `traceparent`) gives the trace
id, the parent span when it names one (a header with a `Root` alone makes the span a root
span of that trace, not the child of an invented parent), and the caller's sampling
decision, which the spans follow as OpenTelemetry's ParentBased sampler does: a trace the
caller did not sample (`Sampled=0`, traceparent flags `00`) is neither recorded nor
exported, and its function gets the caller's header as it would without tracing; a trace
with no decision yet (no `Sampled`, or X-Ray's `Sampled=?`) or no header at all is sampled.
A sampled invocation's function gets an X-Ray header whose `Parent` is its invocation span,
with `Sampled=1`.

The daemon's own TracerProvider (not the global one), so embedding triggerd never changes
the host application's tracing; the batch processor exports on its own thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import Decision, ParentBased, Sampler, SamplingResult
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
)
from opentelemetry.util.types import Attributes

from triggerd import __version__
from triggerd.events.tracing import for_function, parse_trace_header, xray_ids
from triggerd.telemetry.spans import SpanHandle, current_scope, faas_trigger

#: Longest an export may take (per batch of spans, and at shutdown).
EXPORT_TIMEOUT_S = 10.0

#: In the parent context of a span joining a header: the caller's sampling decision (True,
#: False), absent when the caller made none.
_CALLER_SAMPLED = otel_context.create_key("triggerd.caller_sampled")

#: The trace id the next root span takes: the incoming header's, when it names no parent.
_next_trace_id: ContextVar[int | None] = ContextVar("triggerd_next_trace_id", default=None)


class _IncomingTraceIds(RandomIdGenerator):
    """Random span ids; a root span's trace id is the incoming header's when there is one
    (set for one span start through `_next_trace_id`). The SDK has no per-span trace id
    parameter, so the provider's id generator is where a root span can keep a caller's id."""

    def generate_trace_id(self) -> int:
        incoming = _next_trace_id.get()
        return incoming if incoming is not None else super().generate_trace_id()

    def is_trace_id_random(self) -> bool:
        return False  # X-Ray ids start with a timestamp


class _CallerDecides(Sampler):
    """Samples unless the caller's header said `Sampled=0` (the root and remote-unsampled
    delegate of the ParentBased sampler: a remote parent with flags 00 may come from a header
    that made no decision, which triggerd then makes)."""

    def should_sample(
        self,
        parent_context: otel_context.Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        if otel_context.get_value(_CALLER_SAMPLED, parent_context) is False:
            return SamplingResult(Decision.DROP)
        return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes)

    def get_description(self) -> str:
        return "CallerDecides"


def tracer_provider(resource: Resource | None = None) -> TracerProvider:
    """A provider that follows the caller's sampling decision and keeps a caller's trace id."""
    decides = _CallerDecides()
    return TracerProvider(
        sampler=ParentBased(root=decides, remote_parent_not_sampled=decides),
        resource=resource,
        id_generator=_IncomingTraceIds(),
    )


def remote_parent(header: str | None) -> tuple[otel_context.Context, int | None]:
    """The incoming trace as (parent context, trace id of a root span): the header's parent
    span as a remote parent carrying the caller's sampled flag; or, when the header names no
    parent, an empty parent with the header's trace id for the root span. The caller's
    decision rides in the context for `_CallerDecides`."""
    ids = xray_ids(header)
    if ids is None:
        return otel_context.Context(), None
    trace_id, span_id, sampled = ids
    ctx = otel_context.Context()
    if sampled is not None:
        ctx = otel_context.set_value(_CALLER_SAMPLED, sampled, ctx)
    if span_id is None:
        return ctx, trace_id
    flags = TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
    parent = SpanContext(trace_id, span_id, is_remote=True, trace_flags=flags)
    return trace.set_span_in_context(NonRecordingSpan(parent), ctx), None


def header_for(span: Span, incoming: str | None) -> str | None:
    """The function's X-Ray header: naming `span` as the parent with `Sampled=1` when the span
    is sampled, keeping the incoming header's other fields (e.g. `Lineage`); the incoming
    header as without tracing when it is not (the caller chose not to sample the trace)."""
    ctx = span.get_span_context()
    if not ctx.trace_flags.sampled:
        return for_function(incoming)
    tid = f"{ctx.trace_id:032x}"
    rest: list[str] = []
    parsed = parse_trace_header(incoming)
    if parsed is not None:
        for part in parsed.split(";"):
            if part.partition("=")[0] not in ("Root", "Parent", "Sampled"):
                rest.append(part)
    return ";".join(
        [f"Root=1-{tid[:8]}-{tid[8:]}", f"Parent={ctx.span_id:016x}", "Sampled=1", *rest]
    )


class _Span:
    __slots__ = ("batch", "span")

    def __init__(self, span: Span, batch: Span | None = None) -> None:
        self.span = span
        #: The enclosing batch's span, which shows its last invocation's outcome.
        self.batch = batch

    def finish(self, outcome: str, request_id: str) -> None:
        self.span.set_attribute("faas.invocation_id", request_id)
        self.span.set_attribute("triggerd.outcome", outcome)
        if outcome != "ok":
            self.span.set_status(Status(StatusCode.ERROR, outcome))
        if self.batch is not None and self.batch.is_recording():
            self.batch.set_attribute("triggerd.outcome", outcome)

    def trace_header(self, incoming: str | None) -> str | None:
        return header_for(self.span, incoming)


class OtelTracer:
    def __init__(self, provider: TracerProvider) -> None:
        self._provider = provider
        self._tracer = provider.get_tracer("triggerd", __version__)

    @classmethod
    def otlp(cls, *, endpoint: str, headers: Mapping[str, str], service_name: str) -> OtelTracer:
        """Spans batched and exported over OTLP/HTTP (protobuf) to `endpoint`."""
        resource = Resource.create({"service.name": service_name, "service.version": __version__})
        provider = tracer_provider(resource)
        exporter = OTLPSpanExporter(
            endpoint=endpoint, headers=dict(headers), timeout=int(EXPORT_TIMEOUT_S)
        )
        provider.add_span_processor(BatchSpanProcessor(exporter))
        return cls(provider)

    def batch(
        self, *, trigger: str, function: str, source_type: str, records: int, trace: str | None
    ) -> AbstractContextManager[SpanHandle]:
        return self._batch(trigger, function, source_type, records, trace)

    @contextmanager
    def _batch(
        self, trigger: str, function: str, source_type: str, records: int, header: str | None
    ) -> Iterator[SpanHandle]:
        attributes: dict[str, str | int] = {
            "faas.trigger": faas_trigger(source_type),
            "faas.invoked_name": function,
            "triggerd.trigger": trigger,
            "triggerd.source": source_type,
            "messaging.batch.message_count": records,
        }
        span = self._start(f"{trigger} batch", header, SpanKind.CONSUMER, attributes)
        with trace.use_span(span, end_on_exit=True):
            yield _Span(span)

    def invocation(
        self, *, function: str, trace: str | None, request_id: str | None
    ) -> AbstractContextManager[SpanHandle]:
        return self._invocation(function, trace, request_id)

    @contextmanager
    def _invocation(
        self, function: str, header: str | None, request_id: str | None
    ) -> Iterator[SpanHandle]:
        current = trace.get_current_span()
        batch = current if current.get_span_context().is_valid else None
        attributes: dict[str, str | int] = {"faas.invoked_name": function}
        scope = current_scope()
        if scope is not None:
            attributes["triggerd.trigger"] = scope.trigger
            attributes["triggerd.attempt"] = scope.attempt
        if request_id is not None:
            attributes["faas.invocation_id"] = request_id
        name = f"{function} invoke"
        if batch is not None:
            span = self._tracer.start_span(name, kind=SpanKind.CLIENT, attributes=attributes)
        else:
            span = self._start(name, header, SpanKind.CLIENT, attributes)
        with trace.use_span(span, end_on_exit=True):
            yield _Span(span, batch)

    def _start(
        self, name: str, header: str | None, kind: SpanKind, attributes: dict[str, str | int]
    ) -> Span:
        """A span joining the incoming trace `header` (see `remote_parent`)."""
        parent, trace_id = remote_parent(header)
        token = _next_trace_id.set(trace_id)
        try:
            return self._tracer.start_span(name, parent, kind=kind, attributes=attributes)
        finally:
            _next_trace_id.reset(token)

    async def shutdown(self) -> None:
        # Flushing posts the last spans over HTTP (blocking): off the event loop.
        await asyncio.to_thread(self._provider.shutdown)
