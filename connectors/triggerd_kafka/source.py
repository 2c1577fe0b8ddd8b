"""The `kafka` source: a consumer group member that hands records to the poll pipeline in the
self-managed Kafka event shape and commits only what was processed.

How it works:
- One aiokafka consumer, manual commits. A poll task calls `getmany` continuously, so the group
  never evicts the member for not polling (max_poll_interval_ms), however long batches run.
  Fetched records wait per partition (`PartitionState.ready`) until `receive` hands them out.
- Back-pressure: a partition holding `max_buffered_records_per_partition` fetched records is
  paused (the consumer stops fetching it) and resumed at half; above `max_buffered_bytes` in
  all, every partition pauses. A partition holds at most the limit plus one fetch response
  (bounded by `max_partition_fetch_bytes` / `fetch_max_bytes`). The pipeline's own buffer is
  bounded, so memory stays bounded whatever the backlog.
- Ordering: a record's ordering key is its `"<topic>-<partition>"`; the pipeline batches per key
  and keeps one batch per partition in flight, while partitions run in parallel.
- Commits: `ack` (succeeded, filtered out, or written to the on-failure destination) settles
  records; a commit task commits each partition's commit point, the lowest offset not yet
  settled (partitions.py), so a commit never passes an unprocessed record; at most every
  `commit_interval_s` (the first after a quiet spell at once). `nack` puts records
  back to be handed out again in order (retry without refetching).
- Rebalances: when partitions are revoked, the source stops handing them out, asks the pipeline
  to release their keys (buffered records back, batches in flight finished or given back,
  bounded by the rebalance timeout), commits what was settled, and only then lets the
  rebalance go on. Records of a revoked assignment settle against an inactive state: their
  acks commit nothing. Assigned partitions start at their committed offsets (positions.py).
- On stop: the pipeline has drained; the final commit point of every partition is committed
  and the consumer leaves the group.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Sequence
from types import ModuleType
from typing import Any

from aiokafka.abc import ConsumerRebalanceListener

from triggerd.delivery.retry import Backoff
from triggerd.events.filters import view_with_data
from triggerd.types import (
    BaseSource,
    ConfigError,
    JSONDict,
    PartitionStats,
    PermanentError,
    PipelineControl,
    Record,
    SourceContext,
    SourceStats,
)

from .client import classify, client_kwargs, describe, fatal_for_consumer
from .config import KafkaSourceConfig
from .partitions import Handle, PartitionState
from .positions import OFFSET_RESET, expired_commits, position_new_partitions
from .shape import PartitionShaper, batch_info, envelope, partition_key

__all__ = ["KafkaSource"]

#: How long one getmany call waits for records.
POLL_MS = 200
#: How often the log-end offsets of paused partitions are read (a paused partition is not
#: fetched, so aiokafka's highwater of it stands still while its lag grows).
LAG_REFRESH_S = 5.0
#: Longest wait for a final commit (on stop, on revocation): aiokafka looks for a lost group
#: coordinator again and again, so a broker gone at shutdown would hold the stop forever.
#: What such a commit misses is delivered again to the partition's next reader.
FINAL_COMMIT_TIMEOUT_S = 30.0


class KafkaSource(BaseSource):
    def __init__(self, config: KafkaSourceConfig, ctx: SourceContext, aiokafka: ModuleType):
        self.config = config
        self.ctx = ctx
        self.log = ctx.log
        self._aiokafka = aiokafka
        self.group_id = config.group_id or ctx.trigger
        self.consumer: Any = None
        self.control: PipelineControl | None = None
        self.states: dict[str, PartitionState] = {}
        self.rebalances = 0
        self._tps: dict[str, Any] = {}
        self._arrived = asyncio.Event()
        self._dirty = asyncio.Event()
        self._commit_lock = asyncio.Lock()
        self._runner: asyncio.Task[None] | None = None
        self._rotation = 0
        #: The largest `max_records` asked for (the pipeline asks for a batch at most).
        self._batch_hint = 1
        self._stopped = False
        self._backoff = Backoff(base_s=0.5, max_s=30.0)
        #: Log-end offsets read for paused partitions (see LAG_REFRESH_S).
        self._ends: dict[str, int] = {}
        self.lag_refresh_s = LAG_REFRESH_S
        #: Set when the consumer failed in a way polling again cannot fix: `receive` raises it.
        self.failure: PermanentError | None = None
        #: Retries of partitions whose positioning failed (they stay paused meanwhile).
        self._positioners: dict[str, asyncio.Task[None]] = {}
        self._position_backoff = Backoff(base_s=1.0, max_s=30.0, jitter=0.0)
        #: (committed, oldest) offsets already reported as lost by partition: the same loss
        #: is found again at every assignment until a record of the partition is committed.
        self._expired_reported: dict[str, tuple[int, int]] = {}

    def attach(self, control: PipelineControl) -> None:
        self.control = control

    # ---- lifecycle ----

    async def start(self) -> None:
        """Join the group. Unreachable brokers raise RetryableError (the daemon retries);
        authentication or TLS problems raise ConfigError."""
        cfg = self.config
        try:
            kwargs = client_kwargs(cfg, f"triggerd-{self.ctx.trigger}")
        except OSError as exc:
            raise ConfigError([f"triggers.{self.ctx.trigger}.source: {exc}"]) from None
        consumer = self._aiokafka.AIOKafkaConsumer(
            **kwargs,
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset=OFFSET_RESET,
            session_timeout_ms=cfg.session_timeout_ms,
            heartbeat_interval_ms=cfg.heartbeat_interval_ms,
            max_poll_interval_ms=cfg.max_poll_interval_ms,
            rebalance_timeout_ms=cfg.rebalance_timeout,
            fetch_max_wait_ms=cfg.fetch_max_wait_ms,
            fetch_min_bytes=cfg.fetch_min_bytes,
            fetch_max_bytes=cfg.fetch_max_bytes,
            max_partition_fetch_bytes=cfg.max_partition_fetch_bytes,
        )
        try:
            await consumer.start()
            missing = sorted(set(cfg.topics) - await consumer.topics())
        except Exception as exc:  # typed below; the consumer must not leak
            with contextlib.suppress(Exception):
                await consumer.stop()
            error = classify(exc, cfg)
            if isinstance(error, PermanentError):
                raise ConfigError([f"triggers.{self.ctx.trigger}.source: {error}"]) from None
            raise error from None
        if missing:
            self.log.warning(
                "kafka.topic_missing",
                extra={"trigger": self.ctx.trigger, "topics": missing, "group": self.group_id},
            )
        consumer.subscribe(list(cfg.topics), listener=_Listener(self))
        self.consumer = consumer
        self._runner = asyncio.create_task(self._run(), name=f"kafka-{self.ctx.trigger}")
        self.log.info(
            "kafka.started",
            extra={
                "trigger": self.ctx.trigger,
                "bootstrap_servers": cfg.bootstrap,
                "topics": list(cfg.topics),
                "group": self.group_id,
            },
        )

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._arrived.set()
        await self._cancel_positioners(list(self._positioners))
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        if self.consumer is None:
            return
        await self._commit(list(self.states.values()), final=True)
        for state in self.states.values():
            state.active = False
        self.states.clear()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.consumer.stop(), 30)
        self.log.info("kafka.stopped", extra={"trigger": self.ctx.trigger})

    async def _run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._poll_loop())
            tg.create_task(self._commit_loop())
            tg.create_task(self._lag_loop())

    # ---- fetching ----

    async def _poll_loop(self) -> None:
        """Fetch until stopped. A failing iteration (brokers away, aiokafka's IllegalStateError
        while an assignment changes, ...) is logged and polled again after a backoff; one that
        polling cannot fix (authorisation, a session timeout the group refuses) ends the
        polling and `receive` raises it, which stops the trigger. Commits go on meanwhile."""
        failures = 0
        while not self._stopped:
            try:
                await self._poll_once()
            except Exception as exc:  # task boundary: log, back off, poll again
                if fatal_for_consumer(exc):
                    self.failure = PermanentError(
                        f"Kafka at {self.config.bootstrap}, group {self.group_id!r}: "
                        f"{describe(exc, self.config)}"
                    )
                    self._arrived.set()
                    return
                failures += 1
                delay = self._backoff.delay(failures)
                self.log.error(
                    "kafka.poll_failed",
                    extra={
                        "trigger": self.ctx.trigger,
                        "error": describe(exc, self.config),
                        "retry_in_s": round(delay, 2),
                    },
                )
                await self.ctx.clock.sleep(delay)
                continue
            failures = 0

    async def _poll_once(self) -> None:
        # Everything aiokafka holds: records left in its buffer would hold back the next
        # fetch from the same broker (its prefetch backoff).
        data = await self.consumer.getmany(timeout_ms=POLL_MS)
        if data:
            self._accept(data)
        self._apply_back_pressure()

    @property
    def _buffered_bytes(self) -> int:
        """Fetched bytes held by the partitions this member owns (derived, so records given
        back to a partition being revoked or dropped with it can never leak into it)."""
        return sum(s.ready_bytes for s in self.states.values())

    def _accept(self, data: dict[Any, list[Any]]) -> None:
        now = self.ctx.clock.time()
        for tp, messages in data.items():
            state = self.states.get(partition_key(tp.topic, tp.partition))
            if state is None or state.positioning:
                # Fetched before the partition's state was set up (aiokafka clears its
                # reassignment flag before calling on_partitions_assigned): fetch them again.
                self._refetch(tp, messages)
                continue
            if not state.active or state.revoking:
                continue  # given up: the commit point stays before them
            state.add_fetched(self._records(state, messages, now))
        self._arrived.set()

    def _refetch(self, tp: Any, messages: list[Any]) -> None:
        if not messages or tp not in self.consumer.assignment():
            return
        try:
            self.consumer.seek(tp, messages[0].offset)
        except Exception as exc:  # given up meanwhile: its next owner starts at the commit
            self.log.warning(
                "kafka.refetch_failed",
                extra={
                    "trigger": self.ctx.trigger,
                    "partition": partition_key(tp.topic, tp.partition),
                    "error": describe(exc, self.config),
                },
            )
            return
        self.log.info(
            "kafka.refetch",
            extra={
                "trigger": self.ctx.trigger,
                "partition": partition_key(tp.topic, tp.partition),
                "offset": messages[0].offset,
            },
        )

    def _records(self, state: PartitionState, messages: list[Any], now: float) -> list[Record]:
        """The records of one partition's fetched messages: the payloads built in one loop
        (shape.py), then the records around them, with what they share (the partition's
        key, its state) looked up once per fetch, not per record. Record's fields are
        passed by position: keywords cost more than the rest of the record together."""
        payloads, sizes = PartitionShaper(state.topic, state.partition).records(messages)
        key = state.key
        out: list[Record] = []
        append = out.append
        for m, payload, size in zip(messages, payloads, sizes, strict=True):
            offset, stamp = m.offset, m.timestamp
            created = stamp / 1000 if stamp and stamp > 0 else now
            append(Record(payload, f"{key}:{offset}", size, created, key, Handle(state, offset)))
        return out

    def _apply_back_pressure(self) -> None:
        cfg = self.config
        limit = cfg.max_buffered_records_per_partition
        over_bytes = self._buffered_bytes >= cfg.max_buffered_bytes
        pause: list[PartitionState] = []
        resume: list[PartitionState] = []
        for state in self.states.values():
            if state.positioning or state.revoking:
                continue
            held = len(state.ready)
            if not state.paused and (held >= limit or over_bytes):
                pause.append(state)
            elif state.paused and held <= limit // 2 and not over_bytes:
                resume.append(state)
        if pause:
            self._set_paused(pause, True)
        if resume:
            self._set_paused(resume, False)
        if pause or resume:
            self.log.debug(
                "kafka.back_pressure",
                extra={
                    "trigger": self.ctx.trigger,
                    "paused": [s.key for s in pause],
                    "resumed": [s.key for s in resume],
                },
            )

    def _set_paused(self, states: list[PartitionState], paused: bool) -> None:
        try:
            tps = [self._tps[s.key] for s in states]
            (self.consumer.pause if paused else self.consumer.resume)(*tps)
        except Exception as exc:  # e.g. given up meanwhile (IllegalStateError): next round
            self.log.warning(
                "kafka.pause_failed",
                extra={
                    "trigger": self.ctx.trigger,
                    "partitions": [s.key for s in states],
                    "pause": paused,
                    "error": describe(exc, self.config),
                },
            )
            return
        for state in states:
            state.paused = paused

    # ---- handing out ----

    async def receive(self, max_records: int, timeout_s: float) -> list[Record]:
        """Up to `max_records`, taken from the partitions in turn. A partition has at most two
        batches' worth of records out (one in flight, the next waiting), so a partition that
        is retrying in place never fills the pipeline's buffer and holds back the others."""
        self._check_runner()
        self._batch_hint = max(self._batch_hint, max_records)
        states = self._eligible()
        if not states:
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), timeout_s)
            states = self._eligible()
            if not states:
                return []
        self._rotation = (self._rotation + 1) % len(states)
        out: list[Record] = []
        cap = 2 * self._batch_hint
        for state in states[self._rotation :] + states[: self._rotation]:
            out += state.take(min(max_records - len(out), cap - state.unsettled))
            if len(out) >= max_records:
                break
        self._apply_back_pressure()  # resume at once, not after the next poll's timeout
        return out

    def _eligible(self) -> list[PartitionState]:
        cap = 2 * self._batch_hint
        return [
            s
            for s in self.states.values()
            if s.ready and s.active and not s.revoking and s.unsettled < cap
        ]

    def _check_runner(self) -> None:
        if self.failure is not None:
            raise self.failure
        runner = self._runner
        if runner is not None and runner.done() and not runner.cancelled():
            exc = runner.exception()
            if exc is not None:
                raise RuntimeError(
                    f"kafka consumer of trigger {self.ctx.trigger!r} failed"
                ) from exc

    # ---- settling ----

    async def ack(self, records: Sequence[Record]) -> None:
        for state, group in _by_state(records):
            if state.active:
                state.ack(r.handle.offset for r in group)
        self._dirty.set()
        self._arrived.set()  # a partition at its cap may hand out records again

    async def nack(self, records: Sequence[Record]) -> None:
        for state, group in _by_state(records):
            if state.active:
                state.nack(group)  # a revoking partition only holds its commit point
        self._arrived.set()

    async def _commit_loop(self) -> None:
        """Commit after settlements, at most every `commit_interval_s`: the first settlement
        after a quiet spell is committed at once, later ones wait for the interval and go in
        one commit (a commit is a request to the group coordinator; one per batch cost the
        daemon more than building the batch's records). A failed commit is tried again after
        a backoff (from the commit points of that moment, so never past an unprocessed
        record)."""
        interval = self.config.commit_interval_s
        clock = self.ctx.clock
        last = float("-inf")
        failures = 0
        while not self._stopped:
            await self._dirty.wait()
            wait = last + interval - clock.monotonic()
            if wait > 0:
                await clock.sleep(wait)
            self._dirty.clear()
            last = clock.monotonic()
            if await self._commit([s for s in self.states.values() if s.active]):
                failures = 0
                continue
            failures += 1
            await self.ctx.clock.sleep(self._backoff.delay(failures))
            self._dirty.set()

    async def _commit(self, states: Iterable[PartitionState], *, final: bool = False) -> bool:
        """Commit the commit points of `states` that moved; False when the commit failed.
        A recording (`triggerd record`) commits nothing: its group gets no offsets, so every
        recording starts at `starting_position`, and the broker keeps no trace of it."""
        if self.config.recording:
            return True
        async with self._commit_lock:
            # Under the lock: a round that waited for a revocation's commit must leave out
            # the partitions given up meanwhile (not owned any more; their records may be
            # another member's by now), whatever their commit points say.
            points = {s: s.commit_point() for s in states if s.active and s.needs_commit()}
            if not points:
                return True
            try:
                offsets = {self._tps[s.key]: p for s, p in points.items() if p is not None}
                if final:
                    await asyncio.wait_for(self.consumer.commit(offsets), FINAL_COMMIT_TIMEOUT_S)
                else:
                    await self.consumer.commit(offsets)
            except Exception as exc:  # task boundary: the commit loop tries again
                self.log.warning(
                    "kafka.commit_failed",
                    extra={
                        "trigger": self.ctx.trigger,
                        "error": describe(exc, self.config),
                        "partitions": sorted(s.key for s in points),
                        "final": final,
                    },
                )
                return False
            for state, point in points.items():
                state.committed = point
            self.log.debug(
                "kafka.committed",
                extra={
                    "trigger": self.ctx.trigger,
                    "offsets": {s.key: p for s, p in points.items()},
                },
            )
            return True

    # ---- rebalances (called by aiokafka's coordinator) ----

    async def on_revoked(self, revoked: Iterable[Any]) -> None:
        states = []
        for tp in revoked:
            state = self.states.get(partition_key(tp.topic, tp.partition))
            if state is not None:
                states.append(state)
                state.revoking = True  # before release_keys: nothing handed out any more
                state.clear_ready()
        if not states:
            return
        keys = [s.key for s in states]
        await self._cancel_positioners(keys)
        if self.control is not None:
            # Leave room in the rebalance timeout for the commit and the rejoin.
            await self.control.release_keys(keys, self.config.rebalance_timeout / 1000 * 0.8)
        committed = await self._commit(states, final=True)
        for state in states:
            state.active = False
            self.states.pop(state.key, None)
            self._tps.pop(state.key, None)
            self._ends.pop(state.key, None)
        self.log.info(
            "kafka.partitions_revoked",
            extra={"trigger": self.ctx.trigger, "partitions": keys, "committed": committed},
        )

    async def on_assigned(self, assigned: Iterable[Any]) -> None:
        """Set up the new partitions' states at once, before any await (the poll loop may
        fetch them meanwhile), paused until they are positioned."""
        self.rebalances += 1
        new = [tp for tp in assigned if partition_key(tp.topic, tp.partition) not in self.states]
        states = []
        for tp in new:
            key = partition_key(tp.topic, tp.partition)
            self._tps[key] = tp
            self.states[key] = state = PartitionState(key, tp.topic, tp.partition)
            state.positioning = state.paused = True
            states.append(state)
        if new:
            self.consumer.pause(*new)
        committed: dict[Any, int | None] | None = None
        try:
            committed = await self._position(new)
        finally:
            if committed is not None or not new:
                self._positioned(states, committed or {})
            elif not self._stopped:
                # Still paused: positioned again in the background (the rebalance goes on),
                # not left to aiokafka's reset, which would ignore `starting_position`.
                for state, tp in zip(states, new, strict=True):
                    task = asyncio.create_task(self._position_later(state, tp))
                    self._positioners[state.key] = task

    def _positioned(self, states: list[PartitionState], committed: dict[Any, int | None]) -> None:
        for state in states:
            state.positioning = False
        self._apply_back_pressure()  # resumes them
        for tp, offset in committed.items():
            held = self.states.get(partition_key(tp.topic, tp.partition))
            if held is not None:
                held.committed = offset
        self.log.info(
            "kafka.partitions_assigned",
            extra={
                "trigger": self.ctx.trigger,
                "partitions": sorted(self.states),
                "positioned": sorted(s.key for s in states),
                "committed": {partition_key(t.topic, t.partition): o for t, o in committed.items()},
            },
        )

    async def _position_later(self, state: PartitionState, tp: Any) -> None:
        """Retry positioning a partition whose first attempt failed, with backoff, while it
        is this member's: `on_revoked` cancels the retry (and waits for it) before the
        partition can be assigned to anyone else, so no late seek lands on it."""
        failures = 1
        try:
            while not self._stopped:
                await self.ctx.clock.sleep(self._position_backoff.delay(failures))
                if self.states.get(state.key) is not state or not state.active:
                    return
                committed = await self._position([tp], failures + 1)
                if committed is not None:
                    self._positioned([state], committed)
                    return
                failures += 1
        finally:
            if self._positioners.get(state.key) is asyncio.current_task():
                del self._positioners[state.key]

    async def _cancel_positioners(self, keys: Iterable[str]) -> None:
        tasks = [t for key in keys if (t := self._positioners.pop(key, None)) is not None]
        for task in tasks:
            task.cancel()
        # (gather: a cancellation of the caller meanwhile still reaches it)
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _position(self, new: list[Any], attempt: int = 1) -> dict[Any, int | None] | None:
        """Position the new partitions; None when that failed (logged: they stay paused and
        are positioned again later)."""
        try:
            committed = await position_new_partitions(self.consumer, new, self.config)
        except Exception as exc:  # task boundary: aiokafka would swallow it silently
            self.log.error(
                "kafka.position_failed",
                extra={
                    "trigger": self.ctx.trigger,
                    "partitions": sorted(partition_key(t.topic, t.partition) for t in new),
                    "error": describe(exc, self.config),
                    "attempt": attempt,
                    "retry_in_s": round(self._position_backoff.delay(attempt), 2),
                },
            )
            return None
        try:
            expired = await expired_commits(self.consumer, committed)
        except Exception as exc:  # only the report is lost: out of range, aiokafka resets
            self.log.warning(
                "kafka.log_start_failed",
                extra={"trigger": self.ctx.trigger, "error": describe(exc, self.config)},
            )
            return committed
        for tp, (offset, first) in sorted(expired.items(), key=lambda item: str(item[0])):
            key = partition_key(tp.topic, tp.partition)
            if self._expired_reported.get(key) == (offset, first):
                continue
            self._expired_reported[key] = (offset, first)
            self.log.warning(
                "kafka.records_expired",
                extra={
                    "trigger": self.ctx.trigger,
                    "partition": key,
                    "committed": offset,
                    "first_offset": first,
                    "offsets_lost": first - offset,
                    "reason": "the partition's retention deleted these records before they "
                    "were delivered; reading goes on from its oldest record",
                },
            )
        return committed

    # ---- lag of paused partitions ----

    async def _lag_loop(self) -> None:
        while not self._stopped:
            await self.ctx.clock.sleep(self.lag_refresh_s)
            try:
                await self._read_paused_ends()
            except Exception as exc:  # task boundary: the lag figure waits for the next read
                self.log.debug(
                    "kafka.end_offsets_failed",
                    extra={"trigger": self.ctx.trigger, "error": describe(exc, self.config)},
                )

    async def _read_paused_ends(self) -> None:
        """Read the log-end offsets of the paused partitions: they are not fetched, so the
        consumer's highwater of them stands still while producers go on."""
        paused = {self._tps[k]: k for k, s in self.states.items() if s.paused and k in self._tps}
        if not paused:
            return
        ends = await self.consumer.end_offsets(list(paused))
        for tp, offset in ends.items():
            key = paused.get(tp)
            if key is not None and key in self.states and offset is not None:
                self._ends[key] = offset

    # ---- shapes and stats ----

    def envelope(self, records: Sequence[Record]) -> JSONDict:
        key = records[0].key if records else ""
        payloads = [r.payload for r in records]
        return envelope(self.config.bootstrap, key or "", payloads, self.config.cluster_arn)

    def filter_view(self, record: Record) -> JSONDict:
        return view_with_data(record.payload, "value", "base64")

    def batch_info(self, records: Sequence[Record]) -> JSONDict:
        return batch_info(self.config.bootstrap, records, self.config.cluster_arn)

    def stats(self) -> SourceStats:
        now = self.ctx.clock.time()
        out = []
        for key, state in sorted(self.states.items()):
            point = state.commit_point()
            end = self.consumer.highwater(self._tps[key]) if self.consumer is not None else None
            read = self._ends.get(key)
            if read is not None and (end is None or read > end):
                end = read
            lag = max(0, end - point) if end is not None and point is not None else 0
            oldest = state.oldest_unprocessed()
            out.append(
                PartitionStats(
                    partition=key,
                    lag_records=lag,
                    lag_seconds=max(0.0, now - oldest) if oldest is not None else 0.0,
                    committed_offset=state.committed,
                )
            )
        return SourceStats(partitions=tuple(out), rebalances=self.rebalances)


def _by_state(records: Sequence[Record]) -> list[tuple[PartitionState, list[Record]]]:
    if not records:
        return []
    first: PartitionState = records[0].handle.state
    if all(rec.handle.state is first for rec in records):
        return [(first, list(records))]  # the usual case: a batch is one partition's
    groups: dict[int, tuple[PartitionState, list[Record]]] = {}
    for rec in records:
        handle: Handle = rec.handle
        groups.setdefault(id(handle.state), (handle.state, []))[1].append(rec)
    return list(groups.values())


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    """Passes aiokafka's rebalance callbacks to the source."""

    def __init__(self, source: KafkaSource) -> None:
        self._source = source

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self._source.on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self._source.on_assigned(assigned)
