"""The plugin of `triggerd_dynamodb_streams` (see the package): its config model, `create` and
the hooks the CLI uses."""

from __future__ import annotations

from typing import Any

from triggerd.types import Source, SourceContext, SourcePlugin, plugin_config

from . import SAMPLE_OPTIONS, sample_event
from .config import DynamoDBStreamsSourceConfig

__all__ = ["DynamoDBStreamsSourceConfig", "check", "create", "plugin", "sample_event"]


def create(config: Any, ctx: SourceContext) -> Source:
    from .source import DynamoDBStreamsSource

    return DynamoDBStreamsSource(plugin_config(config, DynamoDBStreamsSourceConfig), ctx)


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
