"""The s3 source in notifications mode: moto's S3 -> SQS notifications, the real SQLite store."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.async_source import events_of, pump
from tests.conftest import free_port
from tests.integration.relay import Relay
from tests.integration.s3_support import (
    aws_clients,
    make_config,
    make_source,
    notifying_bucket,
    queue_depth,
    unique,
)
from tests.integration.sqs_harness import error_page
from triggerd.state.sqlite import SQLiteStateStore
from triggerd.types import ConfigError, RetryableError
from triggerd_s3.notifications import NotificationSource

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("aws_env")]


@pytest.fixture
async def clients(moto_server: str) -> AsyncIterator[tuple[Any, Any]]:
    async with aws_clients(moto_server) as pair:
        yield pair


def listener(
    moto_server: str, bucket: str, queue_url: str, store: SQLiteStateStore, **options: Any
) -> NotificationSource:
    config = make_config(
        moto_server, bucket, mode="notifications", queue_url=queue_url, wait_time_s=1, **options
    )
    source = make_source(config, store)
    assert isinstance(source, NotificationSource)
    return source


async def wait_depth(sqs: Any, queue_url: str, depth: int, timeout_s: float = 30) -> None:
    async with asyncio.timeout(timeout_s):
        while await queue_depth(sqs, queue_url) != depth:
            await asyncio.sleep(0.05)


async def test_object_events_arrive_normalised_and_the_test_event_is_skipped(
    moto_server: str, clients: tuple[Any, Any], store: SQLiteStateStore
) -> None:
    s3, sqs = clients
    bucket, queue_url = await notifying_bucket(s3, sqs)
    await s3.put_object(Bucket=bucket, Key="red flower+1/ü.jpg", Body=b"12345")
    await s3.delete_object(Bucket=bucket, Key="red flower+1/ü.jpg")
    source = listener(moto_server, bucket, queue_url, store)
    await source.start()
    try:
        records = await pump(source, store, 2)
        await wait_depth(sqs, queue_url, 0)
        assert await source.receive(10, 0.3) == []
    finally:
        await source.stop()
    put, delete = (r.payload for r in records)
    assert put["eventName"] == "ObjectCreated:Put"
    assert put["eventVersion"] == "2.1"
    assert put["userIdentity"] == {"principalId": "123456789012"}
    assert put["requestParameters"] == {"sourceIPAddress": "127.0.0.1"}
    assert set(put["responseElements"]) == {"x-amz-request-id", "x-amz-id-2"}
    assert put["s3"]["configurationId"] == "cfg-1"
    assert put["s3"]["bucket"] == {
        "name": bucket,
        "ownerIdentity": {"principalId": "123456789012"},
        "arn": f"arn:aws:s3:::{bucket}",
    }
    obj = put["s3"]["object"]
    # moto encodes `/` too; the server's encoding is kept, unquote_plus gives the key back
    assert obj["key"] in ("red+flower%2B1/%C3%BC.jpg", "red+flower%2B1%2F%C3%BC.jpg")
    assert obj["size"] == 5 and len(obj["eTag"]) == 32
    assert "sequencer" not in obj  # moto sends none; we never invent one
    assert delete["eventName"] == "ObjectRemoved:Delete"
    assert set(delete["s3"]["object"]) == {"key"}


async def test_messages_left_in_the_queue_while_down_are_processed_after_start(
    moto_server: str, clients: tuple[Any, Any], store: SQLiteStateStore
) -> None:
    s3, sqs = clients
    bucket, queue_url = await notifying_bucket(s3, sqs, visibility_s=1)
    first = listener(moto_server, bucket, queue_url, store)
    await first.start()
    await s3.put_object(Bucket=bucket, Key="early", Body=b"e")
    try:
        await pump(first, store, 1, ack=False)  # received, never enqueued: a crash
    finally:
        await first.stop()
    for i in range(3):
        await s3.put_object(Bucket=bucket, Key=f"while-down-{i}", Body=b"x")
    second = listener(moto_server, bucket, queue_url, store)
    await second.start()
    try:
        records = await pump(second, store, 4)
        await wait_depth(sqs, queue_url, 0)
    finally:
        await second.stop()
    assert events_of(records) == [
        ("ObjectCreated:Put", "early"),
        ("ObjectCreated:Put", "while-down-0"),
        ("ObjectCreated:Put", "while-down-1"),
        ("ObjectCreated:Put", "while-down-2"),
    ]


async def test_prefix_suffix_and_event_rules_drop_and_delete_other_notifications(
    moto_server: str, clients: tuple[Any, Any], store: SQLiteStateStore
) -> None:
    s3, sqs = clients
    bucket, queue_url = await notifying_bucket(s3, sqs)
    source = listener(
        moto_server,
        bucket,
        queue_url,
        store,
        prefix="in/",
        suffix=".csv",
        events=["s3:ObjectCreated:Put"],
    )
    for key in ("in/a.csv", "in/b.txt", "out/c.csv", "in/d e.csv"):
        await s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    await s3.delete_object(Bucket=bucket, Key="in/a.csv")
    await source.start()
    try:
        records = await pump(source, store, 2)
        await wait_depth(sqs, queue_url, 0)
        assert await source.receive(10, 0.3) == []
    finally:
        await source.stop()
    assert [r.payload["eventName"] for r in records] == ["ObjectCreated:Put"] * 2
    assert sorted(r.payload["s3"]["object"]["key"].replace("%2F", "/") for r in records) == [
        "in/a.csv",
        "in/d+e.csv",
    ]


def notification(*keys: str, version_id: str | None = None) -> str:
    records = []
    for key in keys:
        obj: dict[str, Any] = {"key": key, "size": 1, "eTag": "abc", "sequencer": "00AB"}
        if version_id:
            obj["versionId"] = version_id
        records.append(
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "eventName": "ObjectCreated:Put",
                "s3": {"bucket": {"name": "b"}, "object": obj},
            }
        )
    return json.dumps({"Records": records})


async def test_a_message_with_two_records_is_deleted_once_both_are_acked(
    moto_server: str, clients: tuple[Any, Any], store: SQLiteStateStore
) -> None:
    _s3, sqs = clients
    queue_url = (await sqs.create_queue(QueueName=unique("mq")))["QueueUrl"]
    await sqs.send_message(
        QueueUrl=queue_url, MessageBody=notification("one", "two", version_id="v7")
    )
    # A second message, acked after the first record: once it is gone, any delete the
    # partial ack caused has been made too.
    await sqs.send_message(QueueUrl=queue_url, MessageBody=notification("barrier"))
    source = listener(moto_server, unique("bk"), queue_url, store)
    await source.start()
    try:
        got = await pump(source, store, 3, ack=False)
        barrier = [r for r in got if r.payload["s3"]["object"]["key"] == "barrier"]
        records = [r for r in got if r.payload["s3"]["object"]["key"] != "barrier"]
        await source.ack(records[:1])
        await source.ack(barrier)
        await wait_depth(sqs, queue_url, 1)
        assert await queue_depth(sqs, queue_url) == 1, "the half-acked message stays"
        await source.ack(records[1:])
        await wait_depth(sqs, queue_url, 0)
    finally:
        await source.stop()
    assert [r.payload["s3"]["object"]["versionId"] for r in records] == ["v7", "v7"]
    assert [r.payload["s3"]["object"]["sequencer"] for r in records] == ["00AB", "00AB"]
    assert records[0].item_id != records[1].item_id


async def test_a_body_that_is_not_a_notification_is_logged_and_left_in_the_queue(
    moto_server: str,
    clients: tuple[Any, Any],
    store: SQLiteStateStore,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _s3, sqs = clients
    queue_url = (await sqs.create_queue(QueueName=unique("mq")))["QueueUrl"]
    await sqs.send_message(QueueUrl=queue_url, MessageBody="not json at all")
    sns = json.dumps({"Type": "Notification", "Message": notification("via-sns")})
    await sqs.send_message(QueueUrl=queue_url, MessageBody=sns)
    caplog.set_level(logging.INFO, logger="test.s3")
    source = listener(moto_server, unique("bk"), queue_url, store)
    await source.start()
    try:
        [record] = await pump(source, store, 1)
        await wait_depth(sqs, queue_url, 1)
    finally:
        await source.stop()
    assert record.payload["s3"]["object"]["key"] == "via-sns"
    invalid = [r for r in caplog.records if r.getMessage() == "s3.invalid_notification"]
    assert invalid and "not JSON" in invalid[0].__dict__["error"]


async def test_a_missing_queue_is_a_config_error_at_start_without_the_secret(
    moto_server: str, store: SQLiteStateStore, caplog: pytest.LogCaptureFixture
) -> None:
    """As for an sqs trigger (exit 2). It started, reported itself running and logged
    s3.receive_failed every few seconds (up to 30 s apart), forever."""
    secret = "wJalrXUtnFEMI-QUEUE-SECRET"
    queue_url = f"{moto_server}/123456789012/{unique('nope')}"
    source = listener(
        moto_server,
        unique("bk"),
        queue_url,
        store,
        aws_access_key_id="AKIDQUEUE",
        aws_secret_access_key=secret,
    )
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ConfigError) as info:
        await source.start()
    await source.stop()
    [problem] = info.value.problems
    assert queue_url in problem and "NonExistentQueue" in problem
    assert secret not in problem and secret not in caplog.text


async def test_a_queue_endpoint_answering_200_with_a_web_page_is_a_config_error(
    store: SQLiteStateStore,
) -> None:
    async with error_page(200) as endpoint:
        source = listener(endpoint, unique("bk"), f"{endpoint}/123456789012/q", store)
        with pytest.raises(ConfigError, match="the answer has no Attributes"):
            await source.start()
        await source.stop()


async def test_a_queue_deleted_while_running_is_logged_without_the_secret(
    moto_server: str,
    clients: tuple[Any, Any],
    store: SQLiteStateStore,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, sqs = clients
    secret = "wJalrXUtnFEMI-QUEUE-SECRET"
    queue_url = (await sqs.create_queue(QueueName=unique("gone")))["QueueUrl"]
    source = listener(
        moto_server,
        unique("bk"),
        queue_url,
        store,
        aws_access_key_id="AKIDQUEUE",
        aws_secret_access_key=secret,
    )
    caplog.set_level(logging.DEBUG)
    await source.start()
    await sqs.delete_queue(QueueUrl=queue_url)
    try:
        async with asyncio.timeout(10):
            while not any(r.getMessage() == "s3.receive_failed" for r in caplog.records):
                await asyncio.sleep(0.05)
    finally:
        await source.stop()
    text = caplog.text + " ".join(str(r.__dict__) for r in caplog.records)
    assert secret not in text
    assert "NonExistentQueue" in text or "QueueDoesNotExist" in text


async def test_a_start_deferred_while_the_queue_endpoint_was_down_succeeds_once_it_answers(
    moto_server: str, clients: tuple[Any, Any], store: SQLiteStateStore
) -> None:
    s3, sqs = clients
    bucket, queue_url = await notifying_bucket(s3, sqs)
    await s3.put_object(Bucket=bucket, Key="after-the-outage", Body=b"x")
    relay = Relay(free_port(), moto_server)
    config = make_config(
        moto_server,
        bucket,
        mode="notifications",
        queue_url=queue_url.replace(moto_server, relay.url),
        sqs_endpoint_url=relay.url,
        wait_time_s=1,
    )
    source = make_source(config, store)
    with pytest.raises(RetryableError, match="cannot reach the endpoint"):
        await source.start()
    await relay.start()
    try:
        await source.start()
        records = await pump(source, store, 1)
        await wait_depth(sqs, queue_url, 0)
    finally:
        await source.stop()
        await relay.stop()
    assert events_of(records) == [("ObjectCreated:Put", "after-the-outage")]
