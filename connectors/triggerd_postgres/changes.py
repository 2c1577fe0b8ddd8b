"""From pgoutput rows to records in the shard log: transactions in commit order, each change
at its position (commit LSN, place in the transaction), changes read by an earlier peek skipped
without decoding, streamed transactions kept until their commit and read back a page at a time,
and checkpoint markers at the end of each transaction."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from triggerd.delivery.streams import ShardLog
from triggerd.types import BuildError, Record

from .pgoutput import (
    Begin,
    Commit,
    Decoder,
    Delete,
    Insert,
    Message,
    Relation,
    StreamAbort,
    StreamCommit,
    StreamStart,
    StreamStop,
    Truncate,
    Update,
    Value,
)
from .shape import Shaper, Table
from .streamed import Spill, StreamedTransactions

__all__ = ["END", "ChangeReader", "Session", "SlotPosition"]

#: A position after every change of a commit LSN.
END = 1 << 62
#: Rows decoded between two turns of the event loop: a page takes milliseconds to turn into
#: records, and meanwhile the batch in flight may have come back (reading and invoking
#: overlap only if its result is settled and the next batch sent without waiting for the
#: page's end).
YIELD_EVERY = 50
#: Insert, Update, Delete: one change each (Truncate counts one per table: always decoded).
_ROW_TAGS = frozenset(b"IUD")
#: Changes inside a streamed chunk (kept until the commit).
_STREAM_ROW_TAGS = frozenset(b"IUDT")


@dataclass(frozen=True, slots=True)
class SlotPosition:
    """A checkpoint marker: the slot may be advanced to `lsn`."""

    lsn: int


@dataclass(slots=True)
class Txn:
    commit_lsn: int
    commit_time: float
    ordinal: int = 0


@dataclass(eq=False, slots=True)
class _Run:
    """Inserts decoded and not shaped yet: of one table (`relid`) in one transaction."""

    relid: int = -1
    txn: Txn | None = None
    #: (new row, ordinal in the transaction, message size) each.
    rows: list[tuple[tuple[Value, ...], int, int]] = field(default_factory=list)


@dataclass(eq=False, slots=True)
class Replay:
    """A committed streamed transaction being read back from its spill."""

    spill: Spill
    changes: Iterator[bytes]
    txn: Txn
    end_lsn: int
    decoder: Decoder = field(default_factory=lambda: Decoder(in_stream=True))


@dataclass(eq=False, slots=True)
class Session:
    """The decoding state of one peek."""

    decoder: Decoder = field(default_factory=Decoder)
    txn: Txn | None = None
    #: Rows fetched and not processed yet (after a Stream Commit being read back).
    pending: list[Any] = field(default_factory=list)
    streams: StreamedTransactions = field(default_factory=StreamedTransactions)
    replay: Replay | None = None

    def discard(self) -> None:
        """Streamed transactions of a peek that ends are sent again by the next one."""
        self.streams.close()
        if self.replay is not None:
            self.replay.spill.close()
            self.replay = None


class ChangeReader:
    def __init__(
        self,
        *,
        shard: ShardLog,
        shaper: Shaper,
        table: Callable[[Relation], Awaitable[Table]],
        on_marker: Callable[[], None],
        page_rows: int,
        truncate: Literal["deliver", "skip"],
        log: logging.Logger,
        trigger: str,
    ) -> None:
        self.shard = shard
        self.shaper = shaper
        #: Builds a Table from a Relation message (catalog look-ups).
        self.table = table
        #: Called after a marker was appended (the settled prefix may have moved).
        self.on_marker = on_marker
        self.page_rows = page_rows
        self.truncate = truncate
        self.log = log
        self.trigger = trigger
        self.tables: dict[int, Table] = {}
        #: The newest position read (or checkpointed): anything at or before it is skipped.
        self.read_pos: tuple[int, int] = (0, -1)
        #: Streamed transactions read back at their commit (for logs and tests).
        self.streamed_transactions = 0
        #: Changes whose record could not be built (handed to the pipeline to give up).
        self.unbuilt = 0

    async def process(self, session: Session, rows: list[Any]) -> int:
        """Decode rows into the shard log; stops after a Stream Commit (its changes are read
        back first), keeping the rest in `session.pending`.

        Inserts (most messages) are decoded as they come and their records built a run at a
        time: a run is the Inserts of one table in one transaction between two other messages
        (or turns of the event loop), shaped in one pass and appended in one call."""
        appended = 0
        decoder = session.decoder
        run = _Run()
        for index, row in enumerate(rows):
            if index and not index % YIELD_EVERY:
                appended += self._shape_run(run)
                await asyncio.sleep(0)  # let a finished invocation be settled and the next start
            data = row["data"]
            txn = session.txn
            if (
                txn is not None
                and txn.commit_lsn <= self.read_pos[0]
                and data[0] in _ROW_TAGS
                and (txn.commit_lsn, txn.ordinal) <= self.read_pos
            ):
                txn.ordinal += 1  # read before (an earlier peek): skipped without decoding
                continue
            if decoder.in_stream and data[0] in _STREAM_ROW_TAGS:
                session.streams.add(data)  # an uncommitted change: kept until the commit
                continue
            if data[0] == 0x49 and not decoder.in_stream:  # an Insert: most messages
                appended += self._add_insert(run, txn, decoder, data)
                continue
            appended += self._shape_run(run)
            msg = decoder.decode(data)
            if isinstance(msg, (Insert, Update, Delete)):  # most messages: the short way
                if txn is None:
                    raise RuntimeError("a change outside a transaction")
                appended += self._change(txn, msg, len(data))
            elif isinstance(msg, Relation):
                self.tables[msg.relid] = await self.table(msg)
            elif isinstance(msg, StreamCommit):
                if self._start_replay(session, msg):
                    session.pending = rows[index + 1 :]
                    break
            elif msg is not None:
                appended += self._handle(session, msg, len(data))
        return appended + self._shape_run(run)

    def _add_insert(self, run: _Run, txn: Txn | None, decoder: Decoder, data: bytes) -> int:
        """An Insert message outside a streamed chunk, decoded (without a message object)
        into the run; returns the records appended (of the run before, another table's)."""
        if txn is None:
            raise RuntimeError("a change outside a transaction")
        relid, new = decoder.insert(data)
        ordinal = txn.ordinal
        txn.ordinal = ordinal + 1
        if (txn.commit_lsn, ordinal) <= self.read_pos:
            return 0
        # `read_pos` moves when the run's records are in the shard log (`_shape_run`): a row
        # whose shaping failed for a cause outside the row is read again by the next peek
        appended = 0
        if relid != run.relid or txn is not run.txn:
            appended = self._shape_run(run)
            run.relid, run.txn = relid, txn
        run.rows.append((new, ordinal, len(data)))
        return appended

    def _shape_run(self, run: _Run) -> int:
        """The records of a run of Inserts, appended to the shard log; the run is emptied.
        If one of them cannot be built, each is built on its own: that one's record carries
        its error (`_unbuilt`)."""
        rows = run.rows
        if not rows:
            return 0
        txn, table = run.txn, self.tables[run.relid]
        assert txn is not None
        run.rows = []
        run.relid = -1
        records: list[Record] | None
        try:
            records = self.shaper.inserts(table, rows, txn.commit_lsn, txn.commit_time)
        except Exception:  # one at a time: the failing row's record carries its error
            records = None
        if records is None:  # out of the handler (`_append_insert`)
            for new, ordinal, size in rows:
                self._append_insert(txn, table, new, ordinal, size)
            return len(rows)
        self.shard.extend(records)
        self.read_pos = (txn.commit_lsn, rows[-1][1])
        return len(records)

    def _start_replay(self, session: Session, msg: StreamCommit) -> bool:
        spill = session.streams.commit(msg.xid)
        if spill is None:  # nothing of it was published
            self.mark(SlotPosition(msg.end_lsn), (msg.commit_lsn, END))
            return False
        txn = Txn(msg.commit_lsn, msg.commit_time)
        session.replay = Replay(spill, spill.replay(), txn, msg.end_lsn)
        self.streamed_transactions += 1
        return True

    def replay_some(self, session: Session, replay: Replay) -> int:
        """Up to a page of a committed streamed transaction's changes."""
        appended = 0
        txn = replay.txn
        for _ in range(self.page_rows):
            data = next(replay.changes, None)
            if data is None:
                replay.spill.close()
                session.replay = None
                self.mark(SlotPosition(replay.end_lsn), (txn.commit_lsn, END))
                break
            if data[0] in _ROW_TAGS and (txn.commit_lsn, txn.ordinal) <= self.read_pos:
                txn.ordinal += 1
                continue
            msg = replay.decoder.decode(data)
            if msg is not None:
                appended += self._change(txn, msg, len(data))
        return appended

    def mark(self, marker: SlotPosition, position: tuple[int, int]) -> None:
        if position > self.read_pos:
            self.read_pos = position
            self.shard.mark(marker)
            self.on_marker()

    def _handle(self, session: Session, msg: Message, size: int) -> int:
        """One decoded message (not a Relation); returns the records appended."""
        if isinstance(msg, (Insert, Update, Delete, Truncate)):
            if session.txn is None:
                raise RuntimeError("a change outside a transaction")
            return self._change(session.txn, msg, size)
        if isinstance(msg, Begin):
            session.txn = Txn(msg.final_lsn, msg.commit_time)
        elif isinstance(msg, Commit):
            session.txn = None
            self.mark(SlotPosition(msg.end_lsn), (msg.commit_lsn, END))
        elif isinstance(msg, StreamStart):
            session.streams.start(msg.xid)
        elif isinstance(msg, StreamStop):
            session.streams.stop()
        elif isinstance(msg, StreamAbort):
            session.streams.abort(msg.xid, msg.subxid)
        return 0  # Type messages: types are looked up in the catalog

    def _insert(self, txn: Txn, relid: int, new: tuple[Value, ...], size: int) -> int:
        ordinal = txn.ordinal
        txn.ordinal = ordinal + 1
        if (txn.commit_lsn, ordinal) <= self.read_pos:
            return 0
        self._append_insert(txn, self.tables[relid], new, ordinal, size)
        return 1

    def _append_insert(
        self, txn: Txn, table: Table, new: tuple[Value, ...], ordinal: int, size: int
    ) -> None:
        commit_lsn, commit_time = txn.commit_lsn, txn.commit_time
        try:
            rec: Record | Exception = self.shaper.row(
                "INSERT", table, new, None, False, commit_lsn, ordinal, commit_time, size
            )
        except Exception as exc:
            rec = exc  # its record is built out of the handler (`_unbuilt`)
        if isinstance(rec, Exception):
            rec = self._unbuilt(rec, "INSERT", table, new, None, txn, ordinal, size)
        self.shard.append(rec)
        self.read_pos = (commit_lsn, ordinal)  # once its record is in the log

    def _unbuilt(
        self,
        exc: Exception,
        event_name: str,
        table: Table,
        values: Sequence[Value],
        fallback: Sequence[Value] | None,
        txn: Txn,
        ordinal: int,
        size: int,
    ) -> Record:
        """The record of a change that the shaper could not build, carrying the error, for
        the pipeline to give up (on-failure destination) instead of blocking the slot.
        Called out of the `except` block that caught `exc`: an error raised here (or later
        while the handler ran) would chain `exc` into the traceback `source.receive_failed`
        logs, and its message may quote the row's values.

        Building a record is pure computation on the row's values and the table's
        description (the catalog look-ups happen before, for the Relation message, and
        their failures are retried as read errors): so an exception here is an error of the
        row, which reading it again cannot change. Only running out of memory is not one of
        the row: it is raised (the change is read again)."""
        if isinstance(exc, MemoryError):
            raise exc
        error = BuildError.of(exc, f"postgres table {table.qualified}")
        self.unbuilt += 1
        return self.shaper.unbuilt(
            event_name,
            table,
            values,
            fallback,
            txn.commit_lsn,
            ordinal,
            txn.commit_time,
            size,
            error,
        )

    def _change(self, txn: Txn, msg: Message, size: int) -> int:
        if isinstance(msg, Truncate):
            return self._truncate(txn, msg, size)
        if isinstance(msg, Insert):  # read back from a streamed transaction
            return self._insert(txn, msg.relid, msg.new, size)
        ordinal = txn.ordinal
        txn.ordinal = ordinal + 1
        position = (txn.commit_lsn, ordinal)
        if position <= self.read_pos:
            return 0
        assert isinstance(msg, (Update, Delete))
        table = self.tables[msg.relid]
        new = msg.new if isinstance(msg, Update) else None
        name = "MODIFY" if new is not None else "REMOVE"
        try:
            rec: Record | Exception = self.shaper.row(
                name,
                table,
                new,
                msg.old,
                msg.old_kind == "O",
                txn.commit_lsn,
                ordinal,
                txn.commit_time,
                size,
            )
        except Exception as exc:
            rec = exc  # its record is built out of the handler (`_unbuilt`)
        if isinstance(rec, Exception):
            values = new if new is not None else msg.old
            assert values is not None
            rec = self._unbuilt(rec, name, table, values, msg.old, txn, ordinal, size)
        self.shard.append(rec)
        self.read_pos = position  # once its record is in the log: else it is read again
        return 1

    def _truncate(self, txn: Txn, msg: Truncate, size: int) -> int:
        appended = 0
        for relid in msg.relids:
            ordinal = txn.ordinal
            txn.ordinal += 1
            position = (txn.commit_lsn, ordinal)
            if position <= self.read_pos:
                continue
            table = self.tables[relid]
            if self.truncate == "skip":
                self.read_pos = position
                self.log.warning(
                    "postgres.truncate_skipped",
                    extra={"trigger": self.trigger, "table": table.qualified},
                )
                continue
            rec = self.shaper.truncate(
                table=table,
                cascade=msg.cascade,
                restart_identity=msg.restart_identity,
                commit_lsn=txn.commit_lsn,
                ordinal=ordinal,
                commit_time=txn.commit_time,
                size_bytes=size,
            )
            self.shard.append(rec, barrier=True)
            self.read_pos = position
            appended += 1
        return appended
