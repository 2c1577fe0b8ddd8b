"""The poll pipeline: event-source-mapping rules for sync sources.

Source -> filter -> batcher -> dispatcher (bounded concurrency, per-key order) -> backend ->
judge (success / partial batch failure / error) -> ack, retry (backoff, bisect, attempts, age),
or on-failure destination then ack. Sources never ack by themselves; every received record is
settled exactly once.

A source that loses ordering keys while running (a Kafka partition revoked in a rebalance, a
stream shard taken over) calls `release_keys` (the `PipelineControl` it gets through `attach`):
the keys' buffered records are nacked, their batches in flight are given back at the next
retry point, and the call returns once those batches settled (or its timeout passed).

A source that runs once across a cluster (`RunsOnce`, e.g. a PostgreSQL replication slot) on a
store that grants leases is received from only while this daemon holds its lease: taking the
lease calls `resume()`; losing it (the `Lease` stops the work before the store's expiry) or
stopping ends the term: receiving stops, buffered records are nacked, batches in flight are
given back at their next retry point (an invocation under way finishes and is settled), and
only once every batch of the term has ended does the daemon stand by again, so a later term's
`resume()` never meets a settlement of the old one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import operator
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

import orjson

from triggerd.config.model import TriggerBase
from triggerd.delivery.batching import BatchBuffer
from triggerd.delivery.failures import stream_failure_record
from triggerd.delivery.onfailure import DELIVERY_GRACE_S, OnFailure
from triggerd.delivery.results import judge
from triggerd.delivery.retry import Backoff, RetryPolicy
from triggerd.delivery.settle import finish_after_cancel, settle
from triggerd.delivery.unsettled import Unsettled
from triggerd.events.filters import CompiledFilter, compile_filters
from triggerd.state.base import StateStore
from triggerd.state.leases import DEFAULT_TIMEOUT_S, Fence, Lease, LeaseStore
from triggerd.telemetry.metrics import Metrics, TriggerTally
from triggerd.telemetry.spans import invocation_scope
from triggerd.types import (
    MAX_SYNC_PAYLOAD,
    AcksInMemory,
    Backend,
    BuildError,
    Clock,
    ControlledSource,
    Destination,
    EncodesEvents,
    HoldsRecords,
    InspectsResults,
    InvokeResult,
    JSONDict,
    Outcome,
    PermanentError,
    Record,
    RunsOnce,
    Source,
    TriggerdError,
)

#: A record's `build_error` (None, or an error object, which is true).
_BUILD_ERROR = operator.attrgetter("build_error")
#: The release epoch that every batch also watches: moved when a lease term ends, so every
#: batch in flight (keyed or not) gives its records back at its next retry point.
_ALL_KEYS = "\x00all"


@dataclass
class TriggerRuntime:
    """Everything one trigger needs at run time (built by the daemon)."""

    name: str
    config: TriggerBase
    function: str
    function_arn: str
    source: Source
    backend: Backend
    filter: CompiledFilter
    on_failure: OnFailure
    clock: Clock
    metrics: Metrics
    log: logging.Logger
    #: Include the full event in on-failure records (file/S3/Kafka destinations carry it).
    include_payload: bool = True
    poll_timeout_s: float = 1.0
    throttle_backoff: Backoff = field(default_factory=lambda: Backoff(base_s=0.5, max_s=60.0))
    #: The source reads each invocation's result (checked once, not per batch).
    result_hook: InspectsResults | None = field(init=False, default=None)
    #: The source's system takes unsettled records back after a while (checked once).
    holder: HoldsRecords | None = field(init=False, default=None)
    #: The source joins a batch's event from its records' JSON (checked once).
    encoder: EncodesEvents | None = field(init=False, default=None)
    #: The source's acks only update its memory: called as they are, without a task.
    acker: AcksInMemory | None = field(init=False, default=None)
    #: The trigger's own series of the pipeline's metrics (labelled once, not per batch).
    tally: TriggerTally = field(init=False)
    #: Set by the daemon's second signal (a forced exit): settlement writes under way stop
    #: waiting out their grace (`delivery.settle`).
    forced: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        if isinstance(self.source, InspectsResults):
            self.result_hook = self.source
        if isinstance(self.source, HoldsRecords):
            self.holder = self.source
        if isinstance(self.source, EncodesEvents):
            self.encoder = self.source
        if isinstance(self.source, AcksInMemory):
            self.acker = self.source
        self.tally = self.metrics.trigger_tally(self.name)

    async def ack(self, records: Sequence[Record]) -> None:
        """Ack `records` at the source, to the end even if the caller is cancelled meanwhile
        (`settle`; an in-memory ack is over before anything can cancel it)."""
        if self.acker is not None:
            self.acker.ack_now(records)
        else:
            await settle(self.source.ack(records), abandon=self.forced)

    def event(self, records: Sequence[Record]) -> bytes:
        """The invocation event of a batch, as JSON."""
        if self.encoder is not None:
            return self.encoder.encode_event(records)
        return orjson.dumps(self.source.envelope(records))

    @classmethod
    def assemble(
        cls,
        *,
        name: str,
        config: TriggerBase,
        function: str,
        function_arn: str,
        source: Source,
        backend: Backend,
        state: StateStore,
        clock: Clock,
        metrics: Metrics,
        log: logging.Logger,
        destination: Destination | None = None,
        destination_name: str = "none",
        include_payload: bool = True,
        poll_timeout_s: float = 1.0,
        forced: asyncio.Event | None = None,
    ) -> TriggerRuntime:
        """A trigger's runtime as the daemon builds it: the filter compiled from the config and
        an on-failure writer to `destination` (not started: `on_failure.start()` is the
        caller's, before the trigger runs)."""
        on_failure = OnFailure(
            trigger=name,
            function=function,
            destination=destination,
            destination_name=destination_name,
            state=state,
            clock=clock,
            metrics=metrics,
            log=log,
        )
        return cls(
            name=name,
            config=config,
            function=function,
            function_arn=function_arn,
            source=source,
            backend=backend,
            filter=compile_filters(config.filters),
            on_failure=on_failure,
            clock=clock,
            metrics=metrics,
            log=log,
            include_payload=include_payload,
            poll_timeout_s=poll_timeout_s,
            forced=forced or asyncio.Event(),
        )

    @property
    def source_type(self) -> str:
        return str(getattr(self.config.source_config, "type", "other"))

    @property
    def source_owned(self) -> bool:
        """Failed records go back to the source for redelivery (SQS, RabbitMQ)."""
        return self.config.source_config.retry_owner == "source"


def apply_filter(rt: TriggerRuntime, records: list[Record]) -> tuple[list[Record], list[Record]]:
    """(kept, dropped). Filtered-out records are acked by the caller, as AWS does. A record
    the source could not build is always kept (for its batch to give it up)."""
    rt.tally.received.inc(len(records))
    if not rt.filter:
        return records, []
    kept: list[Record] = []
    dropped: list[Record] = []
    for rec in records:
        if rec.build_error is not None:  # no values to match: its batch gives it up
            kept.append(rec)
            continue
        view = rt.source.filter_view(rec)
        (kept if view is None or rt.filter.matches(view) else dropped).append(rec)
    if dropped:
        rt.tally.filtered.inc(len(dropped))
    return kept, dropped


class SyncTrigger:
    def __init__(
        self,
        rt: TriggerRuntime,
        state: StateStore | None = None,
        *,
        singleton_lease_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.rt = rt
        #: The store that grants a `RunsOnce` source's lease (none: always received from).
        self.state = state
        self.singleton_lease_s = singleton_lease_s
        cfg = rt.config
        self.buffer = BatchBuffer(
            batch_size=cfg.effective_batch_size,
            window_s=cfg.effective_window_s,
            capacity=cfg.effective_batch_size * (cfg.maximum_concurrency + 1),
            max_buffered_bytes=(cfg.maximum_concurrency + 1) * MAX_SYNC_PAYLOAD,
            per_key=cfg.source_config.batch_per_key,
        )
        self.policy = RetryPolicy(
            maximum_retry_attempts=cfg.effective_retry_attempts,
            maximum_record_age_s=cfg.maximum_record_age_s,
            bisect_batch_on_function_error=cfg.effective_bisect,
        )
        self.backoff = Backoff(base_s=cfg.effective_base_delay_s, max_s=cfg.retry_max_delay_s)
        self.busy: set[str] = set()
        #: Busy keys whose batch is waiting to be retried (backoff after a failure/throttle).
        self.retrying: set[str] = set()
        #: Batches holding a `maximum_concurrency` slot. A batch waiting out a retry backoff
        #: gives its slot up (so failing keys cannot starve healthy ones) and takes one again,
        #: before any new batch, when the backoff is over.
        self.inflight = 0
        self._reclaiming = 0
        #: Set (and replaced) whenever a slot is given up or the trigger stops.
        self._slot_freed = asyncio.Event()
        #: Wakes the dispatcher (records arrived, a batch finished, stopping).
        self._work = asyncio.Event()
        #: Wakes the producer (room in the buffer, stopping).
        self._room = asyncio.Event()
        self._stopping = asyncio.Event()
        self._producer_done = False
        #: A source failure that receiving again cannot fix: the trigger drains and ends.
        self._failure: PermanentError | None = None
        #: Per ordering key: how many times it was released (batches notice the change).
        self._release_epoch: dict[str, int] = {}
        #: Set (and replaced) on stop and on every release: wakes retry backoffs early.
        self._wake = asyncio.Event()
        #: Set (and replaced) whenever a batch ends: wakes `release_keys`.
        self._batch_done = asyncio.Event()
        #: Batch tasks started and not ended (whether holding a slot or backing off).
        self._batches = 0
        #: Batches that crashed in a row (a source whose ack keeps failing, a bug): each one
        #: waits a throttle backoff before its records go back, so that they are not handed
        #: out and invoked again at once, for ever.
        self._crashes = 0
        if isinstance(rt.source, ControlledSource):
            rt.source.attach(self)

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def stop(self) -> None:
        self._stopping.set()
        self._work.set()
        self._room.set()
        self._wake.set()
        self._slot_freed.set()

    def release_epochs(self, keys: set[str]) -> dict[str, int]:
        epochs = {k: self._release_epoch.get(k, 0) for k in keys}
        epochs[_ALL_KEYS] = self._release_epoch.get(_ALL_KEYS, 0)
        return epochs

    def released_since(self, epochs: dict[str, int]) -> bool:
        return any(self._release_epoch.get(k, 0) != n for k, n in epochs.items())

    async def release_keys(self, keys: Collection[str], timeout_s: float) -> None:
        """PipelineControl: give up ordering keys (see the module docstring)."""
        wanted = set(keys)
        if not wanted:
            return
        for key in wanted:
            self._release_epoch[key] = self._release_epoch.get(key, 0) + 1
        woken, self._wake = self._wake, asyncio.Event()
        woken.set()
        self._slots_changed()
        back: list[Record] = []
        for key in sorted(wanted):
            back += self.buffer.take_key(key)
        if back:
            self._room.set()
            await settle(self.rt.source.nack(back), abandon=self.rt.forced)
        deadline = self.rt.clock.monotonic() + timeout_s
        while wanted & self.busy:
            remaining = deadline - self.rt.clock.monotonic()
            if remaining <= 0:
                self.rt.log.warning(
                    "keys.release_timeout",
                    extra={"trigger": self.rt.name, "keys": sorted(wanted & self.busy)},
                )
                return
            await _wait(self._batch_done, remaining)

    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._receive_side())
                await self._dispatch(tg)
        finally:
            leftovers = self.buffer.take_all()
            if leftovers:
                await settle(self.rt.source.nack(leftovers), abandon=self.rt.forced)
        if self._failure is not None:
            raise self._failure

    # ---- receiving ----

    async def _receive_side(self) -> None:
        source, state = self.rt.source, self.state
        try:
            if isinstance(source, RunsOnce) and isinstance(state, LeaseStore):
                await self._lead_or_stand_by(source, state)
            else:
                await self._produce()
        finally:
            self._producer_done = True
            self._work.set()

    async def _lead_or_stand_by(self, source: RunsOnce, state: LeaseStore) -> None:
        """Receive only while holding the source's lease; stand by otherwise, until stop."""
        lease = Lease(
            state, source.singleton_lease, timeout_s=self.singleton_lease_s, clock=self.rt.clock
        )

        async def term(fence: Fence) -> None:
            await source.resume()
            self.rt.log.info(
                "source.leading",
                extra={"trigger": self.rt.name, "lease": fence.lease, "epoch": fence.epoch},
            )
            try:
                await self._produce()
            finally:
                await settle(self._end_term(), abandon=self.rt.forced)

        runner = asyncio.ensure_future(lease.run(term))
        try:
            await self._stopping.wait()
        finally:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)

    async def _end_term(self) -> None:
        """The lease is lost (or the trigger stops): nothing more is received; buffered
        records go back, batches in flight give theirs back at their next retry point; this
        returns once every batch of the term has ended (settled or given back)."""
        self._release_epoch[_ALL_KEYS] = self._release_epoch.get(_ALL_KEYS, 0) + 1
        woken, self._wake = self._wake, asyncio.Event()
        woken.set()
        self._slots_changed()
        back = self.buffer.take_all()
        if back:
            self._room.set()
            await self.rt.source.nack(back)
        while self._batches:
            await _wait(self._batch_done, None)
        self.rt.log.info("source.standing_by", extra={"trigger": self.rt.name})

    async def _produce(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                await self._receive_once()
                failures = 0
            except PermanentError as exc:
                # e.g. the consumer group's authorisation was withdrawn: stop receiving,
                # let the batches in flight finish, and end the trigger with the error.
                self._failure = exc
                self.stop()
            except Exception as exc:  # task boundary: a source error must not cancel batches
                failures += 1
                delay = self.rt.throttle_backoff.delay(failures)
                extra = {"trigger": self.rt.name, "retry_in_s": round(delay, 2)}
                if isinstance(exc, TriggerdError):
                    # A failure the source knows (a slot in use elsewhere, a publication
                    # dropped): one line with its reason, not a traceback per retry.
                    self.rt.log.error("source.receive_failed", extra={**extra, "error": str(exc)})
                else:
                    self.rt.log.exception("source.receive_failed", extra=extra)
                await _wait(self._stopping, delay)

    async def _receive_once(self) -> None:
        rt = self.rt
        room = min(self.buffer.room(), self.buffer.batch_size)
        if room == 0:
            self._room.clear()
            await self._relieve_busy_keys()
            await _wait(self._room, rt.poll_timeout_s)
            return
        records = await rt.source.receive(room, rt.poll_timeout_s)
        if not records:
            return
        kept, dropped = apply_filter(rt, records)
        if kept:
            self.buffer.add(kept, rt.clock.monotonic())
            self._work.set()
        if dropped:
            try:
                await rt.ack(dropped)
            except Exception:
                # Not settled: given back (filtered out again when handed out again), not
                # left held by the source; the loop logs the error and backs off.
                await settle(rt.source.nack(dropped), abandon=rt.forced)
                raise
            if rt.acker is not None:
                # An in-memory ack does not suspend, and a source with records ready in memory
                # (the postgres source's shard log, a streamed transaction read back) returns
                # them without suspending either: with all of them filtered out, this loop
                # would hold the event loop (lease renewals, stop, other triggers) until the
                # source has nothing ready. One turn per page, as when the ack was a task.
                await asyncio.sleep(0)

    async def _relieve_busy_keys(self) -> None:
        """The buffer is full: if nothing in it can run and some keys' batches are waiting to
        be retried, give those keys' buffered records back (they all come after the batch in
        flight, so order is kept) rather than stop receiving for every other key."""
        if self.buffer.next_batch_possible(self.busy):
            return
        back: list[Record] = []
        for key in sorted(self.retrying & self.busy):
            back += self.buffer.take_key(key)
        if back:
            self.rt.log.info(
                "buffer.busy_keys_returned", extra={"trigger": self.rt.name, "records": len(back)}
            )
            # `_room` is left as it is: the producer receives again after a poll timeout, or
            # once a batch starts or ends. A source that hands the records straight back
            # (a requeue, a shard log) would otherwise fill the buffer and have them given
            # back again at once, for as long as the keys wait (49,010 nacks in 0.2 s).
            await settle(self.rt.source.nack(back), abandon=self.rt.forced)

    # ---- dispatching ----

    async def _dispatch(self, tg: asyncio.TaskGroup) -> None:
        cfg = self.rt.config
        while True:
            stopping = self._stopping.is_set()
            if stopping and self._producer_done:
                return  # buffered records are nacked by run(); in-flight batches drain
            self._work.clear()
            timeout: float | None = None
            if not stopping and self.inflight + self._reclaiming < cfg.maximum_concurrency:
                batch = self.buffer.next_batch(self.rt.clock.monotonic(), self.busy)
                if batch:
                    self._launch(tg, batch)
                    continue
                deadline = self.buffer.deadline(self.busy)
                if deadline is not None:
                    timeout = max(0.0, deadline - self.rt.clock.monotonic())
            await _wait(self._work, timeout)

    def _launch(self, tg: asyncio.TaskGroup, batch: list[Record]) -> None:
        keys = {r.key for r in batch if r.key is not None}
        self.busy |= keys
        self.inflight += 1
        self._batches += 1
        self.rt.tally.inflight.inc()
        self._room.set()
        # Release epochs as of now: a release (or a lease term's end) before the task first
        # runs still gives this batch back.
        tg.create_task(self._run_batch(batch, keys, self.release_epochs(keys)))

    async def _run_batch(self, batch: list[Record], keys: set[str], epochs: dict[str, int]) -> None:
        unsettled = Unsettled(batch)
        rt = self.rt
        try:
            with rt.metrics.tracer.batch(
                trigger=rt.name,
                function=rt.function,
                source_type=rt.source_type,
                records=len(batch),
                trace=batch[0].trace_id,
            ):
                await BatchRun(self, unsettled, epochs).process(batch)
            self._crashes = 0
        except asyncio.CancelledError:
            await settle(self._give_back(unsettled, keys), abandon=self.rt.forced)
            raise
        except Exception:  # task boundary: log, give the records back in order
            self._crashes += 1
            delay = self.rt.throttle_backoff.delay(self._crashes)
            self.rt.log.exception(
                "batch.crashed", extra={"trigger": self.rt.name, "retry_in_s": round(delay, 2)}
            )
            try:
                await self._crash_pause(keys, epochs, delay)
            finally:
                await settle(self._give_back(unsettled, keys), abandon=self.rt.forced)
        finally:
            self.busy -= keys
            self.inflight -= 1
            self._batches -= 1
            self.rt.tally.inflight.dec()
            self._work.set()
            self._room.set()
            self._slots_changed()
            ended, self._batch_done = self._batch_done, asyncio.Event()
            ended.set()

    async def _crash_pause(self, keys: set[str], epochs: dict[str, int], delay: float) -> None:
        """A crashed batch's wait before its records go back, cut short by a stop or a
        release of its keys (a revocation, a lease's end) as a retry's backoff is; its keys
        count as retrying meanwhile (a full buffer gives their records back)."""
        self.retrying |= keys
        try:
            deadline = self.rt.clock.monotonic() + delay
            while not self.stopping and not self.released_since(epochs):
                remaining = deadline - self.rt.clock.monotonic()
                if remaining <= 0:
                    return
                await _wait(self._wake, remaining)
        finally:
            self.retrying -= keys

    def _slots_changed(self) -> None:
        freed, self._slot_freed = self._slot_freed, asyncio.Event()
        freed.set()

    def release_slot(self) -> None:
        """A batch starts a retry backoff: its slot goes to other keys meanwhile."""
        self.inflight -= 1
        self._work.set()
        self._slots_changed()

    async def reclaim_slot(self, epochs: dict[str, int]) -> None:
        """A batch's backoff is over: wait for a slot (ahead of new batches); at once when
        stopping or when its keys were released, as the batch then only gives records back."""
        self._reclaiming += 1
        try:
            limit = self.rt.config.maximum_concurrency
            while self.inflight >= limit and not self.stopping and not self.released_since(epochs):
                await self._slot_freed.wait()
        finally:
            self._reclaiming -= 1
            self.inflight += 1

    async def _give_back(self, unsettled: Unsettled, keys: set[str]) -> None:
        """Nack a batch's unsettled records, then the buffered records of its keys, so the
        source redelivers one key's records in their original order."""
        records = unsettled.records()
        unsettled.clear()
        for key in sorted(keys):
            records += self.buffer.take_key(key)
        for rec in records:
            rec.failed = False  # given back, not failed
        if records:
            await self.rt.source.nack(records)


async def _wait(event: asyncio.Event, wait_s: float | None) -> None:
    # asyncio.timeout, not wait_for: on Python 3.11 wait_for drops a cancel (the drain's
    # timeout) that arrives in the step where the event is set, and the stop would then wait
    # for a second signal.
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(wait_s):
            await event.wait()


class BatchRun:
    """Invokes one batch until every record in it is settled."""

    def __init__(
        self,
        trigger: SyncTrigger,
        unsettled: Unsettled,
        epochs: dict[str, int] | None = None,
    ) -> None:
        self.t = trigger
        self.rt = trigger.rt
        self.unsettled = unsettled
        if epochs is None:
            epochs = trigger.release_epochs({r.key for r in unsettled.records() if r.key})
        self.epochs = epochs
        #: Sub-batches still to invoke, in order (bisected halves go in front).
        self.pending: list[list[Record]] = []
        #: Monotonic time after which the records must not be invoked again, but given back
        #: (the source's hold limit, counted from when the oldest could have been received).
        self.hold_until: float | None = None
        self.invocations = 0
        limit = self.rt.holder.hold_limit_s() if self.rt.holder is not None else None
        if limit is not None:
            window = self.rt.config.effective_window_s
            self.hold_until = self.rt.clock.monotonic() - window + limit

    async def process(self, batch: list[Record]) -> None:
        if any(map(_BUILD_ERROR, batch)):  # (in C: once per batch on the hot path)
            batch = await self.give_up_unbuilt(batch)
        pending = self.pending = [batch] if batch else []
        throttles = 0
        while pending:
            if self.t.stopping or self.t.released_since(self.epochs):
                # Shutting down, or the source gave the key up: give back what has not been
                # settled instead of retrying (not a failed attempt for any of them).
                await self.nack(given_back=[r for part in pending for r in part])
                return
            records = await self.drop_too_old(pending.pop(0), None)
            if not records:
                continue
            if await self.held_too_long(records):
                return
            try:
                payload: bytes | Exception = self.rt.event(records)
            except Exception as exc:  # a source's envelope may raise anything
                payload = exc
            if isinstance(payload, Exception):  # out of the handler: see `unbuildable`
                await self.unbuildable(records, payload)
                continue
            if len(payload) > MAX_SYNC_PAYLOAD:
                await self.give_up(records, "MaximumPayloadSizeExceeded", None)
                continue
            attempt = 1 + max(r.attempts for r in records)
            result = await self.invoke(payload, records[0].trace_id, attempt)
            if result.outcome in (Outcome.THROTTLED, Outcome.INVOKE_ERROR):
                throttles += 1
                delay = max(result.retry_after_s or 0.0, self.rt.throttle_backoff.delay(throttles))
                pending.insert(0, records)
                await self.backoff(records, delay)
                continue
            throttles = 0
            if self.rt.result_hook is not None:
                result = self.rt.result_hook.on_result(records, result)
            retry, delay = await self.settle(records, result)
            if retry:
                pending[0:0] = retry
                await self.backoff(retry[0], delay)

    async def give_up_unbuilt(self, batch: list[Record]) -> list[Record]:
        """Records the source could not build (`Record.build_error`: an error of the record
        itself, which no retry fixes) are never invoked: each goes to the on-failure
        destination alone, at once, with its error (or is discarded and logged without one,
        as any give-up). Returns the rest of the batch, in order. Once the trigger stops or
        the batch's keys are released, the rest is returned as it is, for `process` to give
        it all back: given up then, a record would be given up again by whichever reader
        (this daemon restarted, the lease's next holder) reads it next."""
        if self.rt.source_owned and self.rt.on_failure.destination is None:
            return await self.give_back_unbuilt(batch)
        rest: list[Record] = []
        for index, rec in enumerate(batch):
            if self.t.stopping or self.t.released_since(self.epochs):
                return rest + batch[index:]
            error = rec.build_error
            if error is None:
                rest.append(rec)
                continue
            detail = {
                "item_id": rec.item_id,
                "error_type": error.error_type,
                "subject": error.subject,
            }
            await self.give_up([rec], "RecordBuildFailed", None, build_error=error, detail=detail)
        return rest

    async def give_back_unbuilt(self, batch: list[Record]) -> list[Record]:
        """A queue's (SQS, RabbitMQ) records its source could not build, with no on-failure
        destination: given back failed, for the queue to end their retries (redrive to its
        DLQ, a dead-letter limit); acked, they would be deleted, kept nowhere. The later
        records of their keys go back after them, unfailed, in order. Returns the rest."""
        rest: list[Record] = []
        failed: list[Record] = []
        followers: list[Record] = []
        stopped: set[str] = set()
        for rec in batch:
            error = rec.build_error
            if error is not None:
                self.log_unbuilt_given_back(rec, error)
                failed.append(rec)
                if rec.key is not None:
                    stopped.add(rec.key)
            elif rec.key is not None and rec.key in stopped:
                followers.append(rec)
            else:
                rest.append(rec)
        for key in sorted(stopped):
            followers += self.t.buffer.take_key(key)
        await self.nack(failed=failed, given_back=followers)
        return rest

    def log_unbuilt_given_back(self, rec: Record, error: BuildError) -> None:
        """The line of a record that cannot be built given back to its queue (never the
        error's message, which may quote the record's values)."""
        rt = self.rt
        rt.log.warning(
            "record.unbuilt_given_back",
            extra={
                "trigger": rt.name,
                "function": rt.function,
                "item_id": rec.item_id,
                "error_type": error.error_type,
                "subject": error.subject,
            },
        )

    async def held_too_long(self, records: list[Record]) -> bool:
        """Past the source's hold limit (a long split, throttles): give the records back
        before the queue takes them back itself, not as failed attempts; in order, with the
        buffered records of their keys."""
        if self.hold_until is None or not self.invocations:
            return False  # the first invocation always goes ahead
        if self.rt.clock.monotonic() < self.hold_until:
            return False
        back = records + [r for part in self.pending for r in part]
        self.pending.clear()
        for key in sorted({r.key for r in back if r.key is not None}):
            back += self.t.buffer.take_key(key)
        self.rt.log.warning(
            "batch.held_too_long",
            extra={
                "trigger": self.rt.name,
                "function": self.rt.function,
                "records": len(back),
                "hint": "given back unfailed before the queue's own limit (SQS visibility, "
                "RabbitMQ consumer_timeout); a smaller batch_size splits faster",
            },
        )
        await self.nack(given_back=back)
        return True

    async def backoff(self, records: list[Record], delay: float) -> None:
        """Wait before a retry (cut short by stop); meanwhile the key counts as retrying."""
        keys = {r.key for r in records if r.key is not None}
        self.t.retrying |= keys
        clock = self.rt.clock
        deadline = clock.monotonic() + delay
        self.t.release_slot()
        try:
            while not self.t.stopping and not self.t.released_since(self.epochs):
                remaining = deadline - clock.monotonic()
                if remaining <= 0:
                    break
                await _wait(self.t._wake, remaining)
        except BaseException:
            self.t.inflight += 1  # cancelled: the batch ends now, and its end frees the slot
            raise
        finally:
            self.t.retrying -= keys
        await self.t.reclaim_slot(self.epochs)

    async def invoke(self, payload: bytes, trace_id: str | None, attempt: int) -> InvokeResult:
        """`trace_id`: the batch's first record's trace header, as Lambda does for SQS.
        (Invocations are counted and timed by the backend's instrumentation.)"""
        rt = self.rt
        self.invocations += 1
        with invocation_scope(rt.name, attempt):
            result = await rt.backend.invoke(payload, trace_id=trace_id)
        rt.log.debug(
            "batch.invoked",
            extra={
                "trigger": rt.name,
                "function": rt.function,
                "request_id": result.request_id,
                "trace_id": trace_id,
                "outcome": result.outcome.value,
            },
        )
        return result

    async def settle(
        self, records: list[Record], result: InvokeResult
    ) -> tuple[list[list[Record]], float]:
        """Ack what succeeded; return the sub-batches to retry and the delay before it."""
        verdict = judge(
            result, records, report_batch_item_failures=self.rt.config.report_batch_item_failures
        )
        await self.ack(verdict.succeeded, delivered=True)
        failed = verdict.failed
        if not failed:
            return [], 0.0
        self.rt.log.warning(
            "batch.failed",
            extra={
                "trigger": self.rt.name,
                "function": self.rt.function,
                "request_id": result.request_id,
                "reason": verdict.reason,
                "failed": len(failed),
                "batch": len(records),
            },
        )
        policy = self.t.policy
        whole = len(failed) == len(records) and not verdict.malformed
        if policy.bisect_batch_on_function_error and whole and result.failed and len(failed) > 1:
            # Halves are invoked at once, the first first (per-key order); splitting is not an
            # attempt. Queue sources: the messages stay unacknowledged meanwhile (SQS
            # visibility is extended, AMQP deliveries stay unacked), so a crash redelivers.
            half = len(failed) // 2
            return [failed[:half], failed[half:]], 0.0
        if self.rt.source_owned:
            await self.settle_source_owned(failed, result)
            return [], 0.0
        for rec in failed:
            rec.attempts += 1
        now = self.rt.clock.time()
        if any(policy.exhausted(r) for r in failed):
            await self.give_up(failed, "RetryAttemptsExhausted", result)
            return [], 0.0
        if any(policy.too_old(r, now) for r in failed):
            await self.give_up(failed, "RecordAgeExceeded", result)
            return [], 0.0
        self.rt.tally.retried.inc(len(failed))
        return [failed], self.t.backoff.delay(max(r.attempts for r in failed))

    async def settle_source_owned(self, failed: list[Record], result: InvokeResult) -> None:
        """SQS/RabbitMQ-style: give failed records back to the source for redelivery, unless
        an on-failure destination is set and they used up their attempts."""
        limit = self.t.policy.maximum_retry_attempts
        give_up: list[Record] = []
        back: list[Record] = []
        for rec in failed:
            made = rec.attempts + 1
            exhausted = limit >= 0 and made > limit
            (give_up if exhausted and self.rt.on_failure.destination else back).append(rec)
        if give_up:
            for rec in give_up:
                rec.attempts += 1
            await self.give_up(give_up, "RetryAttemptsExhausted", result)
        if back:
            await self.nack_failed(back)

    async def nack_failed(self, failed: list[Record]) -> None:
        """Give failed records back to the source for redelivery. The rest of a failed key's
        records wait in this batch's other halves and in the buffer: they go back after the
        failed ones so the source redelivers the key in order. They did not fail (not on
        their own): no attempt is counted for them."""
        keys = {r.key for r in failed if r.key is not None}
        followers = self.take_pending(keys)
        for key in sorted(keys):
            followers += self.t.buffer.take_key(key)
        await self.nack(failed=failed, given_back=followers)

    def take_pending(self, keys: set[str]) -> list[Record]:
        """Remove and return the not yet invoked records of `keys`, in order."""
        if not keys:
            return []
        taken = [r for part in self.pending for r in part if r.key in keys]
        if taken:
            parts = ([r for r in part if r.key not in keys] for part in self.pending)
            self.pending[:] = [part for part in parts if part]
        return taken

    async def drop_too_old(
        self, records: list[Record], result: InvokeResult | None
    ) -> list[Record]:
        """Records past `maximum_record_age_s` are not invoked (again): they go to the
        on-failure destination. Queue-style sources have no record age."""
        max_age = self.t.policy.maximum_record_age_s
        if self.rt.source_owned or max_age < 0:
            return records  # no age limit: nothing to look at per record
        now = self.rt.clock.time()
        old = [r for r in records if now - r.created_at > max_age]
        if not old:
            return records
        await self.give_up(old, "RecordAgeExceeded", result)
        return [r for r in records if not now - r.created_at > max_age]

    async def unbuildable(self, records: list[Record], exc: Exception) -> None:
        """A batch whose event cannot be built (a plugin source's record that cannot be
        serialised). Building is a function of the records alone: retried, it would fail
        for good and hold its keys. Split in halves (in order, in front) down to the record
        that fails, which is given up as a record its source could not build
        (`RecordBuildFailed`, without a payload); a queue's with no on-failure destination
        goes back failed instead (`give_back_unbuilt`). Called out of the `except` block that
        caught `exc`: an error raised while giving up (a state store down) would chain `exc`
        into the traceback `batch.crashed` logs, and its message may quote the values."""
        if len(records) > 1:
            half = len(records) // 2
            self.pending[0:0] = [records[:half], records[half:]]
            return
        [rec] = records
        error = BuildError.of(exc, f"{self.rt.source_type} record")
        if self.rt.source_owned and self.rt.on_failure.destination is None:
            # The halves before it were taken from the front: what is pending comes after.
            self.log_unbuilt_given_back(rec, error)
            await self.nack_failed(records)
            return
        detail = {"item_id": rec.item_id, "error_type": error.error_type, "subject": error.subject}
        await self.give_up(
            records,
            "RecordBuildFailed",
            None,
            with_payload=False,
            build_error=error,
            detail=detail,
        )

    async def give_up(
        self,
        records: list[Record],
        condition: str,
        result: InvokeResult | None,
        *,
        with_payload: bool = True,
        build_error: BuildError | None = None,
        detail: dict[str, str] | None = None,
    ) -> None:
        """The on-failure record of `records`, then their ack. `with_payload`: the batch's
        event goes into the record when the trigger asks for it (not when it cannot be
        built). `build_error`: a record its source could not build (`buildError` in the
        record); `detail`: more fields for the log line (never the record's values).
        A queue source's messages (SQS, RabbitMQ) get one record each: deleted from their
        queue once it is written, each is kept in its own record only, which a destination
        with a size limit (SQS: MaximumMessageSize) would otherwise strip of all of them
        together when they do not fit in one (as the queue's redrive moves each alone)."""
        rt = self.rt
        if rt.source_owned and len(records) > 1:
            for rec in records:
                await self.give_up(
                    [rec],
                    condition,
                    result,
                    with_payload=with_payload,
                    build_error=build_error,
                    detail=detail,
                )
            return
        request_id = result.request_id if result else str(uuid.uuid4())
        record = stream_failure_record(
            request_id=request_id,
            function_arn=rt.function_arn,
            condition=condition,
            approximate_invoke_count=max((r.attempts for r in records), default=0),
            result=result,
            timestamp=rt.clock.time(),
            batch_info=rt.source.batch_info(records),
            payload=self.failure_payload(records) if rt.include_payload and with_payload else None,
            build_error=build_error,
        )
        sent = asyncio.Event()
        delivery = asyncio.ensure_future(
            rt.on_failure.deliver(record, condition, request_id, sent=sent, detail=detail)
        )
        try:
            await asyncio.shield(delivery)
        except asyncio.CancelledError:
            # A drain timeout while the record is delivered: it has DELIVERY_GRACE_S more.
            # Delivered (at its destination, even if its index write is still under way),
            # the records are acked (a restart neither invokes them nor writes the record
            # again); not, they are given back with the rest of the batch.
            delivered = await finish_after_cancel(delivery, DELIVERY_GRACE_S, rt.forced)
            if (delivered or sent.is_set()) and not rt.forced.is_set():
                await self.ack(records)
            else:
                delivery.cancel()
            raise
        await self.ack(records)

    def failure_payload(self, records: list[Record]) -> JSONDict | None:
        """The batch's event for its on-failure record; None when it cannot be serialised
        (a record given up before its event was built, too old: sent without it rather than
        to a destination that would fail to write it at every retry, holding its keys). The
        line logged has the error's class, never its message (it may quote values)."""
        rt = self.rt
        try:
            payload = rt.source.envelope(records)
            orjson.dumps(payload)
        except Exception as exc:  # a source's envelope may raise anything
            rt.log.warning(
                "batch.payload_unbuildable",
                extra={"trigger": rt.name, "error_type": type(exc).__name__},
            )
            return None
        return payload

    async def ack(self, records: Sequence[Record], *, delivered: bool = False) -> None:
        if not records:
            return
        # before the await: a cancel must not nack them as well
        unsettled = self.unsettled
        if len(records) == len(unsettled):
            unsettled.clear()  # they are (distinct) unsettled records of the batch: all of them
        else:
            unsettled.discard(records)
        try:
            await self.rt.ack(records)
        except Exception:
            # Not settled (a plugin source's ack that raises): unsettled again, so the
            # batch's end (`batch.crashed`) gives them back and the source hands them out
            # again, rather than holding them neither acked nor nacked.
            unsettled.restore(records)
            raise
        if delivered:
            self.rt.tally.succeeded.inc(len(records))

    async def nack(
        self, *, failed: Sequence[Record] = (), given_back: Sequence[Record] = ()
    ) -> None:
        """Give records back to the source in one call, `failed` first: those failed an
        attempt (`Record.failed`); `given_back` only return unsettled."""
        records = [*failed, *given_back]
        if not records:
            return
        for rec in failed:
            rec.failed = True
        for rec in given_back:
            rec.failed = False
        self.unsettled.discard(records)
        await settle(self.rt.source.nack(records), abandon=self.rt.forced)
