"""Reading a sharded log (Kinesis Data Streams, DynamoDB Streams) through its polling API:
one implementation of shard discovery, resharding order, iterators, throttling and checkpoints
for every such source; a connector supplies the API calls (`ShardApi`) and the record shape.

- Discovery: the shard list is read at start and every `refresh_s`. A shard is read only
  after all its parents are finished (checkpointed at their end) or gone from the list (trimmed
  away), so a key's records stay in order across splits and merges. A shard descended from
  one with a stored checkpoint appeared after the first start, also when a restart lists it
  first: it counts as one that appears later (below).
- Starting point of a shard without a checkpoint: the configured `starting_position` for the
  shards found at the first start (with LATEST, shards already closed then have nothing new
  and count as finished: SHARD_END is stored for them); TRIM_HORIZON for shards that appear
  later (children of a reshard), as AWS does. With LATEST, the first start is the trigger's
  (no shard checkpoint stored yet), not the process's: a daemon restarted, or one joining a
  cluster, after a reshard reads the children nobody checkpointed yet from TRIM_HORIZON.
  Before a shard is first read from LATEST, its starting point is pinned: the checkpoint
  `AT_TIMESTAMP:<epoch seconds>` (a second before the iterator is taken, fenced like the
  other checkpoint writes) is stored first, so a restart or another daemon taking the shard
  over before its first checkpoint goes on from there instead of from a later LATEST
  (nothing put in between is skipped; at least once). An API without AT_TIMESTAMP (DynamoDB
  Streams) reads from TRIM_HORIZON instead, and the records created before the pin are
  skipped.
- Reading: each shard has its own task and `ShardLog` (triggerd.delivery.streams); it reads
  only while the log has room, waits `poll_interval_s` after an empty page (AWS polls an idle
  shard about once a second), and marks the shard's end when the API says it is closed and
  read to the end.
- Errors: throttling (`Throttled`) backs off exponentially and retries the same iterator; an
  expired iterator (`IteratorExpired`) is replaced by one just after the last record read (or
  from the checkpoint when nothing was read), so nothing is lost or read twice; other errors
  are logged and retried the same way after a backoff (with the same iterator when there is
  no position to renew it from: LATEST before the first record). Records trimmed past the
  stream's retention (`Trimmed`) are lost upstream: one warning, then reading goes on from
  the shard's TRIM_HORIZON; a shard not found (`ShardGone`) and gone from the listing is
  finished (its children start), as AWS's event source mappings do.
- Checkpoints: after each acknowledgement the settled prefix of the shard's log gives the
  newest sequence number that may be checkpointed; a writer task puts it in the state store
  under `shard:<shard id>` (`SHARD_END` once the shard is finished, which lets its children
  start), coalescing what was acknowledged meanwhile, so a shard's next batch never waits for
  the disk. A crash before a write only means those records are delivered again.
- Tumbling windows (`tumbling_window_s` > 0, Lambda's TumblingWindowInSeconds): each record
  belongs to the window of its arrival time (windows aligned to the epoch, per shard). When a
  record of a later window is read, when the shard is read up to now and the clock is past the
  window's end, or at the shard's end, a `WindowEnd` record is appended: a barrier handed
  out alone after the window's records, the window's final invocation (no records). The
  `state` the function returns travels to the next invocation of the same window and shard,
  and is written under `window:<shard id>` with the checkpoint that covers the records it
  saw; the final invocation's success deletes it. A state above 1 MB ends the window early
  (an invocation flagged `isWindowTerminatedEarly`), after which it goes on from `{}`.
- Several daemons (a store shared by them, triggerd.delivery.shardleases): a shard is read
  only while this daemon holds its lease, balanced across the live daemons. Its checkpoints
  are written fenced by the lease's epoch, and the shards finished by other daemons are
  seen in the store (their children start then). Leases are renewed by a task of their own,
  never behind a balancing round. Taking a lease starts from the stored checkpoint (read
  within the lease's safety margin, else the lease goes back); losing one stops reading the
  shard, gives its buffered records back and waits for its batches in flight (the
  pipeline's `release_keys`): their checkpoints are refused, so the new holder delivers
  them again (at least once). Leases are released at stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal, Protocol, TypeVar

import orjson

from triggerd.config.aws import error_code, error_message, transient
from triggerd.config.streams import StartingPosition
from triggerd.delivery.failures import stream_batch_info
from triggerd.delivery.retry import Backoff
from triggerd.delivery.settle import settle
from triggerd.delivery.shardleases import ShardLeases, coordinated
from triggerd.delivery.streams import RecordRate, ShardLog
from triggerd.state.base import StateStore
from triggerd.state.leases import LeaseLostError
from triggerd.types import (
    BaseSource,
    Clock,
    ConfigError,
    InvokeResult,
    JSONDict,
    Outcome,
    PartitionStats,
    PipelineControl,
    Record,
    RetryableError,
    SourceContext,
    SourceStats,
)

__all__ = [
    "SHARD_END",
    "IteratorExpired",
    "Page",
    "ShardApi",
    "ShardGone",
    "ShardInfo",
    "ShardReader",
    "ShardedSource",
    "StartingPosition",
    "Throttled",
    "Trimmed",
    "WindowEnd",
]

_T = TypeVar("_T")

#: Checkpoint value of a shard read to its end.
SHARD_END = "SHARD_END"
_KEY_PREFIX = "shard:"
_WINDOW_PREFIX = "window:"
#: The stream (its ARN) the trigger's shard checkpoints belong to.
_STREAM_KEY = "stream"
#: Set when the stream replaced one the trigger's source had before (its previous ARN):
#: the trigger's first start is past although no shard of this stream has a checkpoint.
_FOLLOWED_KEY = "stream_followed"
#: When the stream was created (`ShardReader.stream_created`).
_CREATED_KEY = "stream_created"
#: Checkpoint value of a shard pinned at the time it was first read from LATEST.
PIN_PREFIX = "AT_TIMESTAMP:"
#: A pin is this many seconds before the LATEST iterator is taken (and rounded down to the
#: second): clock skew between the daemon and the stream's servers, and DynamoDB's creation
#: times rounded down to the second, never put a record read after the pin before it.
PIN_MARGIN_S = 1.0
#: Lambda ends a tumbling window early when its state grows past this (JSON bytes).
MAX_WINDOW_STATE = 1024 * 1024


class Throttled(Exception):
    """The API refused the call for now (ProvisionedThroughputExceeded, LimitExceeded)."""


class Trimmed(Exception):
    """The position asked for is older than the stream keeps (TrimmedDataAccessException):
    the records there are gone upstream."""


class ShardGone(Exception):
    """The shard was not found (ResourceNotFoundException): trimmed away past the stream's
    retention, or the stream itself is gone (the shard listing tells which)."""


class IteratorExpired(Exception):
    """The shard iterator is no longer valid (ExpiredIteratorException)."""


@dataclass(frozen=True, slots=True)
class ShardInfo:
    shard_id: str
    parents: tuple[str, ...] = ()
    #: Set when the shard is closed (split or merged away): its last sequence number.
    ending_sequence: str | None = None


@dataclass(slots=True)
class Page:
    records: list[Any]
    #: None when the shard is closed and read to its end.
    next_iterator: str | None
    millis_behind: int | None = None


class ShardApi(Protocol):
    """The polling calls of a Kinesis-like API, errors mapped to `Throttled`,
    `IteratorExpired`, `Trimmed` and `ShardGone`."""

    async def list_shards(self) -> list[ShardInfo]: ...

    async def iterator(
        self, shard_id: str, kind: str, *, sequence: str | None, timestamp: float | None
    ) -> str:
        """A shard iterator of `kind` (TRIM_HORIZON, LATEST, AT_TIMESTAMP,
        AFTER_SEQUENCE_NUMBER)."""
        ...

    async def get_records(self, iterator: str, limit: int) -> Page: ...


@dataclass(slots=True, eq=False)
class WindowEnd(Record):
    """The end of a shard's tumbling window: the window's final invocation (no records)."""

    window_start: float = 0.0
    #: Ends the window early (the state grew past MAX_WINDOW_STATE); the window goes on
    #: with a fresh state. Not in the shard's log: the reader hands it out itself.
    early: bool = False


def _window_start(at: float, size_s: int) -> float:
    return math.floor(at / size_s) * size_s


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


#: Turns one raw API record of a shard into a Record (item_id = its sequence number).
Shape = Callable[[Any, str], Record]


@dataclass(eq=False)
class _Shard:
    info: ShardInfo
    log: ShardLog
    #: Sequence number checkpointed (or SHARD_END); None before the first checkpoint.
    checkpoint: str | None
    #: Sequence number of the last record read (None when nothing was read yet).
    last_read: str | None = None
    #: The first iterator's kind when there is no checkpoint.
    start_kind: str = "TRIM_HORIZON"
    millis_behind: int | None = None
    task: asyncio.Task[None] | None = None
    #: An iterator taken before the shard's task started (LATEST at start).
    iterator: str | None = None
    #: Tumbling windows, reading side: start of the window whose records were read and
    #: whose end was not appended yet.
    open_window: float | None = None
    #: Invoking side: the window whose `state` the function returned last, and that state.
    window: float | None = None
    state: JSONDict = field(default_factory=dict)
    #: The state to write with the next checkpoint (a JSON document).
    unsaved_state: str | None = None
    #: An early end of the window to hand out once the shard has nothing in flight, and
    #: whether it is out (nothing else of the shard is handed out meanwhile).
    early_end: WindowEnd | None = None
    early_out: bool = False
    #: The ordering keys its records were handed out with (released when its lease is lost).
    keys: set[str] = field(default_factory=set)
    #: Its lease was lost: nothing is handed out or checkpointed any more.
    lost: bool = False
    #: The pinned start (epoch seconds) of a shard first read from LATEST and not
    #: checkpointed since: it is read again from there.
    pinned_at: float | None = None
    #: Records created before this are skipped (reading from a pin on an API without
    #: AT_TIMESTAMP); None once a record at or after it was read.
    skip_before: float | None = None
    #: Several daemons: its lease was taken and its position read from the store since
    #: (only then may it be read).
    taken_over: bool = False

    @property
    def finished(self) -> bool:
        return self.checkpoint == SHARD_END


@dataclass(eq=False)
class _Cursor:
    """Where a shard's reading task is: its iterator, failures in a row, and whether the
    next iterator starts at the trim horizon (the records after the position were
    trimmed)."""

    iterator: str | None
    failures: int = 0
    horizon: bool = False
    #: The last iterator expired and no page was read since.
    expired: bool = False
    backoff: Backoff = field(default_factory=lambda: Backoff(base_s=0.2, max_s=10.0))

    def next_delay(self) -> float:
        """One failure more: the delay before trying again."""
        self.failures += 1
        return self.backoff.delay(self.failures)

    async def back_off(self, clock: Clock) -> None:
        await clock.sleep(self.next_delay())


@dataclass(eq=False)
class ShardReader:
    api: ShardApi
    shape: Shape
    state: StateStore
    clock: Clock
    log: logging.Logger
    trigger: str
    starting_position: StartingPosition = "TRIM_HORIZON"
    starting_timestamp: float | None = None
    #: Records asked for per GetRecords call.
    page_limit: int = 1000
    poll_interval_s: float = 1.0
    refresh_s: float = 60.0
    #: Records held in memory per shard (read, not checkpointed yet).
    read_ahead: int = 10_000
    redeliver_delay_s: float = 1.0
    #: Lambda's TumblingWindowInSeconds (0: no windows).
    tumbling_window_s: int = 0
    kind: str = "stream"
    #: The stream's ARN: checkpoints stored for another stream (the trigger's `stream`
    #: changed) are dropped at start. Empty: not checked.
    stream: str = ""
    #: The API names the shards of a stream created again under the same name (same ARN)
    #: as it named the old one's (Kinesis: shardId-000000000000, ...): a shard finished
    #: here and listed open again is the new stream's. DynamoDB Streams never reuses a
    #: shard id (a new stream has a new ARN, and `stream` tells).
    reused_shard_ids: bool = False
    #: Whether the stream continues the one whose ARN is given (the stored one): a DynamoDB
    #: table named in the config and given a new stream (streams disabled and enabled
    #: again). Then the trigger reads on: the new stream's shards from their start
    #: (records put after the trigger's first start are not skipped by LATEST). None:
    #: another stream is another source, read from `starting_position`.
    continues: Callable[[str], bool] | None = None
    #: When the stream was created (Kinesis' StreamCreationTimestamp; empty: unknown): a
    #: stream deleted and created again under its name keeps its ARN, not this. At start, a
    #: stored time that differs means the stored checkpoints are the old stream's: dropped,
    #: and the new stream read from its start (as a stream that `continues` the old one).
    stream_created: str = ""
    shards: dict[str, _Shard] = field(default_factory=dict)
    #: Shards seen finished (checkpointed at their end, or gone from the list).
    _done: set[str] = field(default_factory=set)
    _ready: asyncio.Event = field(default_factory=asyncio.Event)
    _tg: asyncio.TaskGroup | None = None
    _runner: asyncio.Task[None] | None = None
    _started: asyncio.Event = field(default_factory=asyncio.Event)
    _first_listing: bool = True
    #: No shard checkpoint of the trigger was stored at start: its very first start (where
    #: LATEST applies; afterwards a shard without a checkpoint appeared since, as a child).
    _first_start: bool = True
    #: Shards found closed at the first start with LATEST: SHARD_END is stored for them.
    _closed_at_start: list[str] = field(default_factory=list)
    _order: list[str] = field(default_factory=list)
    _saved: dict[str, str] = field(default_factory=dict)
    _gone: set[str] = field(default_factory=set)
    #: Shards finished (SHARD_END stored) then listed open again: the stream was created
    #: again; the stored SHARD_END is the old stream's.
    _reopened: set[str] = field(default_factory=set)
    #: Checkpoints (state-store key -> value) not written yet.
    _unsaved: dict[str, str | None] = field(default_factory=dict)
    #: Shards read and settled to their end whose SHARD_END is not written yet.
    _ending: set[str] = field(default_factory=set)
    _dirty: asyncio.Event = field(default_factory=asyncio.Event)
    #: Tumbling-window states found in the state store at start (shard id -> JSON).
    _windows: dict[str, str] = field(default_factory=dict)
    #: Lease duration of the shard leases on a store shared by several daemons.
    lease_timeout_s: float = 15.0
    #: The pipeline's control (gives a lost shard's keys back); set by the source.
    control: PipelineControl | None = None
    #: The shard leases (None: one daemon reads every shard, no leases).
    leases: ShardLeases | None = None
    #: Shard leases taken and lost since the start.
    lease_changes: int = 0
    #: Records acknowledged per second, per shard (`triggerd status`).
    _rates: dict[str, RecordRate] = field(default_factory=dict)

    # ---- lifecycle ----

    async def start(self) -> None:
        """List the shards once, then run in the background. An API call that fails here
        raises a RetryableError when the server may get over it (throttled, a 5xx, not
        reachable: the daemon starts the trigger again later), else a ConfigError (access
        denied): one line, never a traceback."""
        listing = await self._start_call("listing the shards", self.api.list_shards())
        followed = await self._own_checkpoints() if self.stream else False
        saved = await self.state.list_checkpoints(self.trigger, _KEY_PREFIX)
        self._saved = {k[len(_KEY_PREFIX) :]: v for k, v in saved.items()}
        if self.tumbling_window_s:
            windows = await self.state.list_checkpoints(self.trigger, _WINDOW_PREFIX)
            self._windows = {k[len(_WINDOW_PREFIX) :]: v for k, v in windows.items()}
        self._done |= {s for s, v in self._saved.items() if v == SHARD_END}
        self._first_start = not self._saved and not followed
        if coordinated(self.state):
            self.leases = ShardLeases(
                self.state,
                self.trigger,
                timeout_s=self.lease_timeout_s,
                clock=self.clock,
            )
        self._discover(listing)
        if self._closed_at_start:
            # Done for every later start too (read by none; written before any pin, so a
            # daemon that sees a pin sees these).
            await self.state.set_checkpoints(
                self.trigger, {_KEY_PREFIX + sid: SHARD_END for sid in self._closed_at_start}
            )
        latest = [
            s
            for s in (self.shards.values() if self.leases is None else ())
            if s.start_kind == "LATEST" and s.checkpoint is None and s.pinned_at is None
        ]
        if latest:
            # LATEST means "from now on": take the iterators now, not when the tasks run,
            # once their starting point is pinned (a restart before the first checkpoint goes
            # on from there).
            pin = self._pin_time()
            await self.state.set_checkpoints(
                self.trigger, {_KEY_PREFIX + s.info.shard_id: _pin_value(pin) for s in latest}
            )
            for shard in latest:
                shard.pinned_at = pin
                shard.iterator = await self._start_call(
                    f"a LATEST iterator of {shard.info.shard_id}",
                    self.api.iterator(shard.info.shard_id, "LATEST", sequence=None, timestamp=None),
                )
        self._runner = asyncio.create_task(self._run(), name=f"shards-{self.trigger}")
        await self._started.wait()

    async def _own_checkpoints(self) -> bool:
        """The shard checkpoints stored are keyed by shard id alone, and Kinesis numbers the
        shards of every stream alike (shardId-000000000000, ...): those of the stream the
        trigger read before its `stream` changed would start the new stream's shards after
        another stream's positions, and a shard finished there (SHARD_END) would never be
        read here. They are dropped, once, with a warning: the trigger starts the new stream
        as a new event source mapping does, from `starting_position`.
        A stream that `continues` the stored one (a DynamoDB table named in the config, given
        a new stream) is still the trigger's source: its old checkpoints are dropped all the
        same (moto numbers every DynamoDB stream's shard alike), and the trigger's first
        start stays past (marked in the store with the drop, for a start cut short): the new
        stream's shards are read from their start. True in that case."""
        stored = await self.state.get_checkpoint(self.trigger, _STREAM_KEY)
        created = None
        if self.stream_created:
            created = await self.state.get_checkpoint(self.trigger, _CREATED_KEY)
        recreated = created is not None and created != self.stream_created
        items: dict[str, str | None] = {_STREAM_KEY: self.stream}
        if self.stream_created:
            items[_CREATED_KEY] = self.stream_created
        if stored == self.stream and not recreated:
            if self.stream_created and created is None:  # stored before it was
                await self.state.set_checkpoints(self.trigger, items)
            return await self.state.get_checkpoint(self.trigger, _FOLLOWED_KEY) is not None
        if stored is None:  # no stream stored yet (an older version's store): its own
            await self.state.set_checkpoints(self.trigger, items)
            return False
        recreated = recreated and stored == self.stream
        follows = recreated or (self.continues is not None and self.continues(stored))
        old = await self.state.list_checkpoints(self.trigger, _KEY_PREFIX)
        windows = await self.state.list_checkpoints(self.trigger, _WINDOW_PREFIX)
        items |= dict.fromkeys([*old, *windows], None)
        items[_FOLLOWED_KEY] = stored if follows else None
        extra = {
            "trigger": self.trigger,
            "source": self.kind,
            "stream": self.stream,
            "previous_stream": stored,
            "shards": len(old),
        }
        if follows:
            extra["hint"] = "the source has a new stream: it is read from its start"
        if recreated:
            extra["hint"] = "the stream was created again: it is read from its start"
        self.log.warning("stream.replaced" if follows else "stream.checkpoints_reset", extra=extra)
        await self.state.set_checkpoints(self.trigger, items)
        return follows

    async def _start_call(self, what: str, call: Awaitable[_T]) -> _T:
        try:
            return await call
        except Exception as exc:  # classified: retried by the daemon, or the config's
            where = f"trigger {self.trigger!r}: source ({self.kind}): {what} failed"
            reader_error = (Throttled, IteratorExpired, Trimmed, ShardGone)
            # ResourceInUseException: the stream is being created or updated (ListShards
            # refuses a CREATING stream): it will be ready.
            busy = error_code(exc) == "ResourceInUseException"
            if isinstance(exc, reader_error) or busy or transient(exc):
                raise RetryableError(f"{where}: {_describe(exc)}") from None
            raise ConfigError([f"{where}: {error_code(exc)}: {error_message(exc)}"]) from None

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
        if self._unsaved:
            try:
                async with asyncio.timeout(5):
                    await self._write()
            except Exception as exc:  # the records after it are delivered again
                self.log.warning(
                    "stream.checkpoint_failed",
                    extra={"trigger": self.trigger, "source": self.kind, "error": _describe(exc)},
                )
        if self.leases is not None:
            await settle(self.leases.release_all())

    def check(self) -> None:
        """Raise when the background task failed."""
        runner = self._runner
        if runner is not None and runner.done() and not runner.cancelled():
            exc = runner.exception()
            if exc is not None:
                raise RuntimeError(
                    f"{self.kind} reader of trigger {self.trigger!r} failed"
                ) from exc

    async def _run(self) -> None:
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                tg.create_task(self._writer())
                if self.leases is not None:
                    tg.create_task(self._renewer(self.leases))
                    tg.create_task(self._balancer(self.leases))
                self._start_ready()
                self._started.set()
                await self._refresh()
        finally:
            self._tg = None

    async def _refresh(self) -> None:
        while True:
            await self.clock.sleep(self.refresh_s)
            try:
                self._discover(await self.api.list_shards())
            except Exception as exc:  # task boundary: listed again next time
                self.log.warning(
                    "stream.list_shards_failed",
                    extra={"trigger": self.trigger, "error": _describe(exc)},
                )

    # ---- discovery and order ----

    def _discover(self, listing: Sequence[ShardInfo]) -> None:
        listed = {s.shard_id for s in listing}
        first = self._first_listing
        self._first_listing = False
        later = _descendants(listing, set(self._saved)) if first else set()
        for info in listing:
            sid = info.shard_id
            if sid in self.shards:
                self.shards[sid].info = info  # it may have closed since (ending sequence)
                continue
            if sid in self._done:
                if info.ending_sequence is not None or not self.reused_shard_ids:
                    continue
                self._reopen(sid)
            checkpoint = self._saved.get(sid)
            kind = "TRIM_HORIZON"
            latest_ok = self.starting_position != "LATEST" or self._first_start
            if first and sid not in later and latest_ok and sid not in self._reopened:
                kind = self.starting_position
                if kind == "LATEST" and info.ending_sequence is not None and checkpoint is None:
                    self._done.add(sid)  # closed before we started: nothing new will come
                    self._closed_at_start.append(sid)
                    continue
            log = ShardLog(
                self.clock, max_entries=self.read_ahead, redeliver_delay_s=self.redeliver_delay_s
            )
            shard = _new_shard(info, log, checkpoint, kind)
            self._restore_window(shard)
            self.shards[sid] = shard
            self._order.append(sid)
        # Parents that are no longer listed were trimmed away: nothing left to wait for.
        self._gone = {p for s in self.shards.values() for p in s.info.parents if p not in listed}
        self._start_ready()

    def _reopen(self, sid: str) -> None:
        """A shard finished here (SHARD_END) is listed open: a finished shard never opens
        again, so the stream was deleted and created again under its name (same ARN), and
        Kinesis names the new stream's shards as it named the old one's. Read from its
        start, not skipped as finished; its first checkpoint replaces the old SHARD_END."""
        self._done.discard(sid)
        self._saved.pop(sid, None)
        self._reopened.add(sid)
        self.log.warning(
            "stream.shard_reopened",
            extra={
                "trigger": self.trigger,
                "source": self.kind,
                "shard": sid,
                "hint": "a shard read to its end is listed open: the stream was created "
                "again; its records are read from the start",
            },
        )

    def _old_end(self, sid: str) -> bool:
        """A SHARD_END stored for this shard is the old stream's: the shard was reopened
        (`_reopen`) and is still listed open (once it closes, SHARD_END is its own)."""
        shard = self.shards.get(sid)
        return sid in self._reopened and shard is not None and shard.info.ending_sequence is None

    def _parents_done(self, shard: _Shard) -> bool:
        return all(
            p in self._done or (p not in self.shards and p in self._gone)
            for p in shard.info.parents
        )

    def _start_ready(self) -> None:
        tg = self._tg
        if tg is None:
            return
        for sid, shard in self.shards.items():
            if shard.task is None and not shard.finished and self._may_read(sid, shard):
                shard.task = tg.create_task(self._read_shard(shard))
                self._rates.setdefault(sid, RecordRate(self.clock.monotonic()))

    def _may_read(self, sid: str, shard: _Shard) -> bool:
        """Its parents are finished, and its lease is held and its position read from the
        store since (several daemons)."""
        return self._parents_done(shard) and (
            self.leases is None or (shard.taken_over and self.leases.held(sid))
        )

    # ---- reading ----

    async def _first_iterator(self, shard: _Shard, horizon: bool) -> str:
        """An iterator at the shard's position; at its TRIM_HORIZON when `horizon` (the
        records after the position were trimmed)."""
        sid = shard.info.shard_id
        if horizon:
            return await self.api.iterator(sid, "TRIM_HORIZON", sequence=None, timestamp=None)
        after = shard.last_read or shard.checkpoint
        if after is not None:
            return await self.api.iterator(
                sid, "AFTER_SEQUENCE_NUMBER", sequence=after, timestamp=None
            )
        if shard.pinned_at is None and shard.start_kind == "LATEST":
            await self._pin(shard)
            return await self.api.iterator(sid, "LATEST", sequence=None, timestamp=None)
        if shard.pinned_at is not None:
            shard.skip_before = shard.pinned_at
            return await self.api.iterator(
                sid, "AT_TIMESTAMP", sequence=None, timestamp=shard.pinned_at
            )
        timestamp = self.starting_timestamp if shard.start_kind == "AT_TIMESTAMP" else None
        return await self.api.iterator(sid, shard.start_kind, sequence=None, timestamp=timestamp)

    def _pin_time(self) -> float:
        return float(math.floor(self.clock.time() - PIN_MARGIN_S))

    async def _pin(self, shard: _Shard) -> None:
        """Store the shard's starting point before it is first read from LATEST, fenced by
        its lease (LeaseLostError when the lease moved on)."""
        pin = self._pin_time()
        items: dict[str, str | None] = {_KEY_PREFIX + shard.info.shard_id: _pin_value(pin)}
        if self.leases is None:
            await self.state.set_checkpoints(self.trigger, items)
        else:
            fence = self.leases.fence(shard.info.shard_id)
            await self.leases.store.enqueue_fenced(fence, [], {self.trigger: items})
        shard.pinned_at = pin

    async def _read_shard(self, shard: _Shard) -> None:
        sid = shard.info.shard_id
        cursor = _Cursor(shard.iterator)
        shard.iterator = None
        while True:
            if self.leases is not None and not self.leases.held(sid):
                return  # the lease is lost (the balancer gives the shard up)
            if not shard.log.has_room():
                self._ready.set()
                await self.clock.sleep(min(self.poll_interval_s, 0.05))
                continue
            try:
                if cursor.iterator is None:
                    cursor.iterator = await self._first_iterator(shard, cursor.horizon)
                page = await self.api.get_records(cursor.iterator, self.page_limit)
            except Exception as exc:  # task boundary: `_read_failed` decides
                if await self._read_failed(shard, cursor, exc):
                    return
                continue
            cursor.failures, cursor.horizon, cursor.expired = 0, False, False
            shard.millis_behind = page.millis_behind
            self._append(shard, page)
            if self._at_end(shard, page):
                self._read_to_end(shard)
                return
            cursor.iterator = page.next_iterator
            if not page.records:
                self._window_due(shard)
                await self.clock.sleep(self.poll_interval_s)

    async def _read_failed(self, shard: _Shard, cursor: _Cursor, exc: Exception) -> bool:
        """After a failed read: back off or renew the iterator as the error says; True when
        the shard is not read any more (its lease lost, or trimmed away)."""
        sid = shard.info.shard_id
        where = {"trigger": self.trigger, "source": self.kind, "shard": sid}
        if isinstance(exc, Throttled):
            self.log.info("stream.throttled", extra=where)
            await cursor.back_off(self.clock)
        elif isinstance(exc, LeaseLostError):
            self.log.warning("stream.checkpoint_fenced", extra=where)
            self._lose_later(sid)
            return True
        elif isinstance(exc, Trimmed | ShardGone):
            step = await self._trimmed_away(shard, exc)
            if step == "finished":
                return True
            if cursor.horizon or step == "retry":  # again at the horizon, or cannot tell
                await cursor.back_off(self.clock)
            cursor.horizon = cursor.horizon or step == "horizon"
            cursor.iterator = None
        elif isinstance(exc, IteratorExpired):
            self.log.info("stream.iterator_expired", extra=where)
            cursor.iterator = None
            if cursor.expired:  # again, with no page read since: never spin on it
                await cursor.back_off(self.clock)
            cursor.expired = True
        else:
            delay = cursor.next_delay()
            self.log.warning(
                "stream.read_failed",
                extra={
                    "trigger": self.trigger,
                    "shard": sid,
                    "error": _describe(exc),
                    "retry_in_s": delay,
                },
            )
            if shard.last_read is not None or shard.checkpoint is not None:
                # A fresh one from the position read. Without one (LATEST, nothing read
                # yet), a fresh LATEST would skip what came meanwhile: keep this one.
                cursor.iterator = None
            await self.clock.sleep(delay)
        return False

    async def _trimmed_away(
        self, shard: _Shard, exc: Trimmed | ShardGone
    ) -> Literal["finished", "horizon", "retry"]:
        """The stream no longer keeps the records after the shard's position (past its
        retention, e.g. the daemon was stopped longer than that): they are lost upstream, as
        in AWS's event source mappings. A shard gone from the listing is finished (its
        children start); a trimmed one is read on from its TRIM_HORIZON; a shard not found
        yet still listed (or a listing that failed) is tried again from its position. One
        warning each time records are skipped."""
        sid = shard.info.shard_id
        try:
            listing = await self.api.list_shards()
        except Exception as list_exc:  # cannot tell: read from the horizon (retried there)
            self.log.warning(
                "stream.list_shards_failed",
                extra={"trigger": self.trigger, "error": _describe(list_exc)},
            )
            listing = None
        gone = listing is not None and all(s.shard_id != sid for s in listing)
        if gone or not isinstance(exc, ShardGone):
            self.log.warning(
                "stream.records_trimmed",
                extra={
                    "trigger": self.trigger,
                    "source": self.kind,
                    "shard": sid,
                    "after": shard.last_read or shard.checkpoint,
                    "skipped": "rest_of_shard" if gone else "up_to_trim_horizon",
                    "error": _describe(exc),
                },
            )
        elif listing is not None:  # listed, yet not found: retried like other errors
            self.log.warning(
                "stream.read_failed",
                extra={"trigger": self.trigger, "shard": sid, "error": _describe(exc)},
            )
        if not gone:
            return "retry" if isinstance(exc, ShardGone) else "horizon"
        self._read_to_end(shard)
        assert listing is not None
        self._discover(listing)  # its children, listed since
        return "finished"

    def _read_to_end(self, shard: _Shard) -> None:
        """The shard is closed and read to its end: SHARD_END once everything is settled."""
        if shard.open_window is not None:
            self._end_window(shard)
        shard.log.mark(SHARD_END)
        self._ready.set()
        self.log.info(
            "stream.shard_read",
            extra={"trigger": self.trigger, "source": self.kind, "shard": shard.info.shard_id},
        )
        self._collect({shard.info.shard_id})

    # ---- tumbling windows ----

    def _restore_window(self, shard: _Shard) -> None:
        """A window state saved before a restart: its invocations go on from it."""
        saved = self._windows.pop(shard.info.shard_id, None)
        if saved is None:
            return
        try:
            doc = orjson.loads(saved)
            start, state = float(doc["start"]), doc["state"]
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return
        if isinstance(state, dict):
            shard.window = shard.open_window = start
            shard.state = state

    def _enter_window(self, shard: _Shard, record: Record) -> None:
        """Before appending `record`: end the open window when the record is of a later one."""
        start = _window_start(record.created_at, self.tumbling_window_s)
        if shard.open_window is not None and start <= shard.open_window:
            return
        if shard.open_window is not None:
            self._end_window(shard)
        shard.open_window = start

    def _window_due(self, shard: _Shard) -> None:
        """After an empty page (the shard is read up to now, so every record that arrived
        before now was read): end the open window once the clock is past its end. A reader
        catching up ends windows only as it reads records of later ones."""
        start = shard.open_window
        if start is not None and self.clock.time() >= start + self.tumbling_window_s:
            self._end_window(shard)

    def _end_window(self, shard: _Shard) -> None:
        start, shard.open_window = shard.open_window, None
        assert start is not None
        sid = shard.info.shard_id
        end = WindowEnd(
            payload={},
            item_id=shard.last_read or shard.checkpoint or "",
            size=0,
            created_at=self.clock.time(),
            key=sid,
            handle=sid,
            window_start=start,
        )
        shard.log.append(end, barrier=True)
        self._ready.set()

    def window_fields(self, records: Sequence[Record]) -> JSONDict:
        """The tumbling-window fields of the event of a batch (all of one shard and window),
        in AWS's order; `eventSourceARN` is the caller's."""
        sid = str(records[0].handle)
        last = records[-1]
        final = isinstance(last, WindowEnd)
        if isinstance(last, WindowEnd):
            start = last.window_start
        else:
            start = max(_window_start(r.created_at, self.tumbling_window_s) for r in records)
        shard = self.shards.get(sid)
        state = shard.state if shard is not None and shard.window == start else {}
        return {
            "window": {"start": _iso(start), "end": _iso(start + self.tumbling_window_s)},
            "state": state,
            "shardId": sid,
            "isFinalInvokeForWindow": final,
            "isWindowTerminatedEarly": isinstance(last, WindowEnd) and last.early,
        }

    def on_result(self, records: Sequence[Record], result: InvokeResult) -> InvokeResult:
        """Keep the `state` the function returned for the batch's window; a response without
        a `state` object fails the invocation, as in Lambda."""
        if result.outcome is not Outcome.OK:
            return result
        try:
            response = orjson.loads(result.payload) if result.payload.strip() else None
        except orjson.JSONDecodeError:
            response = None
        state = response.get("state") if isinstance(response, dict) else None
        if not isinstance(state, dict):
            return replace(
                result,
                outcome=Outcome.FUNCTION_ERROR,
                function_error="Unhandled",
                payload=orjson.dumps(
                    {
                        "errorType": "InvalidStateResponse",
                        "errorMessage": "with tumbling windows the response must contain "
                        "a 'state' object",
                    }
                ),
            )
        shard = self.shards.get(str(records[0].handle))
        if shard is None:
            return result
        last = records[-1]
        if isinstance(last, WindowEnd):
            shard.window, shard.state, shard.unsaved_state = None, {}, None
            return result
        start = max(_window_start(r.created_at, self.tumbling_window_s) for r in records)
        doc = orjson.dumps({"start": start, "state": state}).decode()
        shard.window, shard.state, shard.unsaved_state = start, state, doc
        if len(doc) > MAX_WINDOW_STATE:
            # As Lambda does: the window ends early with this state, then goes on from {}.
            sid = shard.info.shard_id
            shard.early_end = WindowEnd(
                payload={},
                item_id=records[-1].item_id,
                size=0,
                created_at=self.clock.time(),
                key=sid,
                handle=sid,
                window_start=start,
                early=True,
            )
            self._ready.set()
        return result

    def _append(self, shard: _Shard, page: Page) -> None:
        sid = shard.info.shard_id
        for raw in page.records:
            record = self.shape(raw, sid)
            if shard.skip_before is not None:
                if 0 < record.created_at < shard.skip_before:
                    shard.last_read = record.item_id  # before the pinned start: not ours
                    continue
                shard.skip_before = None
            record.handle = sid
            shard.keys.add(record.key or sid)
            if self.tumbling_window_s:
                self._enter_window(shard, record)
            shard.log.append(record)
            shard.last_read = record.item_id
        if page.records:
            self._ready.set()

    @staticmethod
    def _at_end(shard: _Shard, page: Page) -> bool:
        if page.next_iterator is None:
            return True
        # A closed shard read up to its ending sequence number (some servers keep returning
        # an iterator at the end of a closed shard instead of none).
        ending = shard.info.ending_sequence
        if ending is None or page.records:
            return False
        last = shard.last_read or shard.checkpoint or "0"
        return _seq(last) >= _seq(ending)

    # ---- handing out and settling ----

    def take(self, limit: int) -> list[Record]:
        """Up to `limit` records ready to hand out, from the shards in turn. Resets the
        "something is ready" signal first, so a read that lands after this call wakes
        `wait_ready`."""
        self._ready.clear()
        out: list[Record] = []
        order = self._order
        for i in range(len(order)):
            shard = self.shards.get(order[i])
            if shard is None or shard.lost or shard.task is None:
                continue
            if self.leases is not None and not self.leases.held(order[i]):
                continue  # past the lease's local deadline: the balancer gives it up
            if shard.early_end is not None or shard.early_out:
                if shard.early_end is not None and not shard.log.live:
                    out.append(shard.early_end)
                    shard.early_end, shard.early_out = None, True
            else:
                out += shard.log.take(limit - len(out))
            if len(out) >= limit:
                # Start with the next shard next time, so no shard starves the others.
                self._order = order[i + 1 :] + order[: i + 1]
                break
        return out

    async def wait_ready(self, timeout_s: float) -> None:
        """Wait until a shard read something (or a record given back may be handed out)."""
        held = [s.log.waiting_until() for s in self.shards.values()]
        until = [h for h in held if h is not None]
        wait = timeout_s
        if until:
            wait = min(wait, max(0.0, min(until) - self.clock.monotonic()))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), wait)

    async def ack(self, records: Sequence[Record]) -> None:
        for rec in records if self.tumbling_window_s else ():
            shard = self.shards.get(str(rec.handle))
            if isinstance(rec, WindowEnd) and rec.early and shard is not None:
                shard.early_out = False
                shard.window, shard.state, shard.unsaved_state = None, {}, None
                self._unsaved[_WINDOW_PREFIX + shard.info.shard_id] = None
                self._dirty.set()
                self._ready.set()
        touched: set[str] = set()
        now = self.clock.monotonic()
        for sid, group in _by_shard(records).items():
            shard = self.shards.get(sid)
            if shard is not None:
                shard.log.settle(group)
                touched.add(sid)
            if (rate := self._rates.get(sid)) is not None:
                rate.add(sum(not isinstance(r, WindowEnd) for r in group), now)
        self._collect(touched)

    def nack(self, records: Sequence[Record]) -> None:
        for rec in records if self.tumbling_window_s else ():
            shard = self.shards.get(str(rec.handle))
            if isinstance(rec, WindowEnd) and rec.early and shard is not None:
                shard.early_end, shard.early_out = rec, False
        for sid, group in _by_shard(records).items():
            shard = self.shards.get(sid)
            if shard is not None:
                shard.log.give_back(group)
        self._ready.set()

    def _collect(self, shard_ids: set[str]) -> None:
        """Move the settled prefix of these shards into the checkpoints to write (written by
        the writer task, coalesced: a shard's next batch does not wait for the disk)."""
        for sid in shard_ids:
            shard = self.shards.get(sid)
            if shard is None or shard.lost:
                continue
            point = shard.log.checkpoint()
            if isinstance(point, WindowEnd):
                self._unsaved[_WINDOW_PREFIX + sid] = None
                shard.unsaved_state = None
            elif isinstance(point, Record) and shard.unsaved_state is not None:
                self._unsaved[_WINDOW_PREFIX + sid] = shard.unsaved_state
                shard.unsaved_state = None
            if isinstance(point, Record) and point.item_id:
                self._unsaved[_KEY_PREFIX + sid] = point.item_id
                shard.checkpoint = point.item_id
            elif point == SHARD_END:
                self._unsaved[_KEY_PREFIX + sid] = SHARD_END
                if self.tumbling_window_s:
                    self._unsaved[_WINDOW_PREFIX + sid] = None
                self._ending.add(sid)
        if self._unsaved:
            self._dirty.set()

    async def _writer(self) -> None:
        """Write collected checkpoints; a failed write is logged and tried again after a
        backoff (the pipeline's settlement never fails on it)."""
        backoff = Backoff(base_s=0.5, max_s=30.0)
        failures = 0
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            try:
                await self._write()
                failures = 0
            except Exception as exc:  # task boundary: kept in _unsaved, written later
                failures += 1
                delay = backoff.delay(failures)
                self.log.warning(
                    "stream.checkpoint_failed",
                    extra={
                        "trigger": self.trigger,
                        "source": self.kind,
                        "error": _describe(exc),
                        "retry_in_s": delay,
                    },
                )
                await self.clock.sleep(delay)
                self._dirty.set()

    async def _write(self) -> None:
        """Write everything collected; a finished shard lets its children start only once
        its end is written."""
        if not self._unsaved:
            return
        items = dict(self._unsaved)
        if self.leases is None:
            await self.state.set_checkpoints(self.trigger, items)
        else:
            items = await self._write_fenced(self.leases, items)
        for key, value in items.items():
            if self._unsaved.get(key) == value:
                del self._unsaved[key]
        ended = [
            self.shards[sid]
            for sid in self._ending
            if sid in self.shards and items.get(_KEY_PREFIX + sid) == SHARD_END
        ]
        for shard in ended:
            sid = shard.info.shard_id
            self._ending.discard(sid)
            shard.checkpoint = SHARD_END
            self._done.add(sid)
            del self.shards[sid]
            self._rates.pop(sid, None)
            self._order.remove(sid)
            self.log.info("stream.shard_finished", extra={"trigger": self.trigger, "shard": sid})
            if self.leases is not None:
                await self.leases.release(sid)
        if ended:
            self._start_ready()

    async def _write_fenced(
        self, leases: ShardLeases, items: dict[str, str | None]
    ) -> dict[str, str | None]:
        """Write each shard's checkpoints fenced by its lease's epoch; the items written (a
        shard whose lease moved on loses them, and the shard)."""
        by_shard: dict[str, dict[str, str | None]] = {}
        for key, value in items.items():
            sid = key.split(":", 1)[1]
            by_shard.setdefault(sid, {})[key] = value
        written: dict[str, str | None] = {}
        for sid, group in by_shard.items():
            try:
                await leases.store.enqueue_fenced(leases.fence(sid), [], {self.trigger: group})
            except LeaseLostError:
                self.log.warning(
                    "stream.checkpoint_fenced",
                    extra={"trigger": self.trigger, "source": self.kind, "shard": sid},
                )
                for key in group:
                    self._unsaved.pop(key, None)
                self._ending.discard(sid)
                self._lose_later(sid)
                continue
            written |= group
        return written

    # ---- shard leases (several daemons) ----

    async def _renewer(self, leases: ShardLeases) -> None:
        """Every third of the lease timeout: renew the leases held. A task of its own, so a
        slow balancing round (a store slow to answer, a checkpoint read hanging during a
        take-over) never delays a renewal."""
        while True:
            for sid in await leases.renew():
                self._lose_later(sid)
            await self.clock.sleep(self.lease_timeout_s / 3)

    async def _balancer(self, leases: ShardLeases) -> None:
        """Every third of the lease timeout: see the shards other daemons finished, take or
        steal leases (triggerd.delivery.shardleases)."""
        while True:
            try:
                await self._see_finished(leases)
                wanted = [
                    sid
                    for sid, shard in self.shards.items()
                    if not shard.finished and sid not in self._ending and self._parents_done(shard)
                ]
                for sid in await leases.balance(wanted):
                    await self._gain_one(leases, sid)
            except Exception as exc:  # task boundary: the next round tries again
                self.log.warning(
                    "stream.lease_balance_failed",
                    extra={"trigger": self.trigger, "source": self.kind, "error": _describe(exc)},
                )
            self._start_ready()
            await self.clock.sleep(self.lease_timeout_s / 3)

    async def _see_finished(self, leases: ShardLeases) -> None:
        """Shards other daemons read to their end (SHARD_END in the store): done here too,
        so their children may start."""
        saved = await self.state.list_checkpoints(self.trigger, _KEY_PREFIX)
        for key, value in saved.items():
            sid = key[len(_KEY_PREFIX) :]
            if value != SHARD_END or sid in self._done or leases.held(sid):
                continue
            if self._old_end(sid):
                continue  # the old stream's SHARD_END, until the shard's first checkpoint
            self._done.add(sid)
            if self.shards.pop(sid, None) is not None:
                self._order.remove(sid)

    async def _gain_one(self, leases: ShardLeases, sid: str) -> None:
        """`_gain`, one shard's failure (its lease given back) not stopping the others'."""
        try:
            await self._gain(leases, sid)
        except Exception as exc:  # the lease went back: this or another daemon takes it later
            self.log.warning(
                "stream.shard_take_failed",
                extra={
                    "trigger": self.trigger,
                    "source": self.kind,
                    "shard": sid,
                    "error": _describe(exc),
                },
            )

    async def _gain(self, leases: ShardLeases, sid: str) -> None:
        """The shard's lease was taken: read it from the stored checkpoint (another daemon
        may have moved it); the lease goes back when that read fails."""
        old = self.shards.get(sid)
        if old is None:
            await leases.release(sid)
            return
        try:
            # Within the lease's safety margin: a read that hangs gives the lease back
            # instead of holding a shard nobody reads.
            async with asyncio.timeout(self.lease_timeout_s / 4):
                await self._take_over(old)
        except BaseException:
            await settle(leases.release(sid))
            raise
        if self.shards[sid].finished:
            # Read to its end by another daemon since this round looked at the store: done
            # here too (held, it would never be seen finished, nor its lease given back).
            self._done.add(sid)
            del self.shards[sid]
            self._order.remove(sid)
            await leases.release(sid)
            self._start_ready()
            return
        self._start_ready()  # read now, not after the round's other take-overs
        self.lease_changes += 1
        self.log.info(
            "stream.shard_leased",
            extra={"trigger": self.trigger, "source": self.kind, "shard": sid},
        )

    async def _take_over(self, old: _Shard) -> None:
        sid = old.info.shard_id
        checkpoint = await self.state.get_checkpoint(self.trigger, _KEY_PREFIX + sid)
        if checkpoint == SHARD_END and self._old_end(sid) and await self._listed_open(sid):
            checkpoint = None  # the old stream's: read the new shard from its start
        if self.tumbling_window_s:
            window = await self.state.get_checkpoint(self.trigger, _WINDOW_PREFIX + sid)
            if window is not None:
                self._windows[sid] = window
        shard = self._fresh(old, checkpoint)
        shard.taken_over = True
        self._restore_window(shard)
        self.shards[sid] = shard

    async def _listed_open(self, sid: str) -> bool:
        """Whether a fresh listing still shows the shard open (its info updated). Another
        daemon may have read a reopened shard to its end, closed since this daemon's last
        listing: the SHARD_END stored is then its own, not the old stream's (taken as the
        old one's, the whole shard would be delivered again)."""
        for info in await self.api.list_shards():
            if info.shard_id == sid:
                shard = self.shards.get(sid)
                if shard is not None:
                    shard.info = info
                return info.ending_sequence is None
        return False

    def _fresh(self, old: _Shard, checkpoint: str | None) -> _Shard:
        log = ShardLog(
            self.clock, max_entries=self.read_ahead, redeliver_delay_s=self.redeliver_delay_s
        )
        return _new_shard(old.info, log, checkpoint, old.start_kind)

    def _lose_later(self, sid: str) -> None:
        shard = self.shards.get(sid)
        tg = self._tg
        if shard is None or shard.lost:
            return
        shard.lost = True
        self.lease_changes += 1
        if shard.task is not None:
            shard.task.cancel()
        for key in [k for k in self._unsaved if k.split(":", 1)[1] == sid]:
            del self._unsaved[key]
        self._ending.discard(sid)
        if tg is not None:
            tg.create_task(self._give_up(sid, shard))

    async def _give_up(self, sid: str, shard: _Shard) -> None:
        """The shard's lease is lost: its buffered records go back, its batches in flight
        settle (their checkpoints are refused), then it waits for a lease again."""
        self.log.warning(
            "stream.shard_lost",
            extra={"trigger": self.trigger, "source": self.kind, "shard": sid},
        )
        if self.control is not None and shard.keys:
            await self.control.release_keys(sorted(shard.keys), self.lease_timeout_s)
        if self.shards.get(sid) is shard:
            self.shards[sid] = self._fresh(shard, None)

    # ---- metrics ----

    def stats(self) -> SourceStats:
        """Per shard: the iterator age (AWS's IteratorAge: age of the oldest record not
        processed yet, or how far the last read was behind the shard's tip), the
        checkpointed sequence number and the records acknowledged per second over the last
        minute."""
        now = self.clock.time()
        parts: list[PartitionStats] = []
        for sid, shard in sorted(self.shards.items()):
            if self.leases is not None and not self.leases.held(sid):
                continue  # read by another daemon
            oldest = shard.log.oldest_unsettled()
            if oldest is not None:
                age = max(0.0, now - oldest)
            else:
                age = (shard.millis_behind or 0) / 1000
            committed = _seq(shard.checkpoint) if shard.checkpoint else None
            rate = self._rates.get(sid)
            per_s = round(rate.per_second(self.clock.monotonic()), 1) if rate else 0.0
            parts.append(PartitionStats(sid, None, age, committed, records_per_s=per_s))
        return SourceStats(partitions=tuple(parts), rebalances=self.lease_changes)

    def shard_state(self) -> dict[str, str]:
        """Shard id -> reading / waiting for parents / leased elsewhere (for status lines
        and tests)."""
        return {sid: self._shard_state(sid, s) for sid, s in self.shards.items()}

    def _shard_state(self, sid: str, shard: _Shard) -> str:
        if shard.task is not None and not shard.lost:
            return "reading"
        if self.leases is None or not self._parents_done(shard):
            return "waiting for parents"
        return "leased elsewhere"


def _pin_value(pin: float) -> str:
    return f"{PIN_PREFIX}{pin:.0f}"


def _new_shard(info: ShardInfo, log: ShardLog, saved: str | None, kind: str) -> _Shard:
    """A shard read from its stored checkpoint: a sequence number, SHARD_END or a pin."""
    if saved is None or not saved.startswith(PIN_PREFIX):
        return _Shard(info, log, saved, start_kind=kind)
    try:
        pinned_at: float | None = float(saved[len(PIN_PREFIX) :])
    except ValueError:  # not written by us: as if there were no checkpoint
        pinned_at = None
    return _Shard(info, log, None, start_kind=kind, pinned_at=pinned_at)


def _by_shard(records: Sequence[Record]) -> dict[str, list[Record]]:
    groups: dict[str, list[Record]] = {}
    for rec in records:
        groups.setdefault(str(rec.handle), []).append(rec)
    return groups


def _seq(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        return 0


def _descendants(listing: Sequence[ShardInfo], checkpointed: set[str]) -> set[str]:
    """The listed shards descended from a checkpointed one: they appeared after the trigger
    first started (a reshard seen before a restart), so they are read from their start, not
    from `starting_position`, as AWS reads every child shard."""
    later: set[str] = set()
    grew = True
    while grew:
        grew = False
        for info in listing:
            sid = info.shard_id
            if sid not in later and any(p in checkpointed or p in later for p in info.parents):
                later.add(sid)
                grew = True
    return later


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class ShardedSource(BaseSource):
    """The Source side of a shard-based stream (Kinesis, DynamoDB Streams): receive, settle,
    stats and on-failure batch info over a ShardReader. A connector implements `open`, which
    connects and returns the reader (and sets `stream_arn`)."""

    #: `KinesisBatchInfo` or `DDBStreamBatchInfo`.
    batch_info_kind: Literal["KinesisBatchInfo", "DDBStreamBatchInfo"]

    def __init__(self, ctx: SourceContext) -> None:
        self.ctx = ctx
        self.stack = AsyncExitStack()
        self.reader: ShardReader | None = None
        self.stream_arn = ""
        self.control: PipelineControl | None = None

    async def open(self) -> ShardReader:
        raise NotImplementedError

    def attach(self, control: PipelineControl) -> None:
        """ControlledSource: a shard whose lease is lost gives its keys back through it."""
        self.control = control
        if self.reader is not None:
            self.reader.control = control

    async def start(self) -> None:
        try:
            self.reader = await self.open()
            self.reader.lease_timeout_s = self.ctx.singleton_lease_s
            self.reader.control = self.control
            await self.reader.start()
        except BaseException:
            await self.stack.aclose()
            raise
        self.ctx.log.info(
            "stream.started",
            extra={
                "trigger": self.ctx.trigger,
                "source": self.reader.kind,
                "stream": self.stream_arn,
                "shards": len(self.reader.shards),
            },
        )

    async def stop(self) -> None:
        if self.reader is not None:
            await self.reader.stop()
        await self.stack.aclose()

    async def receive(self, max_records: int, timeout_s: float) -> list[Record]:
        reader = self.reader
        assert reader is not None, "start() first"
        clock = self.ctx.clock
        deadline = clock.monotonic() + timeout_s
        while True:
            reader.check()
            out = reader.take(max_records)
            if out:
                return out
            remaining = deadline - clock.monotonic()
            if remaining <= 0:
                return []
            await reader.wait_ready(remaining)

    async def ack(self, records: Sequence[Record]) -> None:
        if self.reader is not None:
            await self.reader.ack(records)

    async def nack(self, records: Sequence[Record]) -> None:
        if self.reader is not None:
            self.reader.nack(records)

    def envelope(self, records: Sequence[Record]) -> JSONDict:
        reader = self.reader
        if reader is None or not reader.tumbling_window_s or not records:
            return {"Records": [r.payload for r in records]}
        event: JSONDict = {"Records": [r.payload for r in records if not isinstance(r, WindowEnd)]}
        fields = reader.window_fields(records)
        event["window"] = fields["window"]
        event["state"] = fields["state"]
        event["shardId"] = fields["shardId"]
        event["eventSourceARN"] = self.stream_arn
        event["isFinalInvokeForWindow"] = fields["isFinalInvokeForWindow"]
        event["isWindowTerminatedEarly"] = fields["isWindowTerminatedEarly"]
        return event

    def on_result(self, records: Sequence[Record], result: InvokeResult) -> InvokeResult:
        """InspectsResults: with tumbling windows, the function's `state` goes to the shard."""
        reader = self.reader
        if reader is None or not reader.tumbling_window_s or not records:
            return result
        return reader.on_result(records, result)

    def batch_info(self, records: Sequence[Record]) -> JSONDict:
        if not records:
            return {}
        return stream_batch_info(
            self.batch_info_kind,
            shard_id=str(records[0].handle),
            stream_arn=self.stream_arn,
            records=records,
        )

    def stats(self) -> SourceStats:
        """ReportsStats: iterator age and checkpoint per shard."""
        return self.reader.stats() if self.reader is not None else SourceStats()
