"""Spans recorded by the OpenTelemetry SDK's in-memory exporter: a poll trigger's batch span
per batch joined to the first record's X-Ray header, one invocation span per attempt as its
child, and the function's trace header naming its invocation span as parent; the caller's
trace id and sampling decision kept whatever the header's shape; a sync webhook's invocation
span naming its trigger; an invocation cut off by its caller recorded as a timeout."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

from tests.fakes import FakeBackend, FakeSource, make_record, run_until, trigger_runtime
from triggerd.delivery.pipeline import SyncTrigger
from triggerd.events.tracing import from_traceparent, trace_id_for, xray_ids
from triggerd.state.sqlite import SQLiteStateStore
from triggerd.telemetry.instrument import InstrumentedBackend, trigger_invoke
from triggerd.telemetry.metrics import Metrics
from triggerd.telemetry.spans import invocation_scope
from triggerd.types import SystemClock

pytest.importorskip("opentelemetry.sdk.trace")

from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from triggerd.telemetry.otel import OtelTracer, tracer_provider

TRACE_ID = "5759e988bd862e3fe1be46a994272793"
PARENT = "53995c3f42cd8ad8"
ROOT = f"Root=1-{TRACE_ID[:8]}-{TRACE_ID[8:]}"
HEADER = f"{ROOT};Parent={PARENT};Sampled=1"


def recorded() -> tuple[OtelTracer, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = tracer_provider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return OtelTracer(provider), exporter


async def invoke_traced(header: str | None) -> tuple[InMemorySpanExporter, str | None]:
    """One invocation through an instrumented backend with tracing on: the spans exported and
    the trace header the function got."""
    tracer, exporter = recorded()
    metrics = Metrics()
    metrics.tracer = tracer
    fake = FakeBackend()
    await InstrumentedBackend(fake, "f", metrics, SystemClock()).invoke(b"{}", trace_id=header)
    [got] = fake.trace_ids
    return exporter, got


async def test_a_retried_batch_is_one_span_with_an_invocation_span_per_attempt(
    store: SQLiteStateStore,
) -> None:
    tracer, exporter = recorded()
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
    rt.metrics.tracer = tracer
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


@pytest.mark.parametrize(
    "header",
    [
        from_traceparent(f"00-{TRACE_ID}-{PARENT}-00"),
        f"{ROOT};Parent={PARENT};Sampled=0",
    ],
    ids=["traceparent-00", "x-ray-Sampled=0"],
)
async def test_an_unsampled_incoming_trace_keeps_its_id_and_is_not_exported(header: str) -> None:
    exporter, got = await invoke_traced(header)
    # The function gets what it would get without tracing: the caller's trace, unsampled.
    assert got == f"{ROOT};Parent={PARENT};Sampled=0"
    assert exporter.get_finished_spans() == ()  # the caller's decision, as ParentBased does


async def test_an_unsampled_header_without_parent_keeps_its_root_and_is_not_exported() -> None:
    exporter, got = await invoke_traced(f"{ROOT};Sampled=0")
    assert got is not None and re.fullmatch(ROOT + r";Parent=[0-9a-f]{16};Sampled=0", got)
    assert exporter.get_finished_spans() == ()


@pytest.mark.parametrize("header", [ROOT, f"{ROOT};Sampled=?", f"{ROOT};Sampled=1"])
async def test_a_header_without_parent_makes_a_root_span_of_that_trace(header: str) -> None:
    # SQS's AWSTraceHeader is `Root=...;Sampled=1`; `Root` alone or `Sampled=?` leaves the
    # decision to triggerd, which samples.
    exporter, got = await invoke_traced(header)
    [span] = exporter.get_finished_spans()
    assert span.context.trace_id == int(TRACE_ID, 16)
    assert span.parent is None  # not the child of a made-up parent
    assert got == f"{ROOT};Parent={span.context.span_id:016x};Sampled=1"


async def test_an_undecided_header_with_a_parent_is_sampled_as_its_child() -> None:
    exporter, got = await invoke_traced(f"{ROOT};Parent={PARENT};Sampled=?")
    [span] = exporter.get_finished_spans()
    assert span.context.trace_id == int(TRACE_ID, 16)
    assert span.parent is not None and span.parent.span_id == int(PARENT, 16)
    assert got == f"{ROOT};Parent={span.context.span_id:016x};Sampled=1"


async def test_a_request_without_trace_header_starts_a_sampled_trace_of_its_own_id() -> None:
    fresh = trace_id_for(None, 1_700_000_000.0)
    exporter, got = await invoke_traced(fresh)
    [span] = exporter.get_finished_spans()
    assert span.parent is None
    assert got == f"{fresh};Parent={span.context.span_id:016x};Sampled=1"


async def test_a_sync_webhook_invocation_span_names_its_trigger_and_attempt() -> None:
    tracer, exporter = recorded()
    metrics = Metrics()
    metrics.tracer = tracer
    backend = InstrumentedBackend(FakeBackend(), "f", metrics, SystemClock())
    await trigger_invoke(backend, "hooks")(b"{}", trace_id=HEADER)
    [span] = exporter.get_finished_spans()
    assert span.attributes is not None
    assert (span.attributes["triggerd.trigger"], span.attributes["triggerd.attempt"]) == (
        "hooks",
        1,
    )


async def test_an_invocation_its_caller_stops_waiting_for_is_a_timeout() -> None:
    tracer, exporter = recorded()
    metrics = Metrics()
    metrics.tracer = tracer
    fake = FakeBackend(delay_s=60)
    backend = InstrumentedBackend(fake, "f", metrics, SystemClock())
    task = asyncio.create_task(backend.invoke(b"{}", request_id="rid", trace_id=HEADER))
    while not fake.calls:  # the invocation is under way
        await asyncio.sleep(0)
    task.cancel()  # what a webhook route's timeout does before answering 504
    with pytest.raises(asyncio.CancelledError):
        await task
    get = metrics.registry.get_sample_value
    assert get("triggerd_invocations_total", {"function": "f", "outcome": "timeout"}) == 1
    assert get("triggerd_invoke_duration_seconds_count", {"function": "f"}) == 1
    assert get("triggerd_concurrent_executions", {"function": "f"}) == 0
    [span] = exporter.get_finished_spans()
    assert span.attributes is not None
    assert span.attributes["triggerd.outcome"] == "timeout"
    assert span.attributes["faas.invocation_id"] == "rid"
    assert span.status.status_code is StatusCode.ERROR


async def test_each_attempt_of_a_stored_event_joins_its_trace() -> None:
    # An async event keeps the header it was stored with; a fresh trace has a Root alone.
    tracer, exporter = recorded()
    stored = trace_id_for(None, 1_700_000_000.0)
    for attempt in (1, 2, 3):
        with (
            tracer.batch(trigger="t", function="f", source_type="s3", records=1, trace=stored),
            invocation_scope("t", attempt),
        ):
            pass
    spans = exporter.get_finished_spans()
    assert len(spans) == 3
    assert {s.context.trace_id for s in spans} == {xray_ids(stored)[0]}  # type: ignore[index]
