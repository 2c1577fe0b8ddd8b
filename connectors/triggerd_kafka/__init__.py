"""The `kafka` source (self-managed Apache Kafka event source mapping) and the `kafka`
on-failure destination.

Importing this package is cheap: aiokafka is imported only when a source or destination is
created.

The plugin (its config model: pydantic) is loaded on first use of `plugin`;
`sample_event` and `SAMPLE_OPTIONS` need neither (`triggerd generate-event`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from triggerd.types import JSONDict, lazy_attributes

if TYPE_CHECKING:
    from ._plugin import KafkaDestinationConfig as KafkaDestinationConfig
    from ._plugin import KafkaSourceConfig as KafkaSourceConfig
    from ._plugin import check as check
    from ._plugin import create as create
    from ._plugin import create_destination as create_destination
    from ._plugin import destination_plugin as destination_plugin
    from ._plugin import plugin as plugin

__all__ = [
    "SAMPLE_OPTIONS",
    "KafkaDestinationConfig",
    "KafkaSourceConfig",
    "check",
    "create",
    "create_destination",
    "destination_plugin",
    "plugin",
    "sample_event",
]

#: What `_plugin` defines, imported from it on first use (PEP 562).
_LAZY = frozenset(
    [
        "KafkaDestinationConfig",
        "KafkaSourceConfig",
        "check",
        "create",
        "create_destination",
        "destination_plugin",
        "plugin",
    ]
)


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
    from .shape import sample_event as sample

    return sample(options)


__getattr__ = lazy_attributes(__name__, f"{__name__}._plugin", _LAZY)
