"""Golden event shapes: every event triggerd emits, byte-compared with a fixture in
tests/golden/. Set TRIGGERD_UPDATE_GOLDEN=1 to rewrite the fixtures after a deliberate change,
then review the diff."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from triggerd.delivery.failures import async_invocation_record, stream_failure_record
from triggerd.events.eventbridge import event_envelope
from triggerd.events.s3 import s3_event_record
from triggerd.fanout.events.entries import Accepted, check_entries
from triggerd.fanout.sns.sample import sample_event as sns_sample
from triggerd.types import InvokeResult, Outcome, Record
from triggerd_kafka.shape import batch_info, envelope, kafka_record, record_size
from triggerd_schedule.events import scheduled_event

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
T = 1714564800.123  # 2024-05-01T12:00:00.123Z


def s3_put() -> Any:
    return {
        "Records": [
            s3_event_record(
                event_name="ObjectCreated:Put",
                bucket="my-bucket",
                key="uploads/red flower+1 é.jpg",
                size=1024,
                etag="d41d8cd98f00b204e9800998ecf8427e",
                sequencer="0055AED6DCD90281E5",
                event_time=T,
                region="us-east-1",
                configuration_id="triggerd",
                request_id="C3D13FE58DE4C810",
                host_id="FMyUVURIY8/IgAtTv8xRjskZQpcIZ9KG4V5Wp6S7S",
            )
        ]
    }


def s3_delete() -> Any:
    return {
        "Records": [
            s3_event_record(
                event_name="ObjectRemoved:Delete",
                bucket="my-bucket",
                key="docs/report.pdf",
                sequencer="0055AED6DCD90281E6",
                event_time=T,
                region="us-east-1",
                configuration_id="triggerd",
                request_id="C3D13FE58DE4C811",
                host_id="abc",
            )
        ]
    }


def schedule() -> Any:
    return scheduled_event(
        id="cdc73f9d-aea9-11e3-9d5a-835b769c0d9c",
        source="aws.events",
        account="123456789012",
        region="us-east-1",
        time="2024-05-01T12:00:00Z",
        resource="arn:aws:events:us-east-1:123456789012:rule/my-schedule",
    )


ERROR = InvokeResult(
    Outcome.FUNCTION_ERROR,
    b'{"errorMessage":"something broke","errorType":"ValueError","stackTrace":[]}',
    "e4b46cbf-b738-4a2e-8880-a18cdf61200e",
    function_error="Unhandled",
)


def async_failure() -> Any:
    return async_invocation_record(
        request_id=ERROR.request_id,
        function_arn="arn:aws:lambda:us-east-1:123456789012:function:my-function",
        condition="RetriesExhausted",
        approximate_invoke_count=3,
        request_payload=b'{"orderId": 42}',
        result=ERROR,
        timestamp=T,
    )


def stream_failure() -> Any:
    return stream_failure_record(
        request_id=ERROR.request_id,
        function_arn="arn:aws:lambda:us-east-1:123456789012:function:my-function",
        condition="RetryAttemptsExhausted",
        approximate_invoke_count=1,
        result=ERROR,
        timestamp=T,
        batch_info={"KinesisBatchInfo": {"shardId": "shardId-000000000001", "batchSize": 1}},
    )


def _kafka_records() -> list[Record]:
    payloads = [
        kafka_record(
            topic="mytopic",
            partition=0,
            offset=15,
            timestamp=1714564800123,
            timestamp_type=0,
            key=b"recordKey",
            value=b'{"key":"value"}',
            headers=[("headerKey", b"headerValue"), ("bin", b"\xff\x00")],
        ),
        kafka_record(
            topic="mytopic",
            partition=0,
            offset=16,
            timestamp=1714564800456,
            timestamp_type=1,
            key=None,
            value=b"\x00\x01binary",
            headers=[],
        ),
    ]
    return [
        Record(payload=p, item_id=f"mytopic-0:{p['offset']}", size=record_size(p),
               created_at=p["timestamp"] / 1000, key="mytopic-0")
        for p in payloads
    ]  # fmt: skip


BOOTSTRAP = "broker-1.example.com:9092,broker-2.example.com:9092"


def kafka_event() -> Any:
    return envelope(BOOTSTRAP, "mytopic-0", [r.payload for r in _kafka_records()])


def kafka_failure() -> Any:
    records = _kafka_records()
    return stream_failure_record(
        request_id=ERROR.request_id,
        function_arn="arn:aws:lambda:us-east-1:123456789012:function:my-function",
        condition="RetryAttemptsExhausted",
        approximate_invoke_count=11,
        result=ERROR,
        timestamp=T,
        batch_info=batch_info(BOOTSTRAP, records),
        payload=envelope(BOOTSTRAP, "mytopic-0", [r.payload for r in records]),
    )


def _bus_event(replay_name: str | None = None) -> dict[str, Any]:
    (entry,) = check_entries(
        [
            {
                "Source": "com.example.orders",
                "DetailType": "Order Placed",
                "Detail": '{"orderId": "1234", "amount": 250, "customer": {"name": "Ann"}}',
                "Resources": ["arn:aws:dynamodb:us-east-1:123456789012:table/orders"],
            }
        ],
        region="us-east-1",
        account_id="123456789012",
        now=T,
    )
    assert isinstance(entry, Accepted)
    return event_envelope(
        event_id="c4a5a3b7-9d6a-4f1e-8a57-2f7f3b0d6c11",
        detail_type=entry.detail_type,
        source=entry.source,
        account="123456789012",
        time=entry.time,
        region="us-east-1",
        resources=entry.resources,
        detail=entry.detail,
        replay_name=replay_name,
    )


def bus_event() -> Any:
    return _bus_event()


def replayed_bus_event() -> Any:
    return _bus_event("replay-20240501T120000-1a2b3c")


def sns_notification() -> Any:
    """The fan-out's `aws:sns` event (a topic's subscriber), with a Subject and attributes."""
    return sns_sample(
        {
            "message": '{"order": 42}',
            "subject": "New order",
            "topic": "orders",
            "time": str(T),
            "attr.kind": "big",
            "attr.price": "Number:12.5",
            "attr.tags": 'String.Array:["a","b"]',
        }
    )


CASES: dict[str, Callable[[], Any]] = {
    "eventbridge_bus_event": bus_event,
    "eventbridge_replayed_bus_event": replayed_bus_event,
    "sns_notification": sns_notification,
    "kafka_self_managed_event": kafka_event,
    "kafka_failure_record": kafka_failure,
    "s3_object_created_put": s3_put,
    "s3_object_removed_delete": s3_delete,
    "eventbridge_scheduled_event": schedule,
    "async_invocation_record": async_failure,
    "stream_failure_record": stream_failure,
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_event_matches_golden_fixture(name: str) -> None:
    text = json.dumps(CASES[name](), indent=2, ensure_ascii=False) + "\n"
    path = GOLDEN / f"{name}.json"
    if os.environ.get("TRIGGERD_UPDATE_GOLDEN") == "1":
        path.write_text(text)
    assert path.read_text() == text
