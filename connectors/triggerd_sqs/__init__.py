"""The `sqs` source (Lambda's SQS event source mapping) and the `sqs` on-failure destination.

Importing this package is cheap: aiobotocore is imported only when a source or destination
starts.

The plugin (its config model: pydantic) is loaded on first use of `plugin`;
`sample_event` and `SAMPLE_OPTIONS` need neither (`triggerd generate-event`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from triggerd.types import JSONDict, lazy_attributes

if TYPE_CHECKING:
    from ._plugin import SqsDestinationConfig as SqsDestinationConfig
    from ._plugin import SqsSourceConfig as SqsSourceConfig
    from ._plugin import check as check
    from ._plugin import create as create
    from ._plugin import create_destination as create_destination
    from ._plugin import destination_plugin as destination_plugin
    from ._plugin import plugin as plugin

__all__ = [
    "SAMPLE_OPTIONS",
    "SqsDestinationConfig",
    "SqsSourceConfig",
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
        "SqsDestinationConfig",
        "SqsSourceConfig",
        "check",
        "create",
        "create_destination",
        "destination_plugin",
        "plugin",
    ]
)


SAMPLE_OPTIONS = {
    "body": 'message body (default {"hello": "world"})',
    "queue": "queue name in the ARN (default my-queue; .fifo is added with group)",
    "region": "awsRegion (default us-east-1)",
    "account": "account id in the ARN (default 123456789012)",
    "group": "MessageGroupId: makes it a FIFO queue's message",
}


def sample_event(options: Mapping[str, str]) -> JSONDict:
    """`triggerd generate-event sqs [body=..] [queue=..] [region=..] [account=..] [group=..]`."""
    from .shape import sample_sqs_event

    return sample_sqs_event(options)


__getattr__ = lazy_attributes(__name__, f"{__name__}._plugin", _LAZY)
