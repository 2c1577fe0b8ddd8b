"""The `dynamodb_streams` source (Lambda's DynamoDB Streams event source mapping).

Importing this package is cheap: aiobotocore is imported only when the source starts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from triggerd.types import JSONDict, Source, SourceContext, SourcePlugin, plugin_config

from .config import DynamoDBStreamsSourceConfig

__all__ = ["DynamoDBStreamsSourceConfig", "check", "create", "plugin", "sample_event"]


def create(config: Any, ctx: SourceContext) -> Source:
    from .source import DynamoDBStreamsSource

    return DynamoDBStreamsSource(plugin_config(config, DynamoDBStreamsSourceConfig), ctx)


SAMPLE_OPTIONS = {
    "event_name": "INSERT, MODIFY (default) or REMOVE",
    "table": "table name in eventSourceARN (default orders)",
    "view": "StreamViewType: KEYS_ONLY, NEW_IMAGE, OLD_IMAGE or NEW_AND_OLD_IMAGES (default)",
    "sequence": "SequenceNumber",
    "region": "awsRegion (default us-east-1)",
    "account": "account id in the ARNs (default 123456789012)",
}


def sample_event(options: Mapping[str, str]) -> JSONDict:
    from .shape import sample_event as sample

    return sample(options)


async def check(config: Any, trigger: str, region: str) -> None:
    """`triggerd validate`: the table has a stream (or the stream ARN exists) and these
    credentials may describe it (ConfigError; RetryableError when DynamoDB cannot be
    reached)."""
    from contextlib import AsyncExitStack

    from .client import resolve_stream

    cfg = plugin_config(config, DynamoDBStreamsSourceConfig)
    async with AsyncExitStack() as stack:
        await resolve_stream(stack, cfg, cfg.region_or(region), trigger)


plugin = SourcePlugin(
    config_model=DynamoDBStreamsSourceConfig,
    create=create,
    sample_event=sample_event,
    sample_options=SAMPLE_OPTIONS,
    check_in_region=check,
)
