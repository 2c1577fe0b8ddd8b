"""The aiobotocore DynamoDB Streams client and the `ShardApi` over it
(triggerd.delivery.shards): errors mapped to the reader's throttling and expiry types;
credentials from the config or the standard chain (never logged)."""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

from triggerd.config import aws
from triggerd.config.aws import error_code
from triggerd.delivery.shardcalls import call, shard_call
from triggerd.delivery.shards import (
    Page,
    ShardInfo,
)
from triggerd.types import ConfigError, RetryableError

from .config import DynamoDBStreamsSourceConfig

__all__ = ["StreamsApi", "error_code", "open_client", "resolve_stream"]


async def open_client(
    stack: AsyncExitStack, config: DynamoDBStreamsSourceConfig, region: str, service: str
) -> Any:
    """A `dynamodbstreams` (or `dynamodb`) client registered on `stack`."""
    return await aws.open_client(
        stack,
        service,
        extra="dynamodb_streams",
        needed_by="the dynamodb_streams connector",
        region=region,
        endpoint_url=config.endpoint_url,
        credentials=config.client_credentials(),
        connect_timeout=10,
        read_timeout=30,
        max_pool_connections=50,
        # Throttling is the reader's to back off from (with the shard blocked meanwhile).
        retries={"mode": "standard", "max_attempts": 1},
        # Arrival times as epoch seconds, data as base64 text: as the records' shape wants
        # them, without a datetime and a decode/encode per record.
        wire_values=True,
    )


async def resolve_stream(
    stack: AsyncExitStack, config: DynamoDBStreamsSourceConfig, region: str, trigger: str
) -> tuple[str, str]:
    """(stream ARN, StreamViewType); a ConfigError naming the stream or table when it cannot
    be used (no such table, streams not enabled)."""
    where = f"trigger {trigger!r}: source.stream {config.stream}"
    arn = config.stream_arn
    try:
        if arn is None:
            dynamodb = await open_client(stack, config, region, "dynamodb")
            table = (await dynamodb.describe_table(TableName=config.table_name))["Table"]
            arn = table.get("LatestStreamArn")
            if not arn or not (table.get("StreamSpecification") or {}).get("StreamEnabled"):
                raise ConfigError([f"{where}: the table has no stream enabled"])
        streams = await open_client(stack, config, region, "dynamodbstreams")
        description = (await streams.describe_stream(StreamArn=arn, Limit=1))["StreamDescription"]
    except ConfigError:
        raise
    except Exception as exc:  # classify: unreachable or busy is retryable, the rest the config's
        code = error_code(exc)
        if code is None:
            raise RetryableError(
                f"{where}: cannot reach DynamoDB ({type(exc).__name__}: {exc})"
            ) from None
        if aws.transient(exc):  # throttled (DescribeStream: 10 calls/s), a 5xx
            raise RetryableError(f"{where}: DynamoDB answered {code}") from None
        raise ConfigError([f"{where}: {code}"]) from None
    return str(arn), str(description.get("StreamViewType", ""))


class StreamsApi:
    """ShardApi of one DynamoDB stream."""

    def __init__(self, client: Any, arn: str) -> None:
        self.client = client
        self.arn = arn

    async def list_shards(self) -> list[ShardInfo]:
        shards: list[ShardInfo] = []
        args: dict[str, Any] = {"StreamArn": self.arn}
        while True:
            response = await call(self.client.describe_stream, **args)
            description = response["StreamDescription"]
            for shard in description.get("Shards") or []:
                parent = shard.get("ParentShardId")
                ending = (shard.get("SequenceNumberRange") or {}).get("EndingSequenceNumber")
                shards.append(ShardInfo(str(shard["ShardId"]), (parent,) if parent else (), ending))
            last = description.get("LastEvaluatedShardId")
            if not last:
                return shards
            args = {"StreamArn": self.arn, "ExclusiveStartShardId": last}

    async def iterator(
        self, shard_id: str, kind: str, *, sequence: str | None, timestamp: float | None
    ) -> str:
        if kind == "AT_TIMESTAMP":
            # DynamoDB Streams has no AT_TIMESTAMP: from the oldest record kept (24 hours at
            # most); the reader skips the records created before `timestamp`.
            kind = "TRIM_HORIZON"
        args: dict[str, Any] = {
            "StreamArn": self.arn,
            "ShardId": shard_id,
            "ShardIteratorType": kind,
        }
        if sequence is not None:
            args["SequenceNumber"] = sequence
        response = await shard_call(self.client.get_shard_iterator, **args)
        return str(response["ShardIterator"])

    async def get_records(self, iterator: str, limit: int) -> Page:
        response = await shard_call(self.client.get_records, ShardIterator=iterator, Limit=limit)
        return Page(list(response.get("Records") or []), response.get("NextShardIterator"))
