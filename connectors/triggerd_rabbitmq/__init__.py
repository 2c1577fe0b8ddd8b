"""The `rabbitmq` source (Amazon MQ for RabbitMQ event source mapping) and the `rabbitmq`
on-failure destination.

Importing this package is cheap: aio-pika is imported only when a source or destination is
created.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from triggerd.types import (
    ConfigError,
    Destination,
    DestinationContext,
    DestinationPlugin,
    JSONDict,
    PermanentError,
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


SAMPLE_OPTIONS = {
    "queue": "queue name (default test)",
    "vhost": "virtual host (default /)",
    "body": "message body, base64-encoded in the event",
    "host": "broker host in the synthesised eventSourceArn (default localhost)",
    "port": "broker port in the synthesised eventSourceArn (default 5672)",
    "broker_arn": "eventSourceArn as given (instead of a synthesised one)",
    "region": "awsRegion (default us-east-1)",
    "account": "account id in the ARNs (default 123456789012)",
}


def sample_event(options: Mapping[str, str]) -> JSONDict:
    """`triggerd generate-event rabbitmq [queue=..] [vhost=..] [body=..] ...`."""
    return _sample(options)


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
