"""A decoder of the `pgoutput` logical replication protocol, one message at a time.

Messages are what `pg_logical_slot_peek_binary_changes(..., 'proto_version', ...)` returns in
its `data` column, one per row, big-endian. Protocol version 1: Begin, Commit, Origin,
Relation, Type, Insert, Update, Delete, Truncate (and logical decoding Messages, skipped).
Version 2 adds streamed in-progress transactions: Stream Start, Stream Stop, Stream Commit,
Stream Abort; between a Stream Start and its Stop, every Relation, Type, Insert, Update,
Delete and Truncate carries the (sub)transaction id after its tag.

Values in tuples are the columns' text output (the session's DateStyle, TimeZone,
IntervalStyle and bytea_output apply): `None` is SQL NULL, `UNCHANGED` an unchanged TOASTed
value that the server did not send.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

__all__ = [
    "UNCHANGED",
    "Begin",
    "Column",
    "Commit",
    "Decoder",
    "Delete",
    "Insert",
    "Message",
    "ProtocolError",
    "Relation",
    "StreamAbort",
    "StreamCommit",
    "StreamStart",
    "StreamStop",
    "Truncate",
    "TypeMessage",
    "Update",
]

#: PostgreSQL epoch (2000-01-01T00:00:00Z) in Unix seconds.
PG_EPOCH_S: Final = 946_684_800


class _Unchanged:
    __slots__ = ()

    def __repr__(self) -> str:
        return "UNCHANGED"


#: An unchanged TOASTed column: the server did not send its value.
UNCHANGED: Final = _Unchanged()

Value = str | None | _Unchanged


class ProtocolError(ValueError):
    """A message that is not valid pgoutput."""


@dataclass(frozen=True, slots=True)
class Column:
    #: Part of the replica identity (the primary key by default, every column with FULL).
    key: bool
    name: str
    type_oid: int
    typmod: int


@dataclass(frozen=True, slots=True)
class Relation:
    relid: int
    namespace: str
    name: str
    #: REPLICA IDENTITY: "d" default, "n" nothing, "f" full, "i" index.
    replica_identity: str
    columns: tuple[Column, ...]
    xid: int | None = None


@dataclass(frozen=True, slots=True)
class TypeMessage:
    oid: int
    namespace: str
    name: str
    xid: int | None = None


@dataclass(frozen=True, slots=True)
class Begin:
    #: LSN of the transaction's commit record.
    final_lsn: int
    #: Commit time, Unix seconds.
    commit_time: float
    xid: int


@dataclass(frozen=True, slots=True)
class Commit:
    flags: int
    commit_lsn: int
    #: LSN just after the commit record: the slot may be advanced here once it is processed.
    end_lsn: int
    commit_time: float


@dataclass(frozen=True, slots=True)
class Insert:
    relid: int
    new: tuple[Value, ...]
    xid: int | None = None


@dataclass(frozen=True, slots=True)
class Update:
    relid: int
    #: The old row: only its replica identity columns ("K"), or all of it ("O", FULL); None
    #: when the identity did not change and is not FULL.
    old: tuple[Value, ...] | None
    old_kind: str | None
    new: tuple[Value, ...]
    xid: int | None = None


@dataclass(frozen=True, slots=True)
class Delete:
    relid: int
    old: tuple[Value, ...]
    old_kind: str
    xid: int | None = None


@dataclass(frozen=True, slots=True)
class Truncate:
    relids: tuple[int, ...]
    cascade: bool
    restart_identity: bool
    xid: int | None = None


@dataclass(frozen=True, slots=True)
class StreamStart:
    xid: int
    first_segment: bool


@dataclass(frozen=True, slots=True)
class StreamStop:
    pass


@dataclass(frozen=True, slots=True)
class StreamCommit:
    xid: int
    flags: int
    commit_lsn: int
    end_lsn: int
    commit_time: float


@dataclass(frozen=True, slots=True)
class StreamAbort:
    xid: int
    #: The aborted (sub)transaction: == xid when the whole transaction aborted.
    subxid: int


Message = (
    Begin
    | Commit
    | Relation
    | TypeMessage
    | Insert
    | Update
    | Delete
    | Truncate
    | StreamStart
    | StreamStop
    | StreamCommit
    | StreamAbort
)

_I32 = struct.Struct("!i")
_U32 = struct.Struct("!I")
_I16 = struct.Struct("!h")
_Q = struct.Struct("!Q")
_BEGIN = struct.Struct("!QqI")
_COMMIT = struct.Struct("!bQQq")
_STREAM_COMMIT = struct.Struct("!IbQQq")
_REL_HEAD = struct.Struct("!I")
_INSERT_HEAD = struct.Struct("!IB")
_COL_TAIL = struct.Struct("!Ii")


def _time(pg_micros: int) -> float:
    return PG_EPOCH_S + pg_micros / 1_000_000


class _Reader:
    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes, pos: int) -> None:
        self.buf = buf
        self.pos = pos

    def u32(self) -> int:
        (value,) = _U32.unpack_from(self.buf, self.pos)
        self.pos += 4
        return int(value)

    def i32(self) -> int:
        (value,) = _I32.unpack_from(self.buf, self.pos)
        self.pos += 4
        return int(value)

    def i16(self) -> int:
        (value,) = _I16.unpack_from(self.buf, self.pos)
        self.pos += 2
        return int(value)

    def byte(self) -> int:
        value = self.buf[self.pos]
        self.pos += 1
        return value

    def cstring(self) -> str:
        end = self.buf.index(b"\0", self.pos)
        text = self.buf[self.pos : end].decode()
        self.pos = end + 1
        return text

    def tuple(self) -> tuple[Value, ...]:
        values, self.pos = _tuple(self.buf, self.pos)
        return values


def _tuple(buf: bytes, pos: int) -> tuple[tuple[Value, ...], int]:
    """A tuple's values at `pos`, and the position after it."""
    (count,) = _I16.unpack_from(buf, pos)
    pos += 2
    values: list[Value] = []
    for _ in range(count):
        kind = buf[pos]
        pos += 1
        if kind == 0x74:  # 't': text
            (length,) = _I32.unpack_from(buf, pos)
            pos += 4
            values.append(buf[pos : pos + length].decode())
            pos += length
        elif kind == 0x6E:  # 'n': null
            values.append(None)
        elif kind == 0x75:  # 'u': unchanged TOAST
            values.append(UNCHANGED)
        else:
            raise ProtocolError(f"unknown tuple column kind {chr(kind)!r}")
    return tuple(values), pos


class Decoder:
    """Decodes messages in the order the server sent them (it tracks whether a streamed
    transaction's chunk is open, since that changes the layout of the messages inside it)."""

    def __init__(self, *, in_stream: bool = False) -> None:
        #: Inside a streamed chunk (or reading one back): changes carry a transaction id.
        self.in_stream = in_stream

    def decode(self, data: bytes) -> Message | None:
        """One message; None for the ones that carry nothing to deliver (Origin, logical
        decoding Messages)."""
        if not data:
            raise ProtocolError("empty message")
        tag = data[0]
        r = _Reader(data, 1)
        try:
            return self._dispatch(tag, r)
        except (struct.error, IndexError, ValueError) as exc:
            if isinstance(exc, ProtocolError):
                raise
            raise ProtocolError(f"malformed {chr(tag)!r} message: {exc}") from exc

    def insert(self, data: bytes) -> tuple[int, tuple[Value, ...]]:
        """The relid and new row of an Insert outside a streamed chunk, without a message
        object: most messages are these."""
        try:
            relid, kind = _INSERT_HEAD.unpack_from(data, 1)
            if kind != 0x4E:
                raise ProtocolError("Insert without a new tuple")
            values, _ = _tuple(data, 1 + _INSERT_HEAD.size)
        except (struct.error, IndexError, ValueError) as exc:
            if isinstance(exc, ProtocolError):
                raise
            raise ProtocolError(f"malformed 'I' message: {exc}") from exc
        return relid, values

    def _xid(self, r: _Reader) -> int | None:
        return r.u32() if self.in_stream else None

    def _dispatch(self, tag: int, r: _Reader) -> Message | None:
        if tag == 0x49:  # 'I'
            xid = self._xid(r)
            relid = r.u32()
            if r.byte() != 0x4E:
                raise ProtocolError("Insert without a new tuple")
            return Insert(relid, r.tuple(), xid)
        if tag == 0x55:  # 'U'
            return self._update(r)
        if tag == 0x44:  # 'D'
            xid = self._xid(r)
            relid = r.u32()
            kind = chr(r.byte())
            if kind not in ("K", "O"):
                raise ProtocolError(f"Delete with old tuple kind {kind!r}")
            return Delete(relid, r.tuple(), kind, xid)
        if tag == 0x42:  # 'B'
            final_lsn, ts, xid = _BEGIN.unpack_from(r.buf, r.pos)
            return Begin(final_lsn, _time(ts), xid)
        if tag == 0x43:  # 'C'
            flags, commit_lsn, end_lsn, ts = _COMMIT.unpack_from(r.buf, r.pos)
            return Commit(flags, commit_lsn, end_lsn, _time(ts))
        if tag == 0x52:  # 'R'
            return self._relation(r)
        if tag == 0x59:  # 'Y'
            xid = self._xid(r)
            oid = r.u32()
            return TypeMessage(oid, r.cstring(), r.cstring(), xid)
        if tag == 0x54:  # 'T'
            xid = self._xid(r)
            count = r.u32()
            options = r.byte()
            relids = tuple(r.u32() for _ in range(count))
            return Truncate(relids, bool(options & 1), bool(options & 2), xid)
        return self._other(tag, r)

    def _other(self, tag: int, r: _Reader) -> Message | None:
        if tag == 0x53:  # 'S'
            self.in_stream = True
            xid = r.u32()
            return StreamStart(xid, r.byte() == 1)
        if tag == 0x45:  # 'E'
            self.in_stream = False
            return StreamStop()
        if tag == 0x63:  # 'c'
            xid, flags, commit_lsn, end_lsn, ts = _STREAM_COMMIT.unpack_from(r.buf, r.pos)
            return StreamCommit(xid, flags, commit_lsn, end_lsn, _time(ts))
        if tag == 0x41:  # 'A'
            xid = r.u32()
            return StreamAbort(xid, r.u32())
        if tag in (0x4F, 0x4D):  # 'O' origin, 'M' logical decoding message
            return None
        raise ProtocolError(f"unknown message tag {chr(tag)!r}")

    def _update(self, r: _Reader) -> Update:
        xid = self._xid(r)
        relid = r.u32()
        kind = chr(r.byte())
        old: tuple[Value, ...] | None = None
        old_kind: str | None = None
        if kind in ("K", "O"):
            old, old_kind = r.tuple(), kind
            kind = chr(r.byte())
        if kind != "N":
            raise ProtocolError(f"Update without a new tuple (got {kind!r})")
        return Update(relid, old, old_kind, r.tuple(), xid)

    def _relation(self, r: _Reader) -> Relation:
        xid = self._xid(r)
        relid = r.u32()
        namespace = r.cstring() or "pg_catalog"
        name = r.cstring()
        identity = chr(r.byte())
        count = r.i16()
        columns = []
        for _ in range(count):
            flags = r.byte()
            col = r.cstring()
            type_oid, typmod = _COL_TAIL.unpack_from(r.buf, r.pos)
            r.pos += 8
            columns.append(Column(bool(flags & 1), col, type_oid, typmod))
        return Relation(relid, namespace, name, identity, tuple(columns), xid)
