"""A poll trigger's spans, recorded by the OpenTelemetry SDK's in-memory exporter: one batch
span per batch joined to the first record's X-Ray header, one invocation span per attempt as
its child, and the function's trace header naming its invocation span as parent."""

from __future__ import annotations

from typing import Any

import pytest

from tests.fakes import FakeBackend, FakeSource, make_record, run_until, trigger_runtime
from triggerd.delivery.pipeline import SyncTrigger
from triggerd.events.tracing import xray_ids
from triggerd.state.sqlite import SQLiteStateStore
from triggerd.telemetry.instrument import InstrumentedBackend
from triggerd.types import SystemClock

pytest.importorskip("opentelemetry.sdk.trace")

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from triggerd.telemetry.otel import OtelTracer

TRACE_ID = "5759e988bd862e3fe1be46a994272793"
PARENT = "53995c3f42cd8ad8"
HEADER = f"Root=1-{TRACE_ID[:8]}-{TRACE_ID[8:]};Parent={PARENT};Sampled=1"


async def test_a_retried_batch_is_one_span_with_an_invocation_span_per_attempt(
    store: SQLiteStateStore,
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    failures = [1]

    def respond(event: Any) -> Any:
        if failures:
            failures.pop()
            raise RuntimeError("first attempt fails")
        return {}

    records = [make_record(i) for i in range(3)]
    records[0].trace_id = HEADER
    fake = FakeBackend(respond)
    src = FakeSource(records)
    rt = trigger_runtime(
        store, src, fake, None, "fakestream", batch_size=3, retry_base_delay_s=0.01
    )
    rt.metrics.tracer = OtelTracer(provider)
    rt.backend = InstrumentedBackend(fake, "f", rt.metrics, SystemClock())
    trigger = SyncTrigger(rt)
    await run_until(trigger, lambda: len(src.acked) == 3)

    spans = exporter.get_finished_spans()
    [batch] = [s for s in spans if s.name == "t batch"]
    invocations = sorted(
        (s for s in spans if s.name == "f invoke"),
        key=lambda s: s.attributes["triggerd.attempt"] if s.attributes else 0,
    )
    assert batch.kind is SpanKind.CONSUMER
    assert batch.context.trace_id == int(TRACE_ID, 16)
    assert batch.parent is not None and batch.parent.span_id == int(PARENT, 16)
    assert batch.attributes is not None
    assert batch.attributes["triggerd.trigger"] == "t"
    assert batch.attributes["messaging.batch.message_count"] == 3
    assert batch.attributes["triggerd.outcome"] == "ok"  # its last invocation's
    assert [dict(s.attributes or {}) for s in invocations] == [
        {
            "faas.invoked_name": "f",
            "triggerd.trigger": "t",
            "triggerd.attempt": 1,
            "faas.invocation_id": invocations[0].attributes["faas.invocation_id"],  # type: ignore[index]
            "triggerd.outcome": "function_error",
        },
        {
            "faas.invoked_name": "f",
            "triggerd.trigger": "t",
            "triggerd.attempt": 2,
            "faas.invocation_id": invocations[1].attributes["faas.invocation_id"],  # type: ignore[index]
            "triggerd.outcome": "ok",
        },
    ]
    for span, header in zip(invocations, fake.trace_ids, strict=True):
        assert span.kind is SpanKind.CLIENT
        assert span.parent is not None and span.parent.span_id == batch.context.span_id
        assert span.context.trace_id == int(TRACE_ID, 16)
        assert xray_ids(header) == (int(TRACE_ID, 16), span.context.span_id, True)
    assert invocations[0].status.status_code is StatusCode.ERROR
