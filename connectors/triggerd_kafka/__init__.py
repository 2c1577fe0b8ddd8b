"""The `kafka` source (self-managed Apache Kafka event source mapping) and the `kafka`
on-failure destination.

Importing this package is cheap: aiokafka is imported only when a source or destination is
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

from .client import import_aiokafka
from .config import KafkaDestinationConfig, KafkaSourceConfig
from .shape import sample_event as _sample


def create(config: Any, ctx: SourceContext) -> Source:
    from .client import import_aiokafka

    aiokafka = import_aiokafka()
    from .source import KafkaSource

    return KafkaSource(plugin_config(config, KafkaSourceConfig), ctx, aiokafka)


def create_destination(config: Any, ctx: DestinationContext) -> Destination:
    from .client import import_aiokafka
    from .destination import KafkaDestination

    return KafkaDestination(plugin_config(config, KafkaDestinationConfig), ctx, import_aiokafka())


SAMPLE_OPTIONS = {
    "topic": "topic (default mytopic)",
    "partition": "partition number (default 0)",
    "offset": "offset (default 15)",
    "key": "record key, base64-encoded in the event (default recordKey; empty: a null key)",
    "value": "record value, base64-encoded in the event",
    "headers": "name:value,... (default headerKey:headerValue)",
    "bootstrap_servers": "bootstrapServers (default broker-1.example.com:9092)",
    "timestamp": "record timestamp, epoch milliseconds (default now)",
    "cluster_arn": "an Amazon MSK cluster's ARN: an MSK event (aws:kafka, eventSourceArn)",
}


def sample_event(options: Mapping[str, str]) -> JSONDict:
    """`triggerd generate-event kafka [topic=..] [partition=..] [key=..] [value=..]
    [headers=name:value,...] ...`."""
    return _sample(options)


async def check(config: Any, trigger: str) -> None:
    """`triggerd validate --connect`: fetch the cluster's metadata with these settings (TLS,
    SASL) and find the topics in it. Refused credentials or a missing topic are a
    ConfigError; brokers that do not answer a RetryableError."""
    from .client import classify, client_kwargs

    cfg = plugin_config(config, KafkaSourceConfig)
    aiokafka = import_aiokafka()
    try:
        consumer = aiokafka.AIOKafkaConsumer(**client_kwargs(cfg, f"triggerd-validate-{trigger}"))
        try:
            await consumer.start()
            topics = await consumer.topics()
        finally:
            await consumer.stop()
    except Exception as exc:  # typed, secret-free, as the source reports it
        error = classify(exc, cfg)
        if isinstance(error, PermanentError):
            raise ConfigError([f"trigger {trigger!r}: source: {error}"]) from None
        raise error from None
    missing = [t for t in cfg.topics if t not in topics]
    if missing:
        raise ConfigError(
            [f"trigger {trigger!r}: source.topics: topic {t!r} does not exist" for t in missing]
        )


plugin = SourcePlugin(
    config_model=KafkaSourceConfig,
    create=create,
    sample_event=sample_event,
    sample_options=SAMPLE_OPTIONS,
    check=check,
)
destination_plugin = DestinationPlugin(
    config_model=KafkaDestinationConfig, create=create_destination
)

__all__ = [
    "KafkaDestinationConfig",
    "KafkaSourceConfig",
    "check",
    "create",
    "create_destination",
    "destination_plugin",
    "plugin",
    "sample_event",
]
