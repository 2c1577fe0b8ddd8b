"""The aiobotocore Kinesis client and the `ShardApi` over it (triggerd.delivery.shards):
GetRecords errors mapped to the reader's throttling and expiry types; credentials from the
config or the standard chain (never logged)."""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

from triggerd.config import aws
from triggerd.config.aws import error_code
from triggerd.delivery.shardcalls import call, shard_call
from triggerd.delivery.shards import (
    Page,
    ShardInfo,
    Trimmed,
)
from triggerd.types import ConfigError, RetryableError

from .config import KinesisSourceConfig

__all__ = ["KinesisApi", "error_code", "open_client", "stream_arn", "stream_summary"]


async def open_client(stack: AsyncExitStack, config: KinesisSourceConfig, region: str) -> Any:
    """A Kinesis client registered on `stack` (closed when the stack closes)."""
    return await aws.open_client(
        stack,
        "kinesis",
        extra="kinesis",
        needed_by="the kinesis connector",
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


async def stream_arn(client: Any, config: KinesisSourceConfig, trigger: str) -> str:
    """The stream's ARN; a ConfigError naming the stream when it cannot be used."""
    return str((await stream_summary(client, config, trigger))["StreamARN"])


async def stream_summary(client: Any, config: KinesisSourceConfig, trigger: str) -> Any:
    """DescribeStreamSummary's StreamDescriptionSummary; a ConfigError naming the stream when
    it cannot be used, a RetryableError when the server may get over it."""
    try:
        response = await client.describe_stream_summary(**_stream_args(config))
    except Exception as exc:  # classify: unreachable or busy is retryable, the rest the config's
        code = error_code(exc)
        if code is None:
            raise RetryableError(
                f"trigger {trigger!r}: source.stream {config.stream}: cannot reach Kinesis "
                f"({type(exc).__name__}: {exc})"
            ) from None
        if aws.transient(exc):  # throttled (DescribeStreamSummary: 20 calls/s), a 5xx
            raise RetryableError(
                f"trigger {trigger!r}: source.stream {config.stream}: Kinesis answered {code}"
            ) from None
        raise ConfigError([f"trigger {trigger!r}: source.stream {config.stream}: {code}"]) from None
    return response["StreamDescriptionSummary"]


def _stream_args(config: KinesisSourceConfig) -> dict[str, str]:
    arn = config.stream_arn
    return {"StreamARN": arn} if arn else {"StreamName": config.stream_name}


class KinesisApi:
    """ShardApi of one Kinesis stream."""

    def __init__(self, client: Any, arn: str) -> None:
        self.client = client
        self.arn = arn

    async def list_shards(self) -> list[ShardInfo]:
        shards: list[ShardInfo] = []
        args: dict[str, Any] = {"StreamARN": self.arn}
        while True:
            response = await call(self.client.list_shards, **args)
            for shard in response.get("Shards") or []:
                parents = tuple(
                    p for p in (shard.get("ParentShardId"), shard.get("AdjacentParentShardId")) if p
                )
                ending = (shard.get("SequenceNumberRange") or {}).get("EndingSequenceNumber")
                shards.append(ShardInfo(str(shard["ShardId"]), parents, ending))
            token = response.get("NextToken")
            if not token:
                return shards
            args = {"NextToken": token}

    async def iterator(
        self, shard_id: str, kind: str, *, sequence: str | None, timestamp: float | None
    ) -> str:
        args: dict[str, Any] = {
            "StreamARN": self.arn,
            "ShardId": shard_id,
            "ShardIteratorType": kind,
        }
        if sequence is not None:
            args["StartingSequenceNumber"] = sequence
        if timestamp is not None:
            args["Timestamp"] = timestamp
        try:
            response = await shard_call(self.client.get_shard_iterator, **args)
        except Exception as exc:
            if sequence is not None and error_code(exc) == "InvalidArgumentException":
                # Kinesis refuses a starting sequence number past the shard's retention.
                raise Trimmed("InvalidArgumentException") from exc
            raise
        return str(response["ShardIterator"])

    async def get_records(self, iterator: str, limit: int) -> Page:
        response = await shard_call(
            self.client.get_records, ShardIterator=iterator, Limit=limit, StreamARN=self.arn
        )
        return Page(
            list(response.get("Records") or []),
            response.get("NextShardIterator"),
            response.get("MillisBehindLatest"),
        )
