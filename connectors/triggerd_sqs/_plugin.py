"""The plugin of `triggerd_sqs` (see the package): its config model, `create` and
the hooks the CLI uses."""

from __future__ import annotations

from typing import Any

from triggerd.types import (
    Destination,
    DestinationContext,
    DestinationPlugin,
    Source,
    SourceContext,
    SourcePlugin,
    plugin_config,
)

from . import SAMPLE_OPTIONS, sample_event
from .config import SqsDestinationConfig, SqsSourceConfig


def create(config: Any, ctx: SourceContext) -> Source:
    from .source import SqsSource

    return SqsSource(plugin_config(config, SqsSourceConfig), ctx)


def create_destination(config: Any, ctx: DestinationContext) -> Destination:
    from .destination import SqsDestination

    return SqsDestination(plugin_config(config, SqsDestinationConfig), ctx)


async def check(config: Any, trigger: str, region: str) -> None:
    """`triggerd validate --connect`: GetQueueAttributes on the queue with these credentials
    (ConfigError naming the queue; RetryableError when SQS cannot be reached), signed for the
    region the source would use (`region` is the daemon's)."""
    from contextlib import AsyncExitStack

    from .client import open_client, queue_attributes
    from .source import check_visibility

    cfg = plugin_config(config, SqsSourceConfig)
    async with AsyncExitStack() as stack:
        client = await open_client(stack, cfg, cfg.region_or(region), pool=1, read_timeout_s=10)
        attrs = await queue_attributes(client, cfg, trigger, "source")
    check_visibility(cfg, attrs, trigger)


plugin = SourcePlugin(
    config_model=SqsSourceConfig,
    create=create,
    sample_event=sample_event,
    sample_options=SAMPLE_OPTIONS,
    check_in_region=check,
)
destination_plugin = DestinationPlugin(config_model=SqsDestinationConfig, create=create_destination)

__all__ = [
    "SqsDestinationConfig",
    "SqsSourceConfig",
    "check",
    "create",
    "create_destination",
    "destination_plugin",
    "plugin",
    "sample_event",
]
