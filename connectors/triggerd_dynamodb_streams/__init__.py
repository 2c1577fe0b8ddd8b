"""The `dynamodb_streams` source (Lambda's DynamoDB Streams event source mapping).

Importing this package is cheap: aiobotocore is imported only when the source starts.

The plugin (its config model: pydantic) is loaded on first use of `plugin`;
`sample_event` and `SAMPLE_OPTIONS` need neither (`triggerd generate-event`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from triggerd.types import JSONDict, lazy_attributes

if TYPE_CHECKING:
    from ._plugin import DynamoDBStreamsSourceConfig as DynamoDBStreamsSourceConfig
    from ._plugin import check as check
    from ._plugin import create as create
    from ._plugin import plugin as plugin

__all__ = [
    "SAMPLE_OPTIONS",
    "DynamoDBStreamsSourceConfig",
    "check",
    "create",
    "plugin",
    "sample_event",
]

#: What `_plugin` defines, imported from it on first use (PEP 562).
_LAZY = frozenset(["DynamoDBStreamsSourceConfig", "check", "create", "plugin"])


SAMPLE_OPTIONS = {
    "event_name": "INSERT, MODIFY (default) or REMOVE",
    "table": "table name in eventSourceARN (default orders)",
    "view": "StreamViewType: KEYS_ONLY, NEW_IMAGE, OLD_IMAGE or NEW_AND_OLD_IMAGES (default)",
    "sequence": "SequenceNumber",
    "region": "awsRegion (default us-east-1)",
    "account": "account id in the ARNs (default 123456789012)",
}


def sample_event(options: Mapping[str, str]) -> JSONDict:
    from .shape import sample_event as sample

    return sample(options)


__getattr__ = lazy_attributes(__name__, f"{__name__}._plugin", _LAZY)
