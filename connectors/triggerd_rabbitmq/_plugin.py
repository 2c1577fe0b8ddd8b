"""The plugin of `triggerd_rabbitmq` (see the package): its config model, `create` and
the hooks the CLI uses."""

from __future__ import annotations

from typing import Any

from triggerd.types import (
    ConfigError,
    Destination,
    DestinationContext,
    DestinationPlugin,
    PermanentError,
    Source,
    SourceContext,
    SourcePlugin,
    plugin_config,
)

from . import SAMPLE_OPTIONS, sample_event
from .config import RabbitMQDestinationConfig, RabbitMQSourceConfig


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


async def check(config: Any, trigger: str) -> None:
    """`triggerd validate --connect`: log in, then declare the queue passively (it exists
    and this user may use it). A refused login, vhost or queue is a ConfigError; a broker
    that does not answer a RetryableError."""
    from .connection import classify, import_aio_pika, open_connection

    cfg = plugin_config(config, RabbitMQSourceConfig)
    try:
        conn = await open_connection(import_aio_pika(), cfg, f"triggerd validate {trigger}")
        try:
            channel = await conn.channel()
            if not cfg.declare:
                await channel.declare_queue(cfg.queue, passive=True)
        finally:
            await conn.close()
    except Exception as exc:  # typed, password-free, as the source reports it
        error = classify(exc, cfg, queue=cfg.queue)
    else:
        return
    if isinstance(error, PermanentError):
        raise ConfigError([f"trigger {trigger!r}: source: {error}"])
    raise error


plugin = SourcePlugin(
    config_model=RabbitMQSourceConfig,
    create=create,
    sample_event=sample_event,
    sample_options=SAMPLE_OPTIONS,
    check=check,
)
destination_plugin = DestinationPlugin(
    config_model=RabbitMQDestinationConfig, create=create_destination
)

__all__ = [
    "RabbitMQDestinationConfig",
    "RabbitMQSourceConfig",
    "check",
    "create",
    "create_destination",
    "destination_plugin",
    "plugin",
    "sample_event",
]
