"""The sqs source and destination on their own against moto_server: the event shape field by
field, start-up errors, secrets, nack visibility, releasing the buffer on stop."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import time
from typing import Any

import pytest

from tests.conftest import free_port
from tests.integration.relay import Relay
from tests.integration.sqs_harness import (
    depth,
    drain,
    error_page,
    make_queue,
    queue_arn,
    sqs_client,
)
from triggerd.state.sqlite import MEMORY_PATH, SQLiteStateStore
from triggerd.types import (
    ConfigError,
    DestinationContext,
    Record,
    RetryableError,
    SourceContext,
    SystemClock,
)
from triggerd_sqs.config import SqsDestinationConfig, SqsSourceConfig
from triggerd_sqs.destination import SqsDestination
from triggerd_sqs.source import SqsSource

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("aws_env")]

SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"


def source(url: str, endpoint: str, **extra: Any) -> SqsSource:
    config = SqsSourceConfig.model_validate(
        {"type": "sqs", "queue_url": url, "endpoint_url": endpoint, "wait_time_s": 1, **extra}
    )
    ctx = SourceContext(
        trigger="t",
        state=SQLiteStateStore(MEMORY_PATH),
        clock=SystemClock(),
        log=logging.getLogger("test.sqs"),
    )
    return SqsSource(config, ctx)


async def take(src: SqsSource, count: int, timeout_s: float = 10) -> list[Record]:
    out: list[Record] = []
    deadline = time.monotonic() + timeout_s
    while len(out) < count and time.monotonic() < deadline:
        out += await src.receive(count - len(out), 0.5)
    assert len(out) == count, f"expected {count} records, got {len(out)}"
    return out


async def test_standard_message_has_lambdas_shape_field_by_field(moto_server: str) -> None:
    async with sqs_client(moto_server) as c:
        url = await make_queue(c)
        arn = await queue_arn(c, url)
        before_ms = int(time.time() * 1000)
        sent = await c.send_message(
            QueueUrl=url,
            MessageBody='{"order": 42}',
            MessageAttributes={
                "priority": {"DataType": "Number", "StringValue": "5"},
                "blob": {"DataType": "Binary", "BinaryValue": b"\x00\x01\x02\x03"},
                "note": {"DataType": "String.custom", "StringValue": "héllo"},
            },
        )
        src = source(url, moto_server)
        await src.start()
        try:
            [rec] = await take(src, 1)
        finally:
            await src.stop()
    p = rec.payload
    assert list(p) == [
        "messageId",
        "receiptHandle",
        "body",
        "attributes",
        "messageAttributes",
        "md5OfMessageAttributes",
        "md5OfBody",
        "eventSource",
        "eventSourceARN",
        "awsRegion",
    ]
    assert p["messageId"] == sent["MessageId"] == rec.item_id
    assert isinstance(p["receiptHandle"], str) and p["receiptHandle"] == rec.handle
    assert p["body"] == '{"order": 42}'
    attrs = p["attributes"]
    assert list(attrs)[:2] == ["ApproximateReceiveCount", "SentTimestamp"]
    assert attrs["ApproximateReceiveCount"] == "1"
    assert all(isinstance(v, str) for v in attrs.values())
    assert before_ms - 1000 <= int(attrs["SentTimestamp"]) <= int(time.time() * 1000)
    assert int(attrs["ApproximateFirstReceiveTimestamp"]) >= int(attrs["SentTimestamp"])
    assert attrs["SenderId"]
    assert p["messageAttributes"] == {
        "priority": {
            "stringValue": "5",
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": "Number",
        },
        "blob": {
            "binaryValue": base64.b64encode(b"\x00\x01\x02\x03").decode(),
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": "Binary",
        },
        "note": {
            "stringValue": "héllo",
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": "String.custom",
        },
    }
    assert p["md5OfMessageAttributes"] == sent["MD5OfMessageAttributes"]
    assert p["md5OfBody"] == hashlib.md5(b'{"order": 42}').hexdigest()
    assert p["eventSource"] == "aws:sqs"
    assert p["eventSourceARN"] == arn
    assert p["awsRegion"] == "us-east-1"
    assert rec.key is None and rec.attempts == 0
    assert rec.created_at == int(attrs["SentTimestamp"]) / 1000


async def test_fifo_message_carries_group_and_dedup_ids_and_is_keyed_by_group(
    moto_server: str,
) -> None:
    async with sqs_client(moto_server) as c:
        url = await make_queue(c, fifo=True)
        await c.send_message(
            QueueUrl=url, MessageBody="one", MessageGroupId="g-1", MessageDeduplicationId="d-1"
        )
        src = source(url, moto_server)
        await src.start()
        try:
            [rec] = await take(src, 1)
        finally:
            await src.stop()
    attrs = rec.payload["attributes"]
    assert attrs["MessageGroupId"] == "g-1"
    assert attrs["MessageDeduplicationId"] == "d-1"
    assert "messageAttributes" in rec.payload and rec.payload["messageAttributes"] == {}
    assert "md5OfMessageAttributes" not in rec.payload
    assert rec.key == "g-1"


async def test_missing_queue_is_a_config_error_at_start_without_secrets(
    moto_server: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    url = f"{moto_server}/123456789012/no-such-queue"
    src = source(url, moto_server, aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key=SECRET)
    with pytest.raises(ConfigError) as info:
        await src.start()
    message = str(info.value)
    assert "no-such-queue" in message and "NonExistentQueue" in message
    assert SECRET not in message
    assert SECRET not in caplog.text
    assert SECRET not in repr(src.config) and SECRET not in str(src.config.model_dump())


async def test_unreachable_endpoint_is_retryable_and_names_it() -> None:
    url = "http://127.0.0.1:9/123456789012/q"
    src = source(url, "http://127.0.0.1:9")
    with pytest.raises(RetryableError, match="cannot reach the SQS endpoint"):
        await src.start()


async def test_a_start_deferred_while_the_endpoint_was_down_succeeds_once_it_answers(
    moto_server: str,
) -> None:
    """The daemon tries a deferred start again (`source.start_deferred`): the client the
    failed start closed must not be the one it tries with (it failed for good before)."""
    async with sqs_client(moto_server) as c:
        url = await make_queue(c)
        await c.send_message(QueueUrl=url, MessageBody="after the outage")
        relay = Relay(free_port(), moto_server)
        src = source(url.replace(moto_server, relay.url), relay.url)
        with pytest.raises(RetryableError, match="cannot reach the SQS endpoint"):
            await src.start()
        await relay.start()
        try:
            await src.start()
            [rec] = await take(src, 1)
            assert rec.payload["body"] == "after the outage"
            await src.ack([rec])
        finally:
            await src.stop()
            await relay.stop()
        assert await depth(c, url) == 0


async def test_a_5xx_page_from_a_proxy_at_start_is_retryable_not_a_config_error() -> None:
    async with error_page(503) as endpoint:
        src = source(f"{endpoint}/123456789012/q", endpoint)
        with pytest.raises(RetryableError, match=r"answered HTTP 503 \(503: Service Unav"):
            await src.start()
        config = SqsDestinationConfig.model_validate(
            {"type": "sqs", "queue_url": f"{endpoint}/123456789012/dest"}
        )
        ctx = DestinationContext(trigger="t", clock=SystemClock(), log=logging.getLogger("t"))
        dest = SqsDestination(config, ctx)
        await dest.start()  # logged; `send` asks again
        try:
            with pytest.raises(RetryableError, match="answered HTTP 503"):
                await dest.send({"version": "1.0"})
        finally:
            await dest.stop()


async def test_an_endpoint_answering_200_with_a_web_page_is_a_config_error() -> None:
    """botocore parses any 200 body into an empty answer: the source started (the ARN made
    up from the URL, a visibility of 30 s) and every receive came back empty, silently."""
    async with error_page(200) as endpoint:
        src = source(f"{endpoint}/123456789012/q", endpoint)
        with pytest.raises(ConfigError, match=r"the answer has no Attributes \(text/html"):
            await src.start()
        config = SqsDestinationConfig.model_validate(
            {"type": "sqs", "queue_url": f"{endpoint}/123456789012/dest"}
        )
        ctx = DestinationContext(trigger="t", clock=SystemClock(), log=logging.getLogger("t"))
        with pytest.raises(ConfigError, match=r"on_failure\.queue_url .*no Attributes"):
            await SqsDestination(config, ctx).start()


async def test_a_queue_with_visibility_timeout_zero_is_refused_at_start(moto_server: str) -> None:
    """Each message would be received again at once while the function runs (one message
    with a 3-second function was invoked 84 times in 8 seconds)."""
    async with sqs_client(moto_server) as c:
        url = await make_queue(c, VisibilityTimeout="0")
        with pytest.raises(ConfigError, match=r"VisibilityTimeout is 0.*visibility_timeout_s"):
            await source(url, moto_server).start()
        src = source(url, moto_server, visibility_timeout_s=5)
        await src.start()
        try:
            assert src.visibility_s == 5
        finally:
            await src.stop()


async def test_nack_visibility_zero_makes_the_message_visible_at_once(moto_server: str) -> None:
    async with sqs_client(moto_server) as c:
        url = await make_queue(c, VisibilityTimeout="60")
        await c.send_message(QueueUrl=url, MessageBody="again")
        src = source(url, moto_server, nack_visibility_timeout_s=0)
        await src.start()
        try:
            [rec] = await take(src, 1)
            await src.nack([rec])
            [again] = await take(src, 1)
            assert again.item_id == rec.item_id
            assert again.payload["attributes"]["ApproximateReceiveCount"] == "2"
            await src.ack([again])
        finally:
            await src.stop()
        assert await depth(c, url) == 0


async def test_default_nack_leaves_the_message_to_its_visibility_timeout(
    moto_server: str,
) -> None:
    async with sqs_client(moto_server) as c:
        url = await make_queue(c, VisibilityTimeout="60")
        await c.send_message(QueueUrl=url, MessageBody="later")
        src = source(url, moto_server)
        await src.start()
        try:
            [rec] = await take(src, 1)
            await src.nack([rec])
            assert await src.receive(10, 1.5) == []
            assert src.outstanding == 0, "no longer extended"
        finally:
            await src.stop()
        assert await depth(c, url) == 1


async def test_stop_makes_buffered_undelivered_messages_visible_again(moto_server: str) -> None:
    async with sqs_client(moto_server) as c:
        url = await make_queue(c, VisibilityTimeout="60")
        for i in range(5):
            await c.send_message(QueueUrl=url, MessageBody=f"m{i}")
        src = source(url, moto_server)
        await src.start()
        [first] = await take(src, 1)
        await src.ack([first])
        deadline = time.monotonic() + 10
        while src.outstanding < 4 and time.monotonic() < deadline:
            await src.receive(0, 0.1)
        await src.stop()
        back = await drain(c, url)
        assert sorted(m["Body"] for m in back) == ["m1", "m2", "m3", "m4"]


async def test_sqs_destination_sends_the_record_as_the_json_body(moto_server: str) -> None:
    async with sqs_client(moto_server) as c:
        url = await make_queue(c, "dest")
        config = SqsDestinationConfig.model_validate(
            {"type": "sqs", "queue_url": url, "endpoint_url": moto_server}
        )
        ctx = DestinationContext(trigger="t", clock=SystemClock(), log=logging.getLogger("t"))
        dest = SqsDestination(config, ctx)
        await dest.start()
        record = {"version": "1.0", "requestContext": {"condition": "RetryAttemptsExhausted"}}
        try:
            await dest.send(record)
        finally:
            await dest.stop()
        [message] = await drain(c, url)
        assert json.loads(message["Body"]) == record


async def test_sqs_destination_without_a_region_uses_the_daemons(moto_server: str) -> None:
    async with sqs_client(moto_server, region="eu-west-1") as c:
        url = await make_queue(c, "dest-eu")
        config = SqsDestinationConfig.model_validate(
            {"type": "sqs", "queue_url": url, "endpoint_url": moto_server}
        )
        log = logging.getLogger("t")
        ctx = DestinationContext(trigger="t", clock=SystemClock(), log=log, region="eu-west-1")
        dest = SqsDestination(config, ctx)
        await dest.start()  # GetQueueAttributes: moto keeps queues per region
        try:
            await dest.send({"version": "1.0"})
        finally:
            await dest.stop()
        [message] = await drain(c, url)
        assert json.loads(message["Body"]) == {"version": "1.0"}


async def test_sqs_destination_starts_while_its_endpoint_is_down_and_sends_once_it_answers(
    moto_server: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An on-failure queue not reachable at start is logged, not a crash of the daemon (it
    was a traceback and exit status 1): `send` raises until it answers, the pipeline retries."""
    async with sqs_client(moto_server) as c:
        url = await make_queue(c, "dest", MaximumMessageSize="1024")
        relay = Relay(free_port(), moto_server)
        config = SqsDestinationConfig.model_validate(
            {"type": "sqs", "queue_url": url.replace(moto_server, relay.url)}
        )
        ctx = DestinationContext(trigger="t", clock=SystemClock(), log=logging.getLogger("t"))
        dest = SqsDestination(config, ctx)
        await dest.start()
        assert "destination.sqs.unavailable" in caplog.messages
        try:
            with pytest.raises(RetryableError, match="cannot reach the SQS endpoint"):
                await dest.send({"version": "1.0"})
            await relay.start()
            await dest.send({"version": "1.0", "payload": "x" * 2000})
            assert dest.max_bytes == 1024, "the queue's MaximumMessageSize, read late"
        finally:
            await dest.stop()
            await relay.stop()
        [message] = await drain(c, url)
        assert json.loads(message["Body"]) == {"version": "1.0"}


async def test_sqs_destination_send_raises_when_the_queue_is_gone(moto_server: str) -> None:
    async with sqs_client(moto_server) as c:
        url = await make_queue(c, "dest")
        config = SqsDestinationConfig.model_validate(
            {"type": "sqs", "queue_url": url, "endpoint_url": moto_server}
        )
        ctx = DestinationContext(trigger="t", clock=SystemClock(), log=logging.getLogger("t"))
        dest = SqsDestination(config, ctx)
        await dest.start()
        await c.delete_queue(QueueUrl=url)
        try:
            with pytest.raises(Exception, match=r"NonExistentQueue|does not exist"):
                await dest.send({"version": "1.0"})
        finally:
            await dest.stop()
