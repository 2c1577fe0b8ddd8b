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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from triggerd.delivery.streams import lane_key
from triggerd.types import BuildError, JSONDict, Record

from .encode import ChangeRecord, RowEncoder
from .pgoutput import UNCHANGED, Relation, Value, _Unchanged
from .pgtypes import Converter, PgType, converter

if TYPE_CHECKING:
    # A Literal for the type checker; the config module (pydantic) is not needed to build
    # records, nor for `triggerd generate-event postgres`.
    from .config import StreamViewType

__all__ = [
    "Shaper",
    "Table",
    "sample_event",
    "sequence_number",
    "stream_arn",
]


SEQUENCE_LSN_DIGITS = 20
SEQUENCE_ORDINAL_DIGITS = 10
#: The ordinal part of a sequence number, as bytes.
_ORDINAL = b"%0" + str(SEQUENCE_ORDINAL_DIGITS).encode() + b"d"


def sequence_number(commit_lsn: int, ordinal: int) -> str:
    return f"{commit_lsn:0{SEQUENCE_LSN_DIGITS}d}{ordinal:0{SEQUENCE_ORDINAL_DIGITS}d}"


def parse_sequence_number(text: str) -> tuple[int, int]:
    return int(text[:SEQUENCE_LSN_DIGITS]), int(text[SEQUENCE_LSN_DIGITS:])


def stream_arn(region: str, account: str, database: str, schema: str, table: str, slot: str) -> str:
    return f"arn:aws:dynamodb:{region}:{account}:table/{database}.{schema}.{table}/stream/{slot}"


@dataclass(frozen=True, slots=True)
class Table:
    """A captured table as the current Relation message describes it, with what building its
    records needs per column worked out once (not per row)."""

    relation: Relation
    types: tuple[PgType, ...]
    #: Indexes of the Keys columns: the primary key, else the replica identity.
    key_indexes: tuple[int, ...]
    arn: str
    #: `schema.table`: the ordering key (without parallelization).
    qualified: str = field(init=False, compare=False)
    #: Per column: its name, and its text value (not NULL) -> AttributeValue.
    names: tuple[str, ...] = field(init=False, repr=False, compare=False)
    converters: tuple[Converter, ...] = field(init=False, repr=False, compare=False)
    #: Per Keys column: its index, name and converter.
    keys: tuple[tuple[int, str, Converter], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        rel = self.relation
        names = tuple(c.name for c in rel.columns)
        converters = tuple(converter(t) for t in self.types)
        keys = tuple((i, names[i], converters[i]) for i in self.key_indexes)
        object.__setattr__(self, "qualified", f"{rel.namespace}.{rel.name}")
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "converters", converters)
        object.__setattr__(self, "keys", keys)


@dataclass(eq=False, slots=True)
class _Commit:
    """What every record of one transaction shares: its sequence number's prefix, and the
    eventID's MD5 state after `<database>/<slot>/<prefix>`."""

    lsn: int = -1
    prefix: str = ""
    #: `prefix` as bytes (the encoder's).
    prefix_bytes: bytes = b""
    digest: Any = None


@dataclass(eq=False, slots=True)
class _Encoder:
    """A table's RowEncoder, for the Table object it was made for."""

    table: Table
    encoder: RowEncoder


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
    _new_image: bool = field(init=False, repr=False, compare=False)
    _old_image: bool = field(init=False, repr=False, compare=False)
    #: The transaction of the last record built.
    _commit: _Commit = field(init=False, repr=False, compare=False)
    #: Per relid: the encoder of its current Table.
    _encoders: dict[int, _Encoder] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        prefix = hashlib.md5(f"{self.database}/{self.slot}/".encode(), usedforsecurity=False)
        object.__setattr__(self, "_id_prefix", prefix)
        view = self.view_type
        object.__setattr__(self, "_new_image", view in ("NEW_IMAGE", "NEW_AND_OLD_IMAGES"))
        object.__setattr__(self, "_old_image", view in ("OLD_IMAGE", "NEW_AND_OLD_IMAGES"))
        object.__setattr__(self, "_commit", _Commit())
        object.__setattr__(self, "_encoders", {})

    def _image(
        self, table: Table, values: Sequence[Value], fallback: Sequence[Value] | None
    ) -> JSONDict:
        """Every column's AttributeValue."""
        image: JSONDict = {}
        for name, convert, value in zip(table.names, table.converters, values, strict=False):
            if value.__class__ is str:
                image[name] = convert(value)
            elif value is None:
                image[name] = {"NULL": True}
            else:  # an unchanged TOASTed value: rare, the long way
                return self._image_of(table, values, fallback, range(len(values)))
        return image

    def _image_of(
        self,
        table: Table,
        values: Sequence[Value],
        fallback: Sequence[Value] | None,
        only: Iterable[int],
    ) -> JSONDict:
        """The AttributeValues of the columns `only`: an unchanged TOASTed value is taken from
        `fallback` (the old row) when it has it, else marked with the placeholder."""
        image: JSONDict = {}
        names, converters = table.names, table.converters
        for i in only:
            value = values[i]
            if value is UNCHANGED and fallback is not None and i < len(fallback):
                value = fallback[i]
            if isinstance(value, _Unchanged):
                image[names[i]] = {"S": self.placeholder}
            elif value is None:
                image[names[i]] = {"NULL": True}
            else:
                image[names[i]] = converters[i](value)
        return image

    def _keys(
        self, table: Table, values: Sequence[Value], fallback: Sequence[Value] | None
    ) -> JSONDict:
        keys: JSONDict = {}
        for i, name, convert in table.keys:
            value = values[i]
            if value.__class__ is str:
                keys[name] = convert(value)
            else:  # NULL or unchanged: rare, the long way
                return self._image_of(table, values, fallback, table.key_indexes)
        return keys

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
        return self.row(
            event_name, table, new, old, old_full, commit_lsn, ordinal, commit_time, size_bytes
        )

    def row(
        self,
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
        """`change`, with positional arguments (once per row change)."""
        encoder = self._encoder(table)
        width = len(encoder.names)
        if (new is None or (len(new) == width and UNCHANGED not in new)) and (
            old is None or (len(old) == width and UNCHANGED not in old)
        ):
            return self._encoded(
                encoder,
                event_name,
                table,
                new,
                old,
                old_full,
                commit_lsn,
                ordinal,
                commit_time,
                size_bytes,
            )
        return self.built_row(
            event_name, table, new, old, old_full, commit_lsn, ordinal, commit_time, size_bytes
        )

    def inserts(
        self,
        table: Table,
        rows: Sequence[tuple[tuple[Value, ...], int, int]],
        commit_lsn: int,
        commit_time: float,
    ) -> list[Record]:
        """The INSERT records of rows of `table` in one transaction, in order: each row is
        (new row, ordinal, size in bytes). `row` of each, in one pass: the strings of every
        row escaped at once, the transaction's parts worked out once."""
        encoder = self._encoder(table)
        width = len(encoder.names)
        news = [new for new, _, _ in rows]
        if any(len(new) != width or UNCHANGED in new for new in news):  # never from pgoutput
            return [
                self.row("INSERT", table, new, None, False, commit_lsn, ordinal, commit_time, size)
                for new, ordinal, size in rows
            ]
        new_image = self._new_image
        template = encoder.record_template("INSERT", new_image, False)
        commit = self._of_commit(commit_lsn)
        prefix, digest = commit.prefix_bytes, commit.digest
        created = int(commit_time)
        keys_of = encoder.keys_of
        key = table.qualified
        lanes = self.parallelization_factor != 1
        records: list[Record] = []
        filled = encoder.fill_rows(news)  # type: ignore[arg-type]
        for (values, templates), (_, ordinal, size) in zip(filled, rows, strict=True):
            keys = templates.keys % keys_of(values)
            place = _ORDINAL % ordinal
            seq = prefix + place  # == sequence_number(commit_lsn, ordinal)
            event_id = digest.copy()
            event_id.update(place)
            eid = event_id.hexdigest().encode()
            if new_image:
                data = template % (eid, created, keys, templates.image % tuple(values), seq, size)
            else:
                data = template % (eid, created, keys, seq, size)
            if lanes:  # the Keys sorted as the long way sorts them
                item = orjson.dumps(orjson.loads(keys), option=orjson.OPT_SORT_KEYS)
                key = lane_key(table.qualified, item, self.parallelization_factor)
            # no payload yet: ChangeRecord parses it from `data` on first use
            records.append(ChangeRecord(None, seq.decode(), len(data), commit_time, key, data))  # type: ignore[arg-type]
        return records

    def _encoder(self, table: Table) -> RowEncoder:
        entry = self._encoders.get(table.relation.relid)
        if entry is None or entry.table is not table:
            encoder = RowEncoder.of(
                types=table.types,
                names=table.names,
                key_indexes=table.key_indexes,
                region=self.region,
                view_type=self.view_type,
                arn=table.arn,
            )
            entry = self._encoders[table.relation.relid] = _Encoder(table, encoder)
        return entry.encoder

    def _encoded(
        self,
        encoder: RowEncoder,
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
        """The record of a row without unchanged TOASTed values, written straight to JSON
        bytes (its payload is parsed from them on first use)."""
        fields: list[bytes | int] = [b"", int(commit_time)]
        new_image = old_image = False
        keys = b""
        if new is not None:
            values, templates = encoder.fill(new)  # type: ignore[arg-type]
            keys = encoder.keys(values, templates)
            fields.append(keys)
            new_image = self._new_image
            if new_image:
                fields.append(encoder.image(values, templates))
        if old is not None and (new is None or self._old_image):
            values, templates = encoder.fill(old)  # type: ignore[arg-type]
            if new is None:
                keys = encoder.keys(values, templates)
                fields.append(keys)
            old_image = self._old_image
            if old_image:
                # only the identity columns were sent unless the old row is full
                image = encoder.image if old_full else encoder.keys
                fields.append(image(values, templates))
        commit = self._of_commit(commit_lsn)
        place = _ORDINAL % ordinal
        seq = commit.prefix_bytes + place  # == sequence_number(commit_lsn, ordinal)
        digest = commit.digest.copy()
        digest.update(place)
        fields[0] = digest.hexdigest().encode()
        fields.append(seq)
        fields.append(size_bytes)
        data = encoder.record_template(event_name, new_image, old_image) % tuple(fields)
        if self.parallelization_factor == 1:
            key = table.qualified
        else:  # the Keys sorted as the long way sorts them
            item = orjson.dumps(orjson.loads(keys), option=orjson.OPT_SORT_KEYS)
            key = lane_key(table.qualified, item, self.parallelization_factor)
        # no payload yet: ChangeRecord parses it from `data` on first use
        return ChangeRecord(None, seq.decode(), len(data), commit_time, key, data)  # type: ignore[arg-type]

    def built_row(
        self,
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
        """The record built as a dict, then serialised: the way of rows with unchanged TOASTed
        values, and the reference the encoder's bytes are tested against."""
        if new is None:
            assert old is not None
            keys = self._keys(table, old, old)
        elif old and any(new[i] is UNCHANGED for i in table.key_indexes):
            keys = self._keys(table, old, old)
        else:
            keys = self._keys(table, new, old)
        ddb: JSONDict = {"ApproximateCreationDateTime": int(commit_time), "Keys": keys}
        if new is not None and self._new_image:
            ddb["NewImage"] = self._image(table, new, old if old_full else None)
        if old is not None and self._old_image:
            if old_full:
                ddb["OldImage"] = self._image(table, old, None)
            else:  # only the identity columns were sent
                ddb["OldImage"] = self._image_of(table, old, None, table.key_indexes)
        return self._record(
            event_name, table, ddb, commit_lsn, ordinal, commit_time, size_bytes, keys
        )

    def unbuilt(
        self,
        event_name: str,
        table: Table,
        values: Sequence[Value],
        fallback: Sequence[Value] | None,
        commit_lsn: int,
        ordinal: int,
        commit_time: float,
        size_bytes: int,
        error: BuildError,
    ) -> Record:
        """The record of a change whose record cannot be built (`error`): what it has
        without its values (eventID, eventName, the sequence number, the commit time, the
        size, the ARN), with its `Keys` when those can be built on their own, and the error
        for the pipeline to give it up."""
        ddb: JSONDict = {"ApproximateCreationDateTime": int(commit_time)}
        keys: JSONDict | None = None
        try:
            keys = self._keys(table, values, fallback)
            orjson.dumps(keys)
        except Exception:  # a key column is the one that cannot be converted
            keys = None
        else:
            ddb["Keys"] = keys
        record = self._record(
            event_name, table, ddb, commit_lsn, ordinal, commit_time, size_bytes, keys
        )
        record.build_error = error
        return record

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

    def _of_commit(self, commit_lsn: int) -> _Commit:
        commit = self._commit
        if commit.lsn != commit_lsn:
            commit.lsn = commit_lsn
            commit.prefix = f"{commit_lsn:0{SEQUENCE_LSN_DIGITS}d}"
            commit.prefix_bytes = commit.prefix.encode()
            commit.digest = self._id_prefix.copy()
            commit.digest.update(commit.prefix_bytes)
        return commit

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
        commit = self._of_commit(commit_lsn)
        place = f"{ordinal:0{SEQUENCE_ORDINAL_DIGITS}d}"
        seq = commit.prefix + place  # == sequence_number(commit_lsn, ordinal)
        ddb["SequenceNumber"] = seq
        ddb["SizeBytes"] = size_bytes
        ddb["StreamViewType"] = self.view_type
        digest = commit.digest.copy()
        digest.update(place.encode())
        payload: JSONDict = {
            "eventID": digest.hexdigest(),
            "eventName": event_name,
            "eventVersion": "1.1",
            "eventSource": "aws:dynamodb",
            "awsRegion": self.region,
            "dynamodb": ddb,
            "eventSourceARN": table.arn,
        }
        key = table.qualified if keys is None else self._ordering_key(table, keys)
        data = orjson.dumps(payload)
        # Record(payload, item_id, size, created_at, key, handle), positional: once per row
        return ChangeRecord(payload, seq, len(data), commit_time, key, data)


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
