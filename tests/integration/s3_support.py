"""Helpers for the s3 source's integration tests: aiobotocore clients on moto_server, unique
bucket/queue names and sources on a SQLite store (tests.async_source pumps them)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from tests.async_source import TRIGGER
from triggerd.state.sqlite import SQLiteStateStore
from triggerd.types import SourceContext, SystemClock
from triggerd_s3 import S3SourceConfig, create
from triggerd_s3.notifications import NotificationSource
from triggerd_s3.poll import PollSource


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
