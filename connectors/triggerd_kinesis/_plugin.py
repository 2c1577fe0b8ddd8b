"""The plugin of `triggerd_kinesis` (see the package): its config model, `create` and
the hooks the CLI uses."""

from __future__ import annotations

from typing import Any

from triggerd.types import Source, SourceContext, SourcePlugin, plugin_config

from . import SAMPLE_OPTIONS, sample_event
from .config import KinesisSourceConfig

__all__ = ["KinesisSourceConfig", "check", "create", "plugin", "sample_event"]


def create(config: Any, ctx: SourceContext) -> Source:
    from .source import KinesisSource

    return KinesisSource(plugin_config(config, KinesisSourceConfig), ctx)


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
