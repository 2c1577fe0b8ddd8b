"""What a Relation message does not say, from the catalog: a table's primary key (its `Keys`)
and how user types (enums, domains, arrays of them) map to AttributeValues."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING

from . import server
from .pgoutput import Relation
from .pgtypes import Kind, PgType, builtin_type, catalog_type
from .shape import Table, stream_arn

if TYPE_CHECKING:
    import asyncpg

__all__ = ["Catalog"]


class Catalog:
    def __init__(
        self,
        *,
        query: Callable[[], AbstractAsyncContextManager[asyncpg.Connection]],
        region: str,
        account_id: str,
        database: str,
        slot: str,
        needs_old_image: bool,
        view_type: str,
        log: logging.Logger,
        trigger: str,
    ) -> None:
        #: A connection for catalog queries, held for the duration of one.
        self.query = query
        self.region = region
        self.account_id = account_id
        self.database = database
        self.slot = slot
        self.needs_old_image = needs_old_image
        self.view_type = view_type
        self.log = log
        self.trigger = trigger
        self._types: dict[int, PgType] = {}
        #: Per relid: the Table of the last Relation message.
        self._tables: dict[int, Table] = {}

    async def table(self, rel: Relation) -> Table:
        """The Table of a Relation message. Each peek is a new decoding session, which sends
        its tables' Relation messages again: an identical one of a table with REPLICA
        IDENTITY DEFAULT gives the same Table without asking the server again (its key
        columns, flagged in the message, are the primary key's: a new primary key on other
        columns changes the message; one on the same columns in another order keeps the Keys'
        old order until the table's next Relation change). With another identity the primary
        key is looked up each time."""
        known = self._tables.get(rel.relid)
        if known is not None and rel.replica_identity == "d" and known.relation == rel:
            return known
        table = await self._describe(rel)
        self._tables[rel.relid] = table
        return table

    async def _describe(self, rel: Relation) -> Table:
        types = await self._column_types([c.type_oid for c in rel.columns])
        async with self.query() as conn:
            pk = await server.primary_key(conn, rel.relid)
        names = [c.name for c in rel.columns]
        if pk and all(n in names for n in pk):
            keys = tuple(names.index(n) for n in pk)
        else:
            keys = tuple(i for i, c in enumerate(rel.columns) if c.key)
        if self.needs_old_image and rel.replica_identity != "f":
            self.log.warning(
                "postgres.replica_identity_not_full",
                extra={
                    "trigger": self.trigger,
                    "table": f"{rel.namespace}.{rel.name}",
                    "stream_view_type": self.view_type,
                },
            )
        arn = stream_arn(
            self.region, self.account_id, self.database, rel.namespace, rel.name, self.slot
        )
        return Table(rel, tuple(types), keys, arn)

    async def _column_types(self, oids: list[int]) -> list[PgType]:
        return [await self._type(oid) for oid in oids]

    async def _type(self, oid: int, depth: int = 0) -> PgType:
        """The mapping of a column type; user types (enums, domains, arrays of them) are
        looked up in the catalog once."""
        known = self._types.get(oid) or builtin_type(oid)
        if known is not None:
            return known
        async with self.query() as conn:
            rows = await server.describe_types(conn, [oid])
        row = rows.get(oid)
        if row is None or depth > 8:
            resolved = PgType(Kind.TEXT)
        else:
            element = await self._type(row["elem"], depth + 1) if row["elem"] else None
            base = await self._type(row["base"], depth + 1) if row["base"] else None
            resolved = catalog_type(
                typtype=row["typtype"],
                category=row["typcategory"],
                element=element,
                base=base,
                delimiter=row["typdelim"],
            )
        self._types[oid] = resolved
        return resolved
