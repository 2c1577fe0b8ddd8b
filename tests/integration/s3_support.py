"""Helpers for the s3 source's integration tests: aiobotocore clients on moto_server, unique
bucket/queue names, sources on a SQLite store, and a pump that does what the async path does."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import orjson
from triggerd_s3 import S3SourceConfig, create
from triggerd_s3.notifications import NotificationSource
from triggerd_s3.poll import PollSource

from triggerd.state.base import NewEvent
from triggerd.state.sqlite import SQLiteStateStore
from triggerd.types import Record, Source, SourceContext, SystemClock

TRIGGER = "s3t"


def unique(prefix: str) -> str:
    """A bucket / queue name: 3-63 characters, unique per call."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@asynccontextmanager
async def aws_clients(endpoint: str) -> AsyncIterator[tuple[Any, Any]]:
    import aiobotocore.session

    session = aiobotocore.session.get_session()
    async with AsyncExitStack() as stack:
        s3 = await stack.enter_async_context(
            session.create_client("s3", region_name="us-east-1", endpoint_url=endpoint)
        )
        sqs = await stack.enter_async_context(
            session.create_client("sqs", region_name="us-east-1", endpoint_url=endpoint)
        )
        yield s3, sqs


async def notifying_bucket(
    s3: Any, sqs: Any, *, visibility_s: int = 30, events: list[str] | None = None
) -> tuple[str, str]:
    """A bucket publishing its events to a new queue; returns (bucket, queue_url)."""
    bucket = unique("nb")
    await s3.create_bucket(Bucket=bucket)
    queue_url = (
        await sqs.create_queue(
            QueueName=unique("nq"), Attributes={"VisibilityTimeout": str(visibility_s)}
        )
    )["QueueUrl"]
    attrs = await sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
    await s3.put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={
            "QueueConfigurations": [
                {
                    "Id": "cfg-1",
                    "QueueArn": attrs["Attributes"]["QueueArn"],
                    "Events": events or ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"],
                }
            ]
        },
    )
    return bucket, queue_url


async def queue_depth(sqs: Any, queue_url: str) -> int:
    """Visible plus in-flight messages."""
    attrs = await sqs.get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )
    a = attrs["Attributes"]
    return int(a["ApproximateNumberOfMessages"]) + int(a["ApproximateNumberOfMessagesNotVisible"])


def make_config(endpoint: str, bucket: str, **options: Any) -> S3SourceConfig:
    return S3SourceConfig.model_validate(
        {"type": "s3", "bucket": bucket, "endpoint_url": endpoint, **options}
    )


def make_source(
    config: S3SourceConfig, store: SQLiteStateStore, log: str = "test.s3"
) -> PollSource | NotificationSource:
    ctx = SourceContext(
        trigger=TRIGGER, state=store, clock=SystemClock(), log=logging.getLogger(log)
    )
    source = create(config, ctx)
    assert isinstance(source, PollSource | NotificationSource)
    return source


async def pump(
    source: Source,
    store: SQLiteStateStore,
    count: int,
    timeout_s: float = 15.0,
    *,
    ack: bool = True,
) -> list[Record]:
    """Enqueue each record with its checkpoint in one transaction, then ack (the async path)."""
    got: list[Record] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < count and time.monotonic() < deadline:
        batch = await source.receive(count - len(got), 0.2)
        if not batch:
            continue
        if ack:
            now = time.time()
            events = [
                NewEvent(
                    TRIGGER,
                    "fn",
                    orjson.dumps(source.envelope([r])),
                    uuid.uuid4().hex,
                    now,
                    now,
                )
                for r in batch
            ]
            checkpoint: dict[str, str | None] = {}
            for r in batch:
                checkpoint.update(r.checkpoint or {})
            await store.enqueue(events, {TRIGGER: checkpoint})
            await source.ack(batch)
        got.extend(batch)
    assert len(got) == count, f"expected {count} records, got {len(got)}"
    return got


def events_of(records: list[Record]) -> list[tuple[str, str]]:
    return sorted((r.payload["eventName"], r.payload["s3"]["object"]["key"]) for r in records)
