"""The `kinesis` source (Lambda's Kinesis event source mapping).

Importing this package is cheap: aiobotocore is imported only when the source starts.

The plugin (its config model: pydantic) is loaded on first use of `plugin`;
`sample_event` and `SAMPLE_OPTIONS` need neither (`triggerd generate-event`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from triggerd.types import JSONDict, lazy_attributes

if TYPE_CHECKING:
    from ._plugin import KinesisSourceConfig as KinesisSourceConfig
    from ._plugin import check as check
    from ._plugin import create as create
    from ._plugin import plugin as plugin

__all__ = ["SAMPLE_OPTIONS", "KinesisSourceConfig", "check", "create", "plugin", "sample_event"]

#: What `_plugin` defines, imported from it on first use (PEP 562).
_LAZY = frozenset(["KinesisSourceConfig", "check", "create", "plugin"])


SAMPLE_OPTIONS = {
    "data": "the record's data, base64-encoded in the event (default a sentence)",
    "partition_key": "partitionKey (default user-1)",
    "stream": "stream name in eventSourceARN (default my-stream)",
    "shard": "shard id in eventID (default shardId-000000000006)",
    "sequence": "sequenceNumber",
    "region": "awsRegion (default us-east-1)",
    "account": "account id in the ARNs (default 123456789012)",
    "timestamp": "approximateArrivalTimestamp, epoch seconds (default 1545084650.987)",
}


def sample_event(options: Mapping[str, str]) -> JSONDict:
    from .shape import sample_event as sample

    return sample(options)


__getattr__ = lazy_attributes(__name__, f"{__name__}._plugin", _LAZY)
