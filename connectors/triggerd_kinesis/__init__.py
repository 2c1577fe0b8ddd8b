"""The `kinesis` source (Lambda's Kinesis event source mapping).

Importing this package is cheap: aiobotocore is imported only when the source starts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from triggerd.types import JSONDict, Source, SourceContext, SourcePlugin, plugin_config

from .config import KinesisSourceConfig

__all__ = ["KinesisSourceConfig", "check", "create", "plugin", "sample_event"]


def create(config: Any, ctx: SourceContext) -> Source:
    from .source import KinesisSource

    return KinesisSource(plugin_config(config, KinesisSourceConfig), ctx)


SAMPLE_OPTIONS = {
    "data": "the record's data, base64-encoded in the event (default a sentence)",
    "partition_key": "partitionKey (default user-1)",
    "stream": "stream name in eventSourceARN (default my-stream)",
    "shard": "shard id in eventID (default shardId-000000000006)",
    "sequence": "sequenceNumber",
    "region": "awsRegion (default us-east-1)",
    "account": "account id in the ARNs (default 123456789012)",
    "timestamp": "approximateArrivalTimestamp, epoch seconds (default 1545084650.987)",
}


def sample_event(options: Mapping[str, str]) -> JSONDict:
    from .shape import sample_event as sample

    return sample(options)


async def check(config: Any, trigger: str, region: str) -> None:
    """`triggerd validate`: the stream exists and these credentials may describe it
    (ConfigError naming the stream; RetryableError when Kinesis cannot be reached)."""
    from contextlib import AsyncExitStack

    from .client import open_client, stream_arn

    cfg = plugin_config(config, KinesisSourceConfig)
    async with AsyncExitStack() as stack:
        client = await open_client(stack, cfg, cfg.region_or(region))
        await stream_arn(client, cfg, trigger)


plugin = SourcePlugin(
    config_model=KinesisSourceConfig,
    create=create,
    sample_event=sample_event,
    sample_options=SAMPLE_OPTIONS,
    check_in_region=check,
)
