"""The `kafka` source (self-managed Apache Kafka event source mapping) and the `kafka`
on-failure destination.

Importing this package is cheap: aiokafka is imported only when a source or destination is
created.
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

from .config import KafkaDestinationConfig, KafkaSourceConfig
from .shape import sample_event as _sample


def create(config: Any, ctx: SourceContext) -> Source:
    from .client import import_aiokafka

    aiokafka = import_aiokafka()
    from .source import KafkaSource

    if not isinstance(config, KafkaSourceConfig):
        raise TypeError(f"expected KafkaSourceConfig, got {type(config).__name__}")
    return KafkaSource(config, ctx, aiokafka)


def create_destination(config: Any, ctx: DestinationContext) -> Destination:
    from .client import import_aiokafka
    from .destination import KafkaDestination

    if not isinstance(config, KafkaDestinationConfig):
        raise TypeError(f"expected KafkaDestinationConfig, got {type(config).__name__}")
    return KafkaDestination(config, ctx, import_aiokafka())


def sample_event(options: Mapping[str, str]) -> JSONDict:
    """`triggerd generate-event kafka [topic=..] [partition=..] [key=..] [value=..]
    [headers=name:value,...] ...`."""
    return _sample(options)


plugin = SourcePlugin(config_model=KafkaSourceConfig, create=create, sample_event=sample_event)
destination_plugin = DestinationPlugin(
    config_model=KafkaDestinationConfig, create=create_destination
)

__all__ = [
    "KafkaDestinationConfig",
    "KafkaSourceConfig",
    "create",
    "create_destination",
    "destination_plugin",
    "plugin",
    "sample_event",
]
