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
)

from .config import SqsDestinationConfig, SqsSourceConfig


def create(config: Any, ctx: SourceContext) -> Source:
    from .source import SqsSource

    if not isinstance(config, SqsSourceConfig):
        raise TypeError(f"expected SqsSourceConfig, got {type(config).__name__}")
    return SqsSource(config, ctx)


def create_destination(config: Any, ctx: DestinationContext) -> Destination:
    from .destination import SqsDestination

    if not isinstance(config, SqsDestinationConfig):
        raise TypeError(f"expected SqsDestinationConfig, got {type(config).__name__}")
    return SqsDestination(config, ctx)


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
