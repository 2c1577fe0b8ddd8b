"""Row changes as DynamoDB Streams records (`aws:dynamodb`, LAMBDA_SEMANTICS.md §1.5).

- `eventName`: INSERT, MODIFY (UPDATE), REMOVE (DELETE); TRUNCATE for a truncated table (no
  Keys or images; `dynamodb.Truncate` holds its options).
- `SequenceNumber`: the transaction's commit LSN as 20 decimal digits, then the change's
  position in the transaction as 10: fixed width, so string order is commit order.
- `eventID`: an MD5 hex digest of the database, slot and sequence number: the same change
  delivered again (after a crash) has the same eventID.
- `eventSourceARN`: `arn:aws:dynamodb:<region>:<account>:table/<database>.<schema>.<table>/
  stream/<slot>`.
- `ApproximateCreationDateTime`: the commit time, whole epoch seconds.
- `SizeBytes`: the size of the change as the server sent it (pgoutput bytes).
- `Keys`: the primary key columns (else the replica identity columns).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from triggerd.delivery.streams import lane_key
from triggerd.types import JSONDict, Record

from .config import StreamViewType
from .pgoutput import UNCHANGED, Relation, Value, _Unchanged
from .pgtypes import PgType, to_attribute

__all__ = [
    "Change",
    "Shaper",
    "Table",
    "sample_event",
    "sequence_number",
    "stream_arn",
]

SEQUENCE_LSN_DIGITS = 20
SEQUENCE_ORDINAL_DIGITS = 10


def sequence_number(commit_lsn: int, ordinal: int) -> str:
    return f"{commit_lsn:0{SEQUENCE_LSN_DIGITS}d}{ordinal:0{SEQUENCE_ORDINAL_DIGITS}d}"


def parse_sequence_number(text: str) -> tuple[int, int]:
    return int(text[:SEQUENCE_LSN_DIGITS]), int(text[SEQUENCE_LSN_DIGITS:])


def stream_arn(region: str, account: str, database: str, schema: str, table: str, slot: str) -> str:
    return f"arn:aws:dynamodb:{region}:{account}:table/{database}.{schema}.{table}/stream/{slot}"


@dataclass(frozen=True, slots=True)
class Table:
    """A captured table as the current Relation message describes it."""

    relation: Relation
    types: tuple[PgType, ...]
    #: Indexes of the Keys columns: the primary key, else the replica identity.
    key_indexes: tuple[int, ...]
    arn: str

    @property
    def qualified(self) -> str:
        return f"{self.relation.namespace}.{self.relation.name}"


@dataclass(eq=False, slots=True)
class Change:
    """A record's handle: where it is in the stream."""

    commit_lsn: int
    ordinal: int

    @property
    def position(self) -> tuple[int, int]:
        return (self.commit_lsn, self.ordinal)


@dataclass(frozen=True, slots=True)
class Shaper:
    region: str
    account_id: str
    database: str
    slot: str
    view_type: StreamViewType
    placeholder: str
    parallelization_factor: int = 1
    #: MD5 state after `<database>/<slot>/`, copied for each eventID.
    _id_prefix: Any = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        prefix = hashlib.md5(f"{self.database}/{self.slot}/".encode(), usedforsecurity=False)
        object.__setattr__(self, "_id_prefix", prefix)

    def _image(
        self,
        table: Table,
        values: Sequence[Value],
        fallback: Sequence[Value] | None,
        only: Sequence[int] | None = None,
    ) -> JSONDict:
        image: JSONDict = {}
        columns, types = table.relation.columns, table.types
        for i in only if only is not None else range(len(values)):
            value = values[i]
            if value is UNCHANGED:  # UNCHANGED is the one _Unchanged
                if fallback is not None and i < len(fallback):
                    value = fallback[i]
                if isinstance(value, _Unchanged):
                    image[columns[i].name] = {"S": self.placeholder}
                    continue
            image[columns[i].name] = to_attribute(value, types[i])  # type: ignore[arg-type]
        return image

    def _ordering_key(self, table: Table, keys: JSONDict) -> str:
        if self.parallelization_factor == 1:
            return table.qualified
        item = orjson.dumps(keys, option=orjson.OPT_SORT_KEYS)
        return lane_key(table.qualified, item, self.parallelization_factor)

    def change(
        self,
        *,
        event_name: str,
        table: Table,
        new: Sequence[Value] | None,
        old: Sequence[Value] | None,
        old_full: bool,
        commit_lsn: int,
        ordinal: int,
        commit_time: float,
        size_bytes: int,
    ) -> Record:
        """INSERT (new), MODIFY (new, old when sent), REMOVE (old)."""
        identity = new if new is not None else old
        assert identity is not None
        key_source = identity
        if new is not None and any(new[i] is UNCHANGED for i in table.key_indexes) and old:
            key_source = old
        keys = self._image(table, key_source, old, table.key_indexes)
        ddb: JSONDict = {"ApproximateCreationDateTime": int(commit_time), "Keys": keys}
        view = self.view_type
        if new is not None and view in ("NEW_IMAGE", "NEW_AND_OLD_IMAGES"):
            ddb["NewImage"] = self._image(table, new, old if old_full else None)
        if old is not None and view in ("OLD_IMAGE", "NEW_AND_OLD_IMAGES"):
            if old_full:
                ddb["OldImage"] = self._image(table, old, None)
            else:  # only the identity columns were sent
                ddb["OldImage"] = self._image(table, old, None, table.key_indexes)
        return self._record(
            event_name, table, ddb, commit_lsn, ordinal, commit_time, size_bytes, keys
        )

    def truncate(
        self,
        *,
        table: Table,
        cascade: bool,
        restart_identity: bool,
        commit_lsn: int,
        ordinal: int,
        commit_time: float,
        size_bytes: int,
    ) -> Record:
        ddb: JSONDict = {
            "ApproximateCreationDateTime": int(commit_time),
            "Keys": {},
            "Truncate": {"cascade": cascade, "restartIdentity": restart_identity},
        }
        return self._record(
            "TRUNCATE", table, ddb, commit_lsn, ordinal, commit_time, size_bytes, None
        )

    def _record(
        self,
        event_name: str,
        table: Table,
        ddb: JSONDict,
        commit_lsn: int,
        ordinal: int,
        commit_time: float,
        size_bytes: int,
        keys: JSONDict | None,
    ) -> Record:
        seq = sequence_number(commit_lsn, ordinal)
        ddb["SequenceNumber"] = seq
        ddb["SizeBytes"] = size_bytes
        ddb["StreamViewType"] = self.view_type
        digest = self._id_prefix.copy()
        digest.update(seq.encode())
        event_id = digest.hexdigest()
        payload: JSONDict = {
            "eventID": event_id,
            "eventName": event_name,
            "eventVersion": "1.1",
            "eventSource": "aws:dynamodb",
            "awsRegion": self.region,
            "dynamodb": ddb,
            "eventSourceARN": table.arn,
        }
        key = table.qualified if keys is None else self._ordering_key(table, keys)
        return Record(
            payload=payload,
            item_id=seq,
            size=len(orjson.dumps(payload)),
            created_at=commit_time,
            key=key,
            handle=Change(commit_lsn, ordinal),
        )


def sample_event(options: Mapping[str, str]) -> JSONDict:
    """`triggerd generate-event postgres [table=..] [event=INSERT|MODIFY|REMOVE] [id=..]
    [region=..] [account=..] [database=..] [slot=..] [view=NEW_AND_OLD_IMAGES]`."""
    from .pgoutput import Column

    schema, _, name = options.get("table", "public.orders").rpartition(".")
    schema = schema or "public"
    event = options.get("event", "INSERT").upper()
    if event not in ("INSERT", "MODIFY", "REMOVE"):
        raise ValueError("event must be INSERT, MODIFY or REMOVE")
    view = options.get("view", "NEW_AND_OLD_IMAGES")
    if view not in ("KEYS_ONLY", "NEW_IMAGE", "OLD_IMAGE", "NEW_AND_OLD_IMAGES"):
        raise ValueError("view must be KEYS_ONLY, NEW_IMAGE, OLD_IMAGE or NEW_AND_OLD_IMAGES")
    region = options.get("region", "us-east-1")
    account = options.get("account", "123456789012")
    database = options.get("database", "postgres")
    slot = options.get("slot", "triggerd_orders")
    from .pgtypes import Kind

    relation = Relation(
        16385,
        schema,
        name,
        "f",
        (Column(True, "id", 23, -1), Column(False, "status", 25, -1)),
    )
    table = Table(
        relation,
        (PgType(Kind.INTEGER), PgType(Kind.TEXT)),
        (0,),
        stream_arn(region, account, database, schema, name, slot),
    )
    shaper = Shaper(region, account, database, slot, view, "")  # type: ignore[arg-type]
    ident = options.get("id", "101")
    new = (ident, "shipped") if event != "REMOVE" else None
    old = (ident, "created") if event != "INSERT" else None
    record = shaper.change(
        event_name=event,
        table=table,
        new=new,
        old=old,
        old_full=True,
        commit_lsn=22_262_072,
        ordinal=0,
        commit_time=1_714_521_600.0,
        size_bytes=42,
    )
    return {"Records": [record.payload]}
