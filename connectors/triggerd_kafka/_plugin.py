"""The plugin of `triggerd_kafka` (see the package): its config model, `create` and
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
from .client import import_aiokafka
from .config import KafkaDestinationConfig, KafkaSourceConfig


def create(config: Any, ctx: SourceContext) -> Source:
    from .client import import_aiokafka

    aiokafka = import_aiokafka()
    from .source import KafkaSource

    return KafkaSource(plugin_config(config, KafkaSourceConfig), ctx, aiokafka)


def create_destination(config: Any, ctx: DestinationContext) -> Destination:
    from .client import import_aiokafka
    from .destination import KafkaDestination

    return KafkaDestination(plugin_config(config, KafkaDestinationConfig), ctx, import_aiokafka())


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
