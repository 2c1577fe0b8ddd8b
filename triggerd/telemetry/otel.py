"""OpenTelemetry spans exported over OTLP/HTTP (the `otel` extra; imported only when
`[telemetry.otel]` is configured).

Spans follow the FaaS semantic conventions where they fit: a batch span (kind CONSUMER) per
batch a trigger invokes, an invocation span (kind CLIENT) per invocation, with `faas.trigger`,
`faas.invoked_name` and `faas.invocation_id`, plus `triggerd.trigger`, `triggerd.attempt` and
`triggerd.outcome`. They join the incoming trace: the records' X-Ray header (from an SQS
message's `AWSTraceHeader`, a webhook's or Invoke API request's `X-Amzn-Trace-Id` or W3C
`traceparent`) gives the trace id and the parent span when the caller sampled it; the
function then gets an X-Ray header whose `Parent` is the invocation's span.

The daemon's own TracerProvider (not the global one), so embedding triggerd never changes
the host application's tracing; the batch processor exports on its own thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import (
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)

from triggerd import __version__
from triggerd.events.tracing import parse_trace_header, xray_ids
from triggerd.telemetry.spans import SpanHandle, current_scope, faas_trigger

#: Longest an export may take (per batch of spans, and at shutdown).
EXPORT_TIMEOUT_S = 10.0


def remote_parent(header: str | None) -> otel_context.Context:
    """The incoming trace as a parent context; an empty context (a new trace) when there is
    none or the caller did not sample it (an unsampled caller recorded no parent span)."""
    ids = xray_ids(header)
    if ids is None or not ids[2]:
        return otel_context.Context()
    trace_id, span_id, _ = ids
    parent = SpanContext(
        trace_id, span_id, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED)
    )
    return trace.set_span_in_context(NonRecordingSpan(parent), otel_context.Context())


def header_for(span: Span, incoming: str | None) -> str:
    """An X-Ray header naming `span` as the parent, keeping the incoming header's other
    fields (e.g. `Lineage`)."""
    ctx = span.get_span_context()
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
        provider = TracerProvider(resource=resource)
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
        with self._tracer.start_as_current_span(
            f"{trigger} batch",
            context=remote_parent(header),
            kind=SpanKind.CONSUMER,
            attributes=attributes,
        ) as span:
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
        parent = None if batch is not None else remote_parent(header)
        attributes: dict[str, str | int] = {"faas.invoked_name": function}
        scope = current_scope()
        if scope is not None:
            attributes["triggerd.trigger"] = scope.trigger
            attributes["triggerd.attempt"] = scope.attempt
        if request_id is not None:
            attributes["faas.invocation_id"] = request_id
        with self._tracer.start_as_current_span(
            f"{function} invoke", context=parent, kind=SpanKind.CLIENT, attributes=attributes
        ) as span:
            yield _Span(span, batch)

    async def shutdown(self) -> None:
        # Flushing posts the last spans over HTTP (blocking): off the event loop.
        await asyncio.to_thread(self._provider.shutdown)
