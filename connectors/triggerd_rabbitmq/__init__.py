"""The `rabbitmq` source (Amazon MQ for RabbitMQ event source mapping) and the `rabbitmq`
on-failure destination.

Importing this package is cheap: aio-pika is imported only when a source or destination is
created.

The plugin (its config model: pydantic) is loaded on first use of `plugin`;
`sample_event` and `SAMPLE_OPTIONS` need neither (`triggerd generate-event`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from triggerd.types import JSONDict, lazy_attributes

if TYPE_CHECKING:
    from ._plugin import RabbitMQDestinationConfig as RabbitMQDestinationConfig
    from ._plugin import RabbitMQSourceConfig as RabbitMQSourceConfig
    from ._plugin import check as check
    from ._plugin import create as create
    from ._plugin import create_destination as create_destination
    from ._plugin import destination_plugin as destination_plugin
    from ._plugin import plugin as plugin

__all__ = [
    "SAMPLE_OPTIONS",
    "RabbitMQDestinationConfig",
    "RabbitMQSourceConfig",
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
        "RabbitMQDestinationConfig",
        "RabbitMQSourceConfig",
        "check",
        "create",
        "create_destination",
        "destination_plugin",
        "plugin",
    ]
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
    from .shape import sample_event as sample

    return sample(options)


__getattr__ = lazy_attributes(__name__, f"{__name__}._plugin", _LAZY)
