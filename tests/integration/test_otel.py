"""OpenTelemetry spans over OTLP/HTTP, received by a real OTLP/HTTP receiver (an aiohttp server
decoding ExportTraceServiceRequest with opentelemetry-proto): a span per invocation, a span per
batch as its parent, both joined to the caller's W3C `traceparent`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.integration.invoke_daemon import local_fn, registry, wait_until
from triggerd.config.load import validate_data
from triggerd.daemon.app import Daemon

trace_service_pb2 = pytest.importorskip(
    "opentelemetry.proto.collector.trace.v1.trace_service_pb2",
    reason="opentelemetry-proto (the dev extra) decodes the exports",
)

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
TOKEN = "Bearer not-a-real-token"


@dataclass
class Receiver:
    url: str
    spans: list[Any] = field(default_factory=list)
    resources: list[dict[str, Any]] = field(default_factory=list)
    authorizations: list[str | None] = field(default_factory=list)

    def named(self, name: str) -> list[Any]:
        return [s for s in self.spans if s.name == name]


def attrs(span: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in span.attributes:
        value = kv.value
        out[kv.key] = getattr(value, value.WhichOneof("value"))
    return out


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    receiver = Receiver(url="")

    async def export(request: web.Request) -> web.Response:
        message = trace_service_pb2.ExportTraceServiceRequest()
        message.ParseFromString(await request.read())
        receiver.authorizations.append(request.headers.get("Authorization"))
        for resource_spans in message.resource_spans:
            resource = {kv.key: kv.value.string_value for kv in resource_spans.resource.attributes}
            receiver.resources.append(resource)
            for scope_spans in resource_spans.scope_spans:
                receiver.spans.extend(scope_spans.spans)
        reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
        return web.Response(body=reply, content_type="application/x-protobuf")

    app = web.Application()
    app.router.add_post("/v1/traces", export)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    receiver.url = f"http://127.0.0.1:{port}/v1/traces"
    try:
        yield receiver
    finally:
        await runner.cleanup()


def config(tmp: Path, endpoint: str) -> Any:
    data = {
        "daemon": {
            "state": f"sqlite:///{tmp / 'state.db'}",
            "listen": "",
            "control_listen": "127.0.0.1:0",
            "work_dir": str(tmp / "run"),
            "shutdown_timeout_s": 5,
        },
        "telemetry": {
            "otel": {
                "endpoint": endpoint,
                "headers": {"Authorization": TOKEN},
                "service_name": "triggerd-test",
            }
        },
        "functions": {"echo": local_fn()},
    }
    return validate_data(data, registry(), tmp)


async def invoke(daemon: Daemon, payload: bytes, **headers: str) -> aiohttp.ClientResponse:
    url = f"http://{daemon.control_address}/2015-03-31/functions/echo/invocations"
    async with aiohttp.ClientSession() as session:
        resp = await session.post(url, data=payload, headers=headers)
        await resp.read()
        return resp


async def test_invocation_span_joins_the_callers_traceparent(
    tmp_path: Path, receiver: Receiver
) -> None:
    async with Daemon(config(tmp_path, receiver.url), registry()).running() as daemon:
        resp = await invoke(daemon, b'{"action": "trace"}', traceparent=TRACEPARENT)
        body = await resp.json()
        request_id = resp.headers["x-amzn-RequestId"]
    # Leaving the block shut the tracer down, which exported every span.
    [span] = receiver.named("echo invoke")
    assert span.trace_id.hex() == TRACE_ID
    assert span.parent_span_id.hex() == PARENT_ID
    assert span.kind == span.SPAN_KIND_CLIENT
    assert attrs(span) == {
        "faas.invoked_name": "echo",
        "faas.invocation_id": request_id,
        "triggerd.outcome": "ok",
    }
    # The function's X-Ray header continues the same trace, with this span as its parent.
    tid = TRACE_ID
    assert body["trace"].startswith(
        f"Root=1-{tid[:8]}-{tid[8:]};Parent={span.span_id.hex()};Sampled=1"
    )
    assert receiver.resources[0]["service.name"] == "triggerd-test"
    assert set(receiver.authorizations) == {TOKEN}


async def test_event_invocation_is_a_child_of_its_batch_span(
    tmp_path: Path, receiver: Receiver
) -> None:
    record = tmp_path / "calls.jsonl"
    payload = f'{{"record": "{record}", "action": "raise"}}'.encode()
    async with Daemon(config(tmp_path, receiver.url), registry()).running() as daemon:
        resp = await invoke(
            daemon, payload, traceparent=TRACEPARENT, **{"X-Amz-Invocation-Type": "Event"}
        )
        assert resp.status == 202
        await wait_until(record.exists, 30, "the event's first invocation")
    batches = receiver.named("invoke-api:echo batch")
    invocations = receiver.named("echo invoke")
    assert batches and invocations
    batch, invocation = batches[0], invocations[0]
    assert batch.trace_id.hex() == TRACE_ID
    assert batch.parent_span_id.hex() == PARENT_ID
    assert batch.kind == batch.SPAN_KIND_CONSUMER
    assert invocation.trace_id.hex() == TRACE_ID
    assert invocation.parent_span_id == batch.span_id
    assert attrs(invocation)["triggerd.attempt"] == 1
    assert attrs(invocation)["triggerd.trigger"] == "invoke-api:echo"
    assert attrs(invocation)["triggerd.outcome"] == "function_error"
    assert invocation.status.code == invocation.status.STATUS_CODE_ERROR
    assert attrs(batch)["faas.trigger"] == "other"
    assert attrs(batch)["messaging.batch.message_count"] == 1
    assert attrs(batch)["triggerd.outcome"] == "function_error"


async def test_without_an_incoming_trace_the_invocation_span_is_a_root(
    tmp_path: Path, receiver: Receiver
) -> None:
    async with Daemon(config(tmp_path, receiver.url), registry()).running() as daemon:
        resp = await invoke(daemon, b"{}")
        assert resp.status == 200
    [span] = receiver.named("echo invoke")
    assert span.parent_span_id == b""  # a root span: nothing came in to join
