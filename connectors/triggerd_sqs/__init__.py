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


def sample_event(options: Mapping[str, str]) -> JSONDict:
    """`triggerd generate-event sqs [body=..] [queue=..] [region=..] [account=..] [group=..]`."""
    from .shape import sample_sqs_event

    return sample_sqs_event(options)


plugin = SourcePlugin(config_model=SqsSourceConfig, create=create, sample_event=sample_event)
destination_plugin = DestinationPlugin(config_model=SqsDestinationConfig, create=create_destination)

__all__ = [
    "SqsDestinationConfig",
    "SqsSourceConfig",
    "create",
    "create_destination",
    "destination_plugin",
    "plugin",
    "sample_event",
]
