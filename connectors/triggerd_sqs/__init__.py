"""The `sqs` source (Lambda's SQS event source mapping) and the `sqs` on-failure destination.

Importing this package is cheap: aiobotocore is imported only when a source or destination
starts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from triggerd.types import (
    Destination,
    DestinationContext,
    DestinationPlugin,
    JSONDict,
    Source,
    SourceContext,
    SourcePlugin,
    plugin_config,
)

from .config import SqsDestinationConfig, SqsSourceConfig


def create(config: Any, ctx: SourceContext) -> Source:
    from .source import SqsSource

    return SqsSource(plugin_config(config, SqsSourceConfig), ctx)


def create_destination(config: Any, ctx: DestinationContext) -> Destination:
    from .destination import SqsDestination

    return SqsDestination(plugin_config(config, SqsDestinationConfig), ctx)


SAMPLE_OPTIONS = {
    "body": 'message body (default {"hello": "world"})',
    "queue": "queue name in the ARN (default my-queue; .fifo is added with group)",
    "region": "awsRegion (default us-east-1)",
    "account": "account id in the ARN (default 123456789012)",
    "group": "MessageGroupId: makes it a FIFO queue's message",
}


def sample_event(options: Mapping[str, str]) -> JSONDict:
    """`triggerd generate-event sqs [body=..] [queue=..] [region=..] [account=..] [group=..]`."""
    from .shape import sample_sqs_event

    return sample_sqs_event(options)


async def check(config: Any, trigger: str, region: str) -> None:
    """`triggerd validate --connect`: GetQueueAttributes on the queue with these credentials
    (ConfigError naming the queue; RetryableError when SQS cannot be reached), signed for the
    region the source would use (`region` is the daemon's)."""
    from contextlib import AsyncExitStack

    from .client import open_client, queue_attributes

    cfg = plugin_config(config, SqsSourceConfig)
    async with AsyncExitStack() as stack:
        client = await open_client(stack, cfg, cfg.region_or(region), pool=1, read_timeout_s=10)
        await queue_attributes(client, cfg, trigger, "source")


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
