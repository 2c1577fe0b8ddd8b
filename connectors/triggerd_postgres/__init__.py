"""The `postgres` source: change data capture from PostgreSQL through logical decoding (the
built-in `pgoutput` plugin), delivered as DynamoDB Streams records so that DynamoDB Streams
handlers run unchanged. Also `triggerd postgres drop-slot TRIGGER`, a line in `triggerd
status` (slot lag and retained WAL) and checks in `triggerd validate`.

Importing this package is cheap: asyncpg is imported only when a connection is made.

The plugin (its config model: pydantic) is loaded on first use of `plugin`;
`sample_event` and `SAMPLE_OPTIONS` need neither (`triggerd generate-event`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from triggerd.types import JSONDict, lazy_attributes

if TYPE_CHECKING:
    from ._plugin import PostgresSourceConfig as PostgresSourceConfig
    from ._plugin import check as check
    from ._plugin import create as create
    from ._plugin import drop_slot as drop_slot
    from ._plugin import plugin as plugin
    from ._plugin import status as status

__all__ = [
    "SAMPLE_OPTIONS",
    "PostgresSourceConfig",
    "check",
    "create",
    "drop_slot",
    "plugin",
    "sample_event",
    "status",
]

#: What `_plugin` defines, imported from it on first use (PEP 562).
_LAZY = frozenset(["PostgresSourceConfig", "check", "create", "drop_slot", "plugin", "status"])


SAMPLE_OPTIONS = {
    "table": "schema.table (default public.orders)",
    "event": "INSERT (default), MODIFY or REMOVE",
    "id": "the row's key (default 101)",
    "view": "stream view: KEYS_ONLY, NEW_IMAGE, OLD_IMAGE or NEW_AND_OLD_IMAGES (default)",
    "database": "database name in eventSourceARN (default postgres)",
    "slot": "replication slot name in eventSourceARN (default triggerd_orders)",
    "region": "awsRegion (default us-east-1)",
    "account": "account id in the ARNs (default 123456789012)",
}


def sample_event(options: Mapping[str, str]) -> JSONDict:
    from .shape import sample_event as sample

    return sample(options)


__getattr__ = lazy_attributes(__name__, f"{__name__}._plugin", _LAZY)
