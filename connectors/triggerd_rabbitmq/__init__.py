"""The `rabbitmq` source (Amazon MQ for RabbitMQ event source mapping) and the `rabbitmq`
on-failure destination.

Importing this package is cheap: aio-pika is imported only when a source or destination is
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
    plugin_config,
)

from .config import RabbitMQDestinationConfig, RabbitMQSourceConfig
from .shape import sample_event as _sample


def create(config: Any, ctx: SourceContext) -> Source:
    from .connection import import_aio_pika
    from .source import RabbitMQSource

    return RabbitMQSource(plugin_config(config, RabbitMQSourceConfig), ctx, import_aio_pika())


def create_destination(config: Any, ctx: DestinationContext) -> Destination:
    from .connection import import_aio_pika
    from .destination import RabbitMQDestination

    return RabbitMQDestination(
        plugin_config(config, RabbitMQDestinationConfig), ctx, import_aio_pika()
    )


def sample_event(options: Mapping[str, str]) -> JSONDict:
    """`triggerd generate-event rabbitmq [queue=..] [vhost=..] [body=..] ...`."""
    return _sample(options)


plugin = SourcePlugin(config_model=RabbitMQSourceConfig, create=create, sample_event=sample_event)
destination_plugin = DestinationPlugin(
    config_model=RabbitMQDestinationConfig, create=create_destination
)

__all__ = [
    "RabbitMQDestinationConfig",
    "RabbitMQSourceConfig",
    "create",
    "create_destination",
    "destination_plugin",
    "plugin",
    "sample_event",
]
