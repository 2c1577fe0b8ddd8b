"""The `postgres` source: row changes of PostgreSQL tables as DynamoDB Streams records.

How it works:
- At start: the server's preconditions are checked (wal_level, REPLICATION, replica
  identities for the stream view type), then the publication and the logical slot are created
  or reused after checking them. Nothing is ever dropped implicitly.
- Reading: `pg_logical_slot_peek_binary_changes` (which does not consume) through a server-side
  cursor, `page_rows` rows per round trip, decoded as they arrive; a peek is bounded by the WAL
  flushed when it began and by `peek_changes` (whole transactions). Reading happens inside
  `receive` and only while the shard log has room (`read_ahead`): memory stays bounded however
  large a transaction is. A peek always starts at the slot's confirmed position, so changes
  read before are skipped by position (commit LSN, place in the transaction).
- Checkpoints: the shard log (triggerd.delivery.streams) yields the settled prefix. At the end
  of a transaction, or at "read up to L" after a peek that found everything up to L, the slot
  is advanced (`pg_replication_slot_advance`); inside a transaction (a large one, partly
  acknowledged) the position goes to the state store, so a restart neither loses the rest of
  the transaction nor delivers its acknowledged part again. Settling and checkpointing run in
  the source's own task, one round trip at a time.
- Waking up: an empty peek waits `poll_interval_s`, doubling up to `max_poll_interval_s`; a
  NOTIFY on `wake_channel` ends the wait at once.
- Lag: every `lag_interval_s`, the slot's lag (bytes behind the server's WAL, bytes of WAL it
  retains) is measured; above `wal_retention_warning_mb` a warning is logged.
- Several daemons (a PostgreSQL state store): the source is `RunsOnce` under the lease
  `pgslot:<database>/<slot>`, so only the holder peeks the slot; a standby only checks the
  slot at start and measures its lag. Taking the lease calls `resume`, which forgets what was
  read and re-reads the slot's confirmed position (and the saved position inside a partly
  acknowledged transaction) from the servers: a previous holder may have moved them.

  What fences a stale holder (one that kept reading after its lease ran out: a process
  paused longer than the lease's margin)? PostgreSQL lets one backend use a slot at a time, so
  two peeks or advances never run at once (the loser gets "replication slot ... is active",
  retried). Nothing else does, and nothing else needs to: the stale reader only ever advances
  the slot (or saves a position) to the end of the settled prefix of what it read itself, so
  over changes that were delivered (or sent to the on-failure destination). A successor then
  skips only changes already delivered, and re-reads everything after; the worst case is a
  change delivered twice, never one lost. An advance never moves the slot backwards (it goes
  to the greater of the target and the slot's confirmed position), so a stale advance behind
  a successor's is a no-op, not an error.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from triggerd.delivery.failures import stream_batch_info
from triggerd.delivery.retry import Backoff
from triggerd.delivery.streams import ShardLog
from triggerd.types import (
    BaseSource,
    ConfigError,
    JSONDict,
    PartitionStats,
    PermanentError,
    Record,
    RetryableError,
    SourceContext,
    SourceStats,
)

from . import server
from .catalog import Catalog
from .changes import END, ChangeReader, Session, SlotPosition
from .config import PostgresSourceConfig
from .shape import Shaper, parse_sequence_number

if TYPE_CHECKING:
    import asyncpg
    from asyncpg.cursor import Cursor
    from asyncpg.transaction import Transaction

__all__ = ["PostgresSource"]

#: Shortest time between two checkpoints (slot advances, state-store writes).
CHECKPOINT_INTERVAL_S = 0.1
#: Longest: how long acknowledged changes may wait for the slot to move past them.
MAX_CHECKPOINT_INTERVAL_S = 2.0
#: Share of the time the slot may spend being advanced. An advance decodes the WAL from the
#: slot's restart position (which the server moves only now and then: every 15 s or at a
#: checkpoint), so under a steady stream each advance costs more than the one before; the
#: time between two advances is this many times longer than the last advance took.
ADVANCE_SHARE = 0.1
#: State-store key of the position inside a partly acknowledged transaction.
POSITION_KEY = "postgres.position"


_PEEK_SQL = (
    "SELECT data FROM pg_logical_slot_peek_binary_changes($1, $2::pg_lsn, $3, "
    "'proto_version', '1', 'publication_names', $4)"
)
_PEEK_STREAMING_SQL = (
    "SELECT data FROM pg_logical_slot_peek_binary_changes($1, $2::pg_lsn, $3, "
    "'proto_version', '2', 'publication_names', $4, 'streaming', 'on')"
)

#: Never backwards: a stale holder's advance behind its successor's is a no-op, not an error
#: ("cannot advance replication slot to X, minimum is Y").
_ADVANCE_SQL = (
    "SELECT pg_replication_slot_advance(slot_name, GREATEST($2::pg_lsn, confirmed_flush_lsn)) "
    "FROM pg_replication_slots WHERE slot_name = $1"
)


#: The least time between two warnings of one lasting condition (WAL retention, a slot at
#: risk of invalidation).
WARN_EVERY_S = 600.0


@dataclass(eq=False, slots=True)
class _Peek:
    """One open peek: its transaction and cursor, and the decoding state."""

    transaction: Transaction
    cursor: Cursor
    upto_lsn: int
    rows: int = 0
    #: The cursor returned its last row.
    exhausted: bool = False
    session: Session = field(default_factory=Session)


class PostgresSource(BaseSource):
    def __init__(self, config: PostgresSourceConfig, ctx: SourceContext) -> None:
        self.config = config
        self.ctx = ctx
        self.log = ctx.log
        self.trigger = ctx.trigger
        self.slot = config.slot_name(ctx.trigger)
        self.publication = config.publication_name(ctx.trigger)
        self.database = config.database_name
        self.shard_id = f"shardId-{self.slot}"
        self.shaper = Shaper(
            region=ctx.region,
            account_id=ctx.account_id,
            database=self.database,
            slot=self.slot,
            view_type=config.stream_view_type,
            placeholder=config.unchanged_toast_placeholder,
            parallelization_factor=config.parallelization_factor,
        )
        self.shard = ShardLog(
            ctx.clock,
            max_entries=config.read_ahead,
            max_bytes=int(config.read_ahead_mb * 1024 * 1024),
            redeliver_delay_s=config.max_poll_interval_s,
        )
        self.catalog = Catalog(
            query=self._query,
            region=ctx.region,
            account_id=ctx.account_id,
            database=self.database,
            slot=self.slot,
            needs_old_image=config.needs_old_image,
            view_type=config.stream_view_type,
            log=self.log,
            trigger=self.trigger,
        )
        self.changes = ChangeReader(
            shard=self.shard,
            shaper=self.shaper,
            table=self.catalog.table,
            on_marker=self._take_checkpoint,
            page_rows=config.page_rows,
            truncate=config.truncate,
            log=self.log,
            trigger=self.trigger,
        )
        self._reader: asyncpg.Connection | None = None
        self._control: asyncpg.Connection | None = None
        self._control_lock = asyncio.Lock()
        #: Held while a peek decodes on the server and while the slot is advanced (a slot
        #: being decoded cannot be advanced).
        self._slot_lock = asyncio.Lock()
        self._peek: _Peek | None = None
        #: The newest position read (or checkpointed): anything at or before it is skipped.
        self._advanced_lsn = 0
        #: Checkpoints not written yet: the newest slot position reached, and the newest
        #: position inside a transaction (state store) after it.
        self._to_advance: SlotPosition | None = None
        self._to_save: Record | None = None
        #: Monotonic times before which the checkpoint loop writes no checkpoint, and before
        #: which no advance is made before a new peek (the last one's share of the time).
        self._next_checkpoint_at = 0.0
        self._next_advance_at = 0.0
        self._wake = asyncio.Event()
        self._settled = asyncio.Event()
        self._dirty = asyncio.Event()
        self._idle_s = config.poll_interval_s
        self._runner: asyncio.Task[None] | None = None
        #: Protocol v2 streaming asked for (config, and the server is 14 or later).
        self.streaming = False
        self._lag = PartitionStats(self.slot, None, 0.0, None)
        #: When each condition's warning was last logged (`_warn_while`).
        self._warned_at: dict[str, float] = {}
        self._stopped = False

    # ---- lifecycle ----

    async def start(self) -> None:
        conn = await server.connect(self.config, self.trigger, "control")
        try:
            await self._prepare(conn)
        except BaseException:
            await conn.close()
            raise
        self._control = conn
        if self.config.wake_channel:
            await conn.add_listener(self.config.wake_channel, self._on_notify)
        self._runner = asyncio.create_task(self._run(), name=f"postgres-{self.trigger}")
        self.log.info(
            "postgres.started",
            extra={
                "trigger": self.trigger,
                "server": self.config.display(),
                "slot": self.slot,
                "publication": self.publication,
                "position": self.changes.read_pos[0],
            },
        )

    async def _prepare(self, conn: asyncpg.Connection) -> None:
        import asyncpg

        cfg = self.config
        version = await server.check_server(conn, cfg, self.trigger)
        self.streaming = cfg.streaming and version >= 140000
        if cfg.streaming and not self.streaming:
            self.log.warning(
                "postgres.streaming_unavailable",
                extra={"trigger": self.trigger, "server_version": version},
            )
        await server.check_tables(conn, cfg, self.trigger)
        try:
            # A recording (`triggerd record`) only reads an existing slot: it creates nothing.
            create = not cfg.recording
            if await server.ensure_publication(
                conn, cfg, self.publication, self.trigger, version, create=create
            ):
                self.log.info(
                    "postgres.publication_created",
                    extra={"trigger": self.trigger, "publication": self.publication},
                )
            confirmed = await server.ensure_slot(
                conn, self.slot, self.database, self.trigger, create=create
            )
            lag = await server.slot_lag(conn, self.slot)
            if lag is not None and lag.invalidation is not None:
                raise ConfigError(
                    [server.invalidated_message(self.trigger, self.slot, lag.invalidation)]
                )
        except asyncpg.InsufficientPrivilegeError as exc:
            raise ConfigError(
                [f"trigger {self.trigger!r}: {cfg.display()}: {exc} (needed for the publication)"]
            ) from None
        except asyncpg.ObjectInUseError as exc:
            raise RetryableError(f"slot {self.slot}: {exc}") from None
        await self._go_on_from(confirmed)

    async def _go_on_from(self, confirmed: int) -> None:
        """Read from the slot's confirmed position, or from the saved position inside a
        partly acknowledged transaction when that is further."""
        self._advanced_lsn = confirmed
        self.changes.read_pos = (confirmed - 1, END) if confirmed else (0, -1)
        saved = await self.ctx.state.get_checkpoint(self.trigger, POSITION_KEY)
        if saved:
            position = parse_sequence_number(saved)
            if position > self.changes.read_pos:
                self.changes.read_pos = position

    @property
    def singleton_lease(self) -> str:
        """RunsOnce: one daemon of a cluster reads a slot, the holder of this lease."""
        return f"pgslot:{self.database}/{self.slot}"

    async def resume(self) -> None:
        """RunsOnce: this daemon (again) holds the slot's lease. What was read before is
        forgotten (the pipeline settled or gave back all of it when the last term ended) and
        reading goes on from the positions on the servers, which another daemon may have
        moved."""
        async with self._slot_lock:
            await self._close_peek()
            await self._reset_reader()
            self._to_advance = self._to_save = None
            self.shard = self.changes.shard = ShardLog(
                self.ctx.clock,
                max_entries=self.shard.max_entries,
                max_bytes=self.shard.max_bytes,
                redeliver_delay_s=self.shard.redeliver_delay_s,
            )
            self.changes.tables.clear()  # relations are sent again to each new peek session
            async with self._control_lock:
                lag = await server.slot_lag(await self._control_conn(), self.slot)
            if lag is None:
                raise RetryableError(f"slot {self.slot} does not exist (dropped?)")
            await self._go_on_from(lag.confirmed_lsn)
        self.log.info(
            "postgres.resumed",
            extra={"trigger": self.trigger, "slot": self.slot, "position": lag.confirmed_lsn},
        )

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        self._take_checkpoint()
        if self._to_advance is not None or self._to_save is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await self._commit()
        await self._close_peek()
        for conn in (self._reader, self._control):
            if conn is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(conn.close(), 5)
        self._reader = self._control = None

    async def _run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._checkpoint_loop())
            tg.create_task(self._lag_loop())

    def _on_notify(self, *_: Any) -> None:
        self._wake.set()

    # ---- connections ----

    async def _reader_conn(self) -> asyncpg.Connection:
        if self._reader is None or self._reader.is_closed():
            self._reader = await server.connect(self.config, self.trigger, "reader")
        return self._reader

    async def _control_conn(self) -> asyncpg.Connection:
        if self._control is None or self._control.is_closed():
            self._control = await server.connect(self.config, self.trigger, "control")
            if self.config.wake_channel:
                await self._control.add_listener(self.config.wake_channel, self._on_notify)
        return self._control

    @contextlib.asynccontextmanager
    async def _query(self) -> AsyncIterator[asyncpg.Connection]:
        """The control connection for one catalog query."""
        async with self._control_lock:
            yield await self._control_conn()

    async def _close_peek(self) -> None:
        peek, self._peek = self._peek, None
        if peek is not None:
            peek.session.discard()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(peek.transaction.rollback(), 5)

    async def _reset_reader(self) -> None:
        if self._peek is not None:
            self._peek.session.discard()
        self._peek = None
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.terminate()

    # ---- receiving ----

    async def receive(self, max_records: int, timeout_s: float) -> list[Record]:
        self._check_runner()
        clock = self.ctx.clock
        deadline = clock.monotonic() + timeout_s
        while True:
            out = self.shard.take(max_records)
            if out:
                return out
            now = clock.monotonic()
            if now >= deadline:
                return []
            held = self.shard.waiting_until()
            if held is not None or not self.shard.has_room():
                until = min(deadline, held) if held is not None else deadline
                self._settled.clear()
                await _wait(self._settled, until - now)
                continue
            appended, exhausted = await self._read()
            if appended:
                self._idle_s = self.config.poll_interval_s
                continue
            if exhausted:
                self._wake.clear()
                await _wait(self._wake, min(self._idle_s, deadline - now))
                if self._wake.is_set():
                    self._idle_s = self.config.poll_interval_s
                else:
                    self._idle_s = min(self._idle_s * 2, self.config.max_poll_interval_s)

    def _check_runner(self) -> None:
        runner = self._runner
        if runner is not None and runner.done() and not runner.cancelled():
            exc = runner.exception()
            if exc is not None:
                raise RuntimeError(f"postgres source of trigger {self.trigger!r} failed") from exc

    async def _read(self) -> tuple[int, bool]:
        """Read one page; returns (records appended, whether the peek was used up)."""
        try:
            return await self._read_page()
        except Exception:
            await self._reset_reader()
            raise

    async def _open_peek(self) -> _Peek:
        conn = await self._reader_conn()
        upto = int(await conn.fetchval("SELECT pg_current_wal_flush_lsn()"))
        transaction = conn.transaction(readonly=True)
        await transaction.start()
        sql = _PEEK_STREAMING_SQL if self.streaming else _PEEK_SQL
        cursor = await conn.cursor(sql, self.slot, upto, self.config.peek_changes, self.publication)
        return _Peek(transaction, cursor, upto)

    async def _read_page(self) -> tuple[int, bool]:
        peek = self._peek
        if peek is not None and peek.session.replay is not None:
            return self.changes.replay_some(peek.session, peek.session.replay), False
        if peek is not None and peek.session.pending:
            rows, peek.session.pending = peek.session.pending, []
        else:
            peek, rows = await self._fetch(peek)
        session = peek.session
        appended = await self.changes.process(session, rows)
        if session.replay is not None or session.pending or not peek.exhausted:
            return appended, False
        await self._close_peek()
        if peek.rows < self.config.peek_changes:
            # Everything committed before upto_lsn was read: the slot may go there.
            self.changes.mark(SlotPosition(peek.upto_lsn), (peek.upto_lsn - 1, END))
        return appended, True

    async def _fetch(self, peek: _Peek | None) -> tuple[_Peek, list[Any]]:
        """The next page of the open peek (a new peek when none is open)."""
        import asyncpg

        page = self.config.page_rows
        if peek is None:
            await self._catch_up_slot()
        try:
            if peek is None:
                async with self._slot_lock:
                    peek = self._peek = await self._open_peek()
                    rows = await peek.cursor.fetch(page)
            else:
                rows = await peek.cursor.fetch(page)
        except asyncpg.ObjectInUseError as exc:
            await self._close_peek()
            raise RetryableError(f"slot {self.slot} is in use elsewhere: {exc}") from None
        except asyncpg.UndefinedObjectError as exc:
            await self._close_peek()
            raise ConfigError([f"trigger {self.trigger!r}: {exc}"]) from None
        except asyncpg.ObjectNotInPrerequisiteStateError:
            # "can no longer get changes from replication slot": one line when the server
            # invalidated the slot, which no retry can read again.
            await self._close_peek()
            await self._fail_if_invalidated()
            raise
        peek.rows += len(rows)
        peek.exhausted = len(rows) < page
        return peek, list(rows)

    async def _fail_if_invalidated(self) -> None:
        """PermanentError when the server has invalidated the slot: the changes it had not
        delivered are gone from the WAL, and the trigger stops with what to do rather than
        retry (a traceback per retry) for ever."""
        try:
            async with self._query() as conn:
                lag = await server.slot_lag(conn, self.slot)
        except Exception:  # the server's refusal is raised as it is
            return
        if lag is not None and lag.invalidation is not None:
            raise PermanentError(
                server.invalidated_message(self.trigger, self.slot, lag.invalidation)
            ) from None

    async def _catch_up_slot(self) -> None:
        """Before a new peek, which starts at the slot's confirmed position: advance the slot
        over what is settled by now, rather than wait for the checkpoint loop's next turn, so
        that the peek does not fetch (and skip) again the changes already delivered: under a
        backlog the checkpoint loop's pauses otherwise let every peek re-read thousands."""
        self._take_checkpoint()
        advance = self._to_advance
        if advance is None or advance.lsn <= self._advanced_lsn:
            return
        if self.ctx.clock.monotonic() < self._next_advance_at:
            return  # the last advance took long: the checkpoint loop's next one goes there
        try:
            await self._paced_commit()
        except Exception as exc:  # as in the checkpoint loop: the points are kept for it
            # ... and the peeks that follow do not each try again at once (a connection
            # attempt and a warning before every peek): at most once per longest interval
            now = self.ctx.clock.monotonic()
            self._next_advance_at = max(self._next_advance_at, now + MAX_CHECKPOINT_INTERVAL_S)
            self.log.warning(
                "postgres.checkpoint_failed", extra={"trigger": self.trigger, "error": str(exc)}
            )
            self._dirty.set()

    # ---- settling ----

    async def ack(self, records: Sequence[Record]) -> None:
        self.ack_now(records)

    def ack_now(self, records: Sequence[Record]) -> None:
        """AcksInMemory: the settled prefix moves in memory; the checkpoint loop writes it."""
        self.shard.settle(records)
        self._take_checkpoint()
        self._settled.set()

    async def nack(self, records: Sequence[Record]) -> None:
        self.shard.give_back(records)
        self._settled.set()

    def _take_checkpoint(self) -> None:
        """Move the settled prefix out of the shard log (making room at once) into the
        checkpoints to write."""
        point = self.shard.checkpoint()
        if point is None:
            return
        if isinstance(point, SlotPosition):
            self._to_advance = point
            self._to_save = None  # the slot position is newer
        elif isinstance(point, Record):
            self._to_save = point
        self._dirty.set()

    async def _checkpoint_loop(self) -> None:
        backoff = Backoff(base_s=0.5, max_s=30.0)
        failures = 0
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            if self._to_advance is None and self._to_save is None:
                continue
            try:
                wait = self._next_checkpoint_at - self.ctx.clock.monotonic()
                if wait > 0:  # acks meanwhile are coalesced into this checkpoint
                    await self.ctx.clock.sleep(wait)
                await self._paced_commit()
                failures = 0
            except Exception as exc:  # task boundary: keep the points, try again later
                failures += 1
                delay = backoff.delay(failures)
                self.log.warning(
                    "postgres.checkpoint_failed",
                    extra={"trigger": self.trigger, "error": str(exc), "retry_in_s": delay},
                )
                await self.ctx.clock.sleep(delay)
                self._dirty.set()

    async def _paced_commit(self) -> None:
        """`_commit`, then no checkpoint of the loop for an interval (acks meanwhile are
        coalesced), and no advance before a peek for ten times as long as the advance took: an
        advance holds the slot, which the next peek needs, and costs the server more the
        longer it takes."""
        took = await self._commit()
        now = self.ctx.clock.monotonic()
        share = min(took / ADVANCE_SHARE, MAX_CHECKPOINT_INTERVAL_S)
        # (never earlier than another checkpoint under way at the same time set them)
        self._next_advance_at = max(self._next_advance_at, now + share)
        self._next_checkpoint_at = max(
            self._next_checkpoint_at, now + max(CHECKPOINT_INTERVAL_S, share)
        )

    async def _commit(self) -> float:
        """Advance the slot to the newest transaction end reached, then save the position
        inside a partly acknowledged transaction after it (if any). Returns the seconds the
        advance took on the server (0 when there was none)."""
        advance, save = self._to_advance, self._to_save
        took = 0.0
        if advance is not None and self.config.recording:
            self._to_advance = None  # a recording peeks the slot, never advances it
        elif advance is not None:
            if advance.lsn > self._advanced_lsn:
                clock = self.ctx.clock
                async with self._slot_lock, self._control_lock:
                    # looked at again: another checkpoint may have advanced it meanwhile
                    if advance.lsn > self._advanced_lsn:
                        conn = await self._control_conn()
                        started = clock.monotonic()
                        await conn.execute(_ADVANCE_SQL, self.slot, advance.lsn)
                        took = clock.monotonic() - started
                        self._advanced_lsn = advance.lsn
            if self._to_advance is advance:
                self._to_advance = None
        if save is not None:
            await self.ctx.state.set_checkpoints(self.trigger, {POSITION_KEY: save.item_id})
            if self._to_save is save:
                self._to_save = None
        return took

    # ---- lag ----

    def stats(self) -> SourceStats:
        """ReportsStats: the slot as the source's one partition (committed offset = the
        slot's confirmed LSN, lag in WAL bytes; the number of changes behind is not known)."""
        return SourceStats(partitions=(self._lag,))

    async def _lag_loop(self) -> None:
        interval = self.config.lag_interval_s
        while True:
            try:
                await self.measure_lag()
            except Exception as exc:  # task boundary: measured again next time
                self.log.warning(
                    "postgres.lag_failed", extra={"trigger": self.trigger, "error": str(exc)}
                )
            await self.ctx.clock.sleep(interval)

    async def measure_lag(self) -> PartitionStats:
        async with self._control_lock:
            measured = await server.slot_lag(await self._control_conn(), self.slot)
        oldest = self.shard.oldest_unsettled()
        now = self.ctx.clock.time()
        seconds = max(0.0, now - oldest) if oldest is not None else 0.0
        if measured is None:
            self._lag = PartitionStats(self.slot, None, seconds, None)
            return self._lag
        self._lag = PartitionStats(
            self.slot,
            None,
            seconds,
            measured.confirmed_lsn,
            lag_bytes=measured.lag_bytes,
            retained_bytes=measured.retained_bytes,
        )
        self._warn_retention(measured.retained_bytes, now)
        self._warn_unreserved(measured.wal_status, now)
        return self._lag

    def _warn_unreserved(self, wal_status: str | None, now: float) -> None:
        """The server keeps WAL past `max_slot_wal_keep_size` for this slot no more: its next
        checkpoint invalidates the slot (and its undelivered changes) unless it catches up."""
        reason = (
            "the slot is further behind than max_slot_wal_keep_size: the server's next "
            "checkpoint invalidates it unless it catches up"
        )
        self._warn_while(
            "postgres.slot_at_risk",
            wal_status == "unreserved",
            now,
            {"wal_status": wal_status, "reason": reason},
        )

    def _warn_retention(self, retained: int, now: float) -> None:
        limit_mb = self.config.wal_retention_warning_mb
        fields = {"retained_mb": round(retained / 1024 / 1024, 1), "threshold_mb": limit_mb}
        self._warn_while("postgres.wal_retention", retained > limit_mb * 1024 * 1024, now, fields)

    def _warn_while(self, event: str, holds: bool, now: float, fields: dict[str, Any]) -> None:
        """`event` at WARNING while `holds`, at most every `WARN_EVERY_S` (at once again
        after it stopped holding)."""
        if not holds:
            self._warned_at.pop(event, None)
            return
        last = self._warned_at.get(event)
        if last is not None and now - last < WARN_EVERY_S:
            return
        self._warned_at[event] = now
        self.log.warning(event, extra={"trigger": self.trigger, "slot": self.slot, **fields})

    # ---- shapes ----

    def encode_event(self, records: Sequence[Record]) -> bytes:
        """EncodesEvents: `{"Records":[...]}` joined from the JSON each record was built with
        (the same bytes as serialising the envelope)."""
        return b'{"Records":[' + b",".join([r.handle for r in records]) + b"]}"

    def batch_info(self, records: Sequence[Record]) -> JSONDict:
        if not records:
            return {}
        return stream_batch_info(
            "DDBStreamBatchInfo",
            shard_id=self.shard_id,
            stream_arn=str(records[0].payload.get("eventSourceARN", "")),
            records=records,
        )


async def _wait(event: asyncio.Event, wait_s: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), max(0.0, wait_s))
