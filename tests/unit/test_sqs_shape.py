"""SQS messages in Lambda's shape (pure functions), the config models, the destination's
encoding, and the sample event."""

from __future__ import annotations

import base64
import hashlib
import logging
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

import triggerd_sqs as sqs
from triggerd.config.load import validate_data
from triggerd.config.plugins import Registry
from triggerd.functions.backends.local import plugin as local_plugin
from triggerd.types import ConfigError, DestinationContext, SystemClock
from triggerd_sqs.config import SqsDestinationConfig, SqsSourceConfig
from triggerd_sqs.destination import DestinationSendError, SqsDestination
from triggerd_sqs.shape import lambda_record, queue_arn_from_url, to_record

ARN = "arn:aws:sqs:us-east-1:123456789012:q.fifo"


def fifo_message(**extra: Any) -> dict[str, Any]:
    return {
        "MessageId": "059f36b4-87a3-44ab-83d2-661975830a7d",
        "ReceiptHandle": "AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a",
        "Body": "test",
        "Attributes": {
            "MessageDeduplicationId": "1",
            "ApproximateFirstReceiveTimestamp": "1573251510774",
            "SenderId": "AIDAIO23YVJENQZJOL4VO",
            "MessageGroupId": "1",
            "SequenceNumber": "18849496460467696128",
            "SentTimestamp": "1573251510774",
            "ApproximateReceiveCount": "3",
        },
        **extra,
    }


def test_fifo_attributes_come_in_lambdas_order_as_strings() -> None:
    rec = lambda_record(fifo_message(), ARN, "us-east-1")
    assert list(rec["attributes"]) == [
        "ApproximateReceiveCount",
        "SentTimestamp",
        "SequenceNumber",
        "MessageGroupId",
        "SenderId",
        "MessageDeduplicationId",
        "ApproximateFirstReceiveTimestamp",
    ]
    assert rec["messageAttributes"] == {}
    assert "md5OfMessageAttributes" not in rec
    assert rec["md5OfBody"] == hashlib.md5(b"test").hexdigest()
    assert rec["eventSourceARN"] == ARN


def test_record_fields_for_the_pipeline() -> None:
    record = to_record(fifo_message(), ARN, "us-east-1", fifo=True, now=0)
    assert record.item_id == "059f36b4-87a3-44ab-83d2-661975830a7d"
    assert record.key == "1"
    assert record.attempts == 2, "ApproximateReceiveCount - 1"
    assert record.created_at == 1573251510.774
    assert record.handle == "AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a"
    assert record.size == len(orjson.dumps(record.payload))
    assert to_record(fifo_message(), ARN, "us-east-1", fifo=False, now=0).key is None


@pytest.mark.parametrize(
    ("header", "trace_id"),
    [
        (
            "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
            "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
        ),
        ("Root=not-a-root;Sampled=1", None),
    ],
)
def test_aws_trace_header_stays_in_the_attributes_and_a_valid_one_is_the_trace_id(
    header: str, trace_id: str | None
) -> None:
    message = fifo_message()
    message["Attributes"]["AWSTraceHeader"] = header
    record = to_record(message, ARN, "us-east-1", fifo=True, now=0)
    assert record.payload["attributes"]["AWSTraceHeader"] == header
    assert record.trace_id == trace_id
    assert to_record(fifo_message(), ARN, "us-east-1", fifo=True, now=0).trace_id is None


def test_message_attributes_get_camel_case_and_the_empty_list_fields() -> None:
    msg = fifo_message(
        MessageAttributes={
            "b": {"BinaryValue": b"\xff\x00", "DataType": "Binary"},
            "s": {"StringValue": "v", "DataType": "String"},
        },
        MD5OfMessageAttributes="abc",
    )
    rec = lambda_record(msg, ARN, "eu-west-1")
    assert rec["messageAttributes"]["b"] == {
        "binaryValue": base64.b64encode(b"\xff\x00").decode(),
        "stringListValues": [],
        "binaryListValues": [],
        "dataType": "Binary",
    }
    assert list(rec["messageAttributes"]["s"]) == [
        "stringValue",
        "stringListValues",
        "binaryListValues",
        "dataType",
    ]
    assert rec["md5OfMessageAttributes"] == "abc"
    assert rec["awsRegion"] == "eu-west-1"


def test_a_body_with_lone_surrogates_still_serialises() -> None:
    record = to_record(fifo_message(Body="bad \udc80 text"), ARN, "us-east-1", fifo=True, now=0)
    assert record.payload["body"] == "bad \ufffd text"
    orjson.dumps(record.payload)


def test_queue_arn_from_an_url() -> None:
    url = "https://sqs.eu-west-1.amazonaws.com/111122223333/orders"
    assert queue_arn_from_url(url, "eu-west-1", "1") == "arn:aws:sqs:eu-west-1:111122223333:orders"


def test_region_and_endpoint_follow_the_queue_url() -> None:
    aws = SqsSourceConfig.model_validate(
        {"type": "sqs", "queue_url": "https://sqs.eu-west-1.amazonaws.com/1/q"}
    )
    assert aws.region_or("us-east-1") == "eu-west-1" and aws.endpoint() is None
    local = SqsSourceConfig.model_validate(
        {"type": "sqs", "queue_url": "http://localhost:9324/000000000000/q"}
    )
    assert local.region_or("us-east-1") == "us-east-1"
    assert local.endpoint() == "http://localhost:9324"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"queue_url": "sqs://q"}, "http(s) URL"),
        ({"queue_url": "http://host"}, "no queue path"),
        ({"queue_url": "http://h/1/q", "wait_time_s": 21}, "less than or equal to 20"),
        ({"queue_url": "http://h/1/q", "aws_access_key_id": "AK"}, "go together"),
    ],
)
def test_bad_source_options_are_rejected(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        SqsSourceConfig.model_validate({"type": "sqs", **options})


def test_a_fifo_queue_is_not_a_destination() -> None:
    with pytest.raises(ValidationError, match="FIFO"):
        SqsDestinationConfig.model_validate({"type": "sqs", "queue_url": "http://h/1/d.fifo"})


def registry() -> Registry:
    reg = Registry()
    reg.register("source", "sqs", sqs.plugin)
    reg.register("destination", "sqs", sqs.destination_plugin)
    reg.register("backend", "local", local_plugin)
    return reg


def trigger_config(batch_size: int, url: str) -> dict[str, Any]:
    return {
        "functions": {"f": {"handler": "app.handler", "code": "."}},
        "triggers": [
            {
                "function": "f",
                "batch_size": batch_size,
                "batching_window_s": 1,
                "source": {"type": "sqs", "queue_url": url},
            }
        ],
    }


def test_fifo_batch_size_is_at_most_10_and_standard_10000(tmp_path: Path) -> None:
    reg = registry()
    validate_data(trigger_config(10, "http://h/1/q.fifo"), reg, tmp_path)
    validate_data(trigger_config(10_000, "http://h/1/q"), reg, tmp_path)
    with pytest.raises(ConfigError, match=r"maximum 10$"):
        validate_data(trigger_config(11, "http://h/1/q.fifo"), reg, tmp_path)
    with pytest.raises(ConfigError, match="maximum 10000"):
        validate_data(trigger_config(10_001, "http://h/1/q"), reg, tmp_path)


def test_secrets_are_masked_in_the_config() -> None:
    cfg = SqsSourceConfig.model_validate(
        {
            "type": "sqs",
            "queue_url": "http://h/1/q",
            "aws_access_key_id": "AKIDSECRETID",
            "aws_secret_access_key": "very-secret-key",
        }
    )
    assert "very-secret-key" not in repr(cfg) and "AKIDSECRETID" not in str(cfg.model_dump())


class StubClient:
    def __init__(self, response: Any) -> None:
        self.response = response
        self.bodies: list[str] = []

    async def send_message(self, QueueUrl: str, MessageBody: str) -> Any:
        self.bodies.append(MessageBody)
        return self.response


def destination(client: StubClient) -> SqsDestination:
    cfg = SqsDestinationConfig.model_validate({"type": "sqs", "queue_url": "http://h/1/d"})
    ctx = DestinationContext(trigger="t", clock=SystemClock(), log=logging.getLogger("t"))
    return SqsDestination(cfg, ctx, client=client)


async def test_destination_drops_payload_parts_that_do_not_fit() -> None:
    client = StubClient({"MessageId": "m"})
    dest = destination(client)
    dest.max_bytes = 1000
    await dest.send({"version": "1.0", "payload": {"Records": ["x" * 2000]}})
    assert orjson.loads(client.bodies[0]) == {"version": "1.0"}


async def test_destination_send_raises_without_a_message_id() -> None:
    dest = destination(StubClient({}))
    with pytest.raises(DestinationSendError):
        await dest.send({"version": "1.0"})


def test_sample_event_is_a_fifo_record_when_a_group_is_given() -> None:
    event = sqs.plugin.sample_event({"group": "g", "body": "hi"})  # type: ignore[misc]
    [rec] = event["Records"]
    assert rec["attributes"]["MessageGroupId"] == "g"
    assert rec["eventSourceARN"].endswith(":my-queue.fifo")
    assert rec["body"] == "hi"
