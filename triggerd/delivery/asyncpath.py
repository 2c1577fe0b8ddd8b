"""The asynchronous invocation path, for push sources (directory, schedule, S3, async webhooks).

Accept: each record becomes one event, written to the durable queue in the state store (with
the source's checkpoint, in one transaction) before the source is acked.
Invoke: events are claimed with a lease, invoked, and then completed, retried (function
errors: up to `maximum_retry_attempts`, ~1 min then ~2 min apart; throttles: backoff without
counting), or written to the on-failure destination (RetriesExhausted / EventAgeExceeded).
A crash leaves claimed events leased; they are claimable again when the lease expires or at the
next start (`recover_leases`). A stop whose drain times out gives back the events being
invoked; an event whose on-failure record is being delivered is completed if the record
arrives within `DELIVERY_GRACE_S`, else given back with its attempts counted, so the next start
sends the record again and does not invoke the function (`_dead_letter_cancelled`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import hashlib
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import orjson

from triggerd.delivery.failures import AsyncCondition, async_invocation_record
from triggerd.delivery.onfailure import DELIVERY_CANCEL_S, DELIVERY_GRACE_S
from triggerd.delivery.outcomes import dump_outcome, given_up_at, load_outcome
from triggerd.delivery.pipeline import TriggerRuntime, apply_filter
from triggerd.delivery.retry import Backoff
from triggerd.delivery.settle import SETTLE_GRACE_S, finish_after_cancel, settle
from triggerd.state.base import CompletesLater, NewEvent, QueuedEvent, StateStore
from triggerd.state.leases import DEFAULT_TIMEOUT_S, Fence, Lease, LeaseLostError, LeaseStore
from triggerd.state.sqlite import StateStoreError
from triggerd.telemetry.spans import invocation_scope
from triggerd.types import (
    MAX_ASYNC_PAYLOAD,
    BuildError,
    InvokeResult,
    LeadsWork,
    Outcome,
    Record,
    RunsOnce,
    TriggerdError,
)

_NS = uuid.UUID("6f1d9a52-3c1e-4c39-9d1f-2b7b8f6a0c11")
#: SHA-1 state after the namespace's bytes: `event_request_id` copies it per event.
_NS_SHA1 = hashlib.sha1(_NS.bytes, usedforsecurity=False)
#: Events whose invocation ended and whose outcome is being written, beyond the invocations
#: in flight (a bound for when the disk is slower than the function).
MAX_SETTLING = 1024
#: Longest wait of an idle invoke loop. Enqueues here (and, with a shared store, anywhere) wake
#: it, and it waits exactly until the next retry or lease end it knows of: this is only the
#: fallback for events it cannot hear of (a retry released by another daemon).
IDLE_POLL_S = 60.0
#: Longest single `receive` of the accept loop. Sources wait for records (a schedule until its
#: next fire time) and a stop interrupts the wait, so this only bounds one call.
ACCEPT_WAIT_S = 300.0
#: Most records one `receive` of the accept loop takes: they are committed in one enqueue
#: (one transaction and fsync, however many are ready). A source that has more ready than
#: one commit takes is not held to 64 records a commit: the directory benchmark committed
#: 2,000 files in 32 sequential fsyncs before.
ACCEPT_BATCH = 256
#: Most records one commit of the accept loop holds: the records a source hands out while a
#: commit is under way are received (up to ACCEPT_BATCH a receive) and their events built
#: meanwhile, and all of them go in the next commit once that one is durable, so a backlog is
#: committed in fewer, larger transactions without the first records of a burst waiting for
#: a large one.
ACCEPT_MAX = 1024
#: Events claimed ahead of the free invocation slots when this daemon is the store's only
#: owner (SQLite): claimed in batches of at least half this, so a drain makes one claim per
#: tens of events instead of one per event or two. With a shared store (PostgreSQL), claims
#: stay one slot's worth ahead, leaving the rest to the other daemons.
CLAIM_AHEAD = 64
#: Most request ids kept of records sent to on-failure by commits not yet acked (`_rejected`).
MAX_REJECTED = 4 * ACCEPT_MAX


def _cancelling() -> bool:
    """Whether the current task itself is being cancelled (not only a task it awaited)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def event_request_id(trigger: str, item_id: str) -> str:
    """Stable per (trigger, record): an event put on the queue twice is stored once.

    `str(uuid.uuid5(_NS, f"{trigger}\\x00{item_id}"))`, computed without building UUID
    objects (uuid5 was 8% of the loop's time in a profile of the directory benchmark): the
    namespace's hash state is reused, then the version (5) and variant (RFC 4122) bits are
    set as uuid5 sets them."""
    sha = _NS_SHA1.copy()
    sha.update(f"{trigger}\x00{item_id}".encode())
    raw = bytearray(sha.digest()[:16])
    raw[6] = (raw[6] & 0x0F) | 0x50
    raw[8] = (raw[8] & 0x3F) | 0x80
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@dataclass(slots=True)
class _Taken:
    """Records taken from a source, with the events and checkpoint to commit for them."""

    records: list[Record] = field(default_factory=list)
    events: list[NewEvent] = field(default_factory=list)
    checkpoint: dict[str, str | None] = field(default_factory=dict)
    oversize: list[tuple[Record, bytes]] = field(default_factory=list)
    #: Records whose event cannot be built (the source's envelope raises, or it cannot be
    #: serialised, or the source could not build the record: `Record.build_error`), with the
    #: error: sent to the on-failure path instead of being enqueued.
    unbuildable: list[tuple[Record, BuildError]] = field(default_factory=list)


class AsyncTrigger:
    """Accepts records from a push source onto the durable queue, and invokes from it."""

    def __init__(
        self,
        rt: TriggerRuntime,
        state: StateStore,
        *,
        lease_s: float,
        throttles_dead_letter: bool = False,
        singleton_lease_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.rt = rt
        self.state = state
        self.lease_s = lease_s
        #: A source that runs once across the cluster (a schedule) is received from only
        #: while this daemon holds its lease, renewed every third of this.
        self.singleton_lease_s = singleton_lease_s
        #: Reserved concurrency 0: throttled events go straight to the on-failure destination
        #: without retries, as Lambda does.
        self.throttles_dead_letter = throttles_dead_letter
        cfg = rt.config
        self.retry_backoff = Backoff(
            base_s=cfg.effective_base_delay_s, max_s=cfg.retry_max_delay_s, jitter=0.1
        )
        self.throttle_backoff = Backoff(base_s=1.0, max_s=300.0)
        self.concurrency = cfg.maximum_concurrency
        owner = bool(getattr(state, "grants_forever", False))
        #: Events claimed beyond the invocations in flight, and the least a claim asks for.
        self._ahead = max(self.concurrency, CLAIM_AHEAD) if owner else self.concurrency
        self._claim_min = self._ahead // 2 if owner else 1
        #: This trigger's metric children (`labels()` per event costs more than the update).
        self._event_age = rt.metrics.event_age.labels(rt.name)
        self._succeeded = rt.metrics.records_succeeded.labels(rt.name)
        self._throttles: dict[int, int] = {}
        #: Events claimed here and not yet settled (their leases are extended).
        self._inflight: set[int] = set()
        #: Of those, the ones being invoked: what `maximum_concurrency` bounds. An event whose
        #: invocation ended waits for its completion's commit without holding a slot, so
        #: group commit can settle many at once while the next events are invoked.
        self._invoking: set[int] = set()
        #: Claimed events waiting for a slot.
        self._ready: collections.deque[QueuedEvent] = collections.deque()
        #: Events settled (completed, or released for a retry) while their handling goes on:
        #: a cancellation must not give them back again (with their attempts uncounted).
        self._settled: set[int] = set()
        #: Completion tasks, for a store without `complete_later`.
        self._completing: set[asyncio.Future[None]] = set()
        #: The store's completion without a coroutine, when it has one (`CompletesLater`).
        self._complete_later: Callable[[int], asyncio.Future[None]] | None = (
            state.complete_later if isinstance(state, CompletesLater) else None
        )
        #: Request ids of records (too large, or whose event cannot be built) whose on-failure
        #: record reached its destination in a commit not acked yet: given back when its write
        #: fails and taken again, they are not sent again (one more copy per failed commit).
        self._rejected: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._tg: asyncio.TaskGroup | None = None
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        #: The last claim failed (the store cannot be reached): try again after the poll
        #: interval rather than waiting for a due time.
        self._claim_failed = False
        #: The earliest time an event of this queue becomes claimable, as last known.
        self._due: float | None = None
        #: The time the last claim was made at.
        self._claimed_at = 0.0

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    def wake(self) -> None:
        """New events were queued: look for them, unless enough are buffered already (the
        next claim, once the buffer runs low, takes them)."""
        self._poke()

    def _poke(self) -> None:
        """Wake the invoke loop when it has something to do: a claim to make, or (nothing
        buffered) its wait to work out again. A settled event or a new one does not cost a
        turn of the loop while the buffer holds enough."""
        if not self._ready or self._want() >= self._claim_min:
            self._wake.set()

    def _want(self) -> int:
        """How many events the next claim asks for: the buffer's free room, bounded by the
        events still settling."""
        return min(
            self.concurrency + self._ahead - len(self._invoking) - len(self._ready),
            self.concurrency + MAX_SETTLING - len(self._inflight),
        )

    async def run(self) -> None:
        try:
            # The heartbeat is outside the invocations' task group: after a drain timeout
            # cancelled them, an on-failure record under way and the settlement writes take
            # their grace with their events' leases still extended (a lease running out then
            # lets another daemon on a shared store claim the event and invoke it again).
            async with asyncio.TaskGroup() as outer:
                heartbeat = outer.create_task(self._lease_heartbeat())
                try:
                    async with asyncio.TaskGroup() as tg:
                        accept = tg.create_task(self._accept())
                        await self._invoke_loop(tg)
                        # The invocations still under way end (a drain timeout cancels this,
                        # and they give their events back) and the completions handed to the
                        # store are committed before the trigger counts as stopped: the
                        # heartbeat extends their leases until then, since a drain may
                        # outlast a lease (another claim would invoke them again).
                        await self._drained()
                        await asyncio.gather(accept, return_exceptions=True)
                finally:
                    heartbeat.cancel()
        finally:
            if self._completing:  # cancelled: completion tasks end before the store closes
                await asyncio.wait(self._completing, timeout=SETTLE_GRACE_S)

    async def _drained(self) -> None:
        """Wait until no event is in flight here (stopping: the buffer was given back). Every
        event that leaves `_inflight` pokes (`_handle`, `_completed`), and with the buffer
        empty a poke always sets `_wake`."""
        while self._inflight:
            self._wake.clear()
            await self._wake.wait()

    async def _lease_heartbeat(self) -> None:
        """Extend the leases of events being handled, so a long invocation (or a slow
        on-failure destination) never lets another claim invoke the same event again."""
        interval = max(0.05, self.lease_s / 3)
        while True:
            await asyncio.sleep(interval)
            if self._inflight:
                try:
                    await self.state.extend_lease(
                        list(self._inflight), self.lease_s, self.rt.clock.time()
                    )
                except StateStoreError as exc:  # unreachable store: one line, keep trying
                    self.rt.log.warning(
                        "queue.lease_extend_failed",
                        extra={"trigger": self.rt.name, "error": str(exc)},
                    )
                except Exception:  # task boundary: keep trying; the lease still has time
                    self.rt.log.exception(
                        "queue.lease_extend_failed", extra={"trigger": self.rt.name}
                    )

    # ---- accept ----

    async def _accept(self) -> None:
        source, state = self.rt.source, self.state
        if not (isinstance(source, RunsOnce) and isinstance(state, LeaseStore)):
            await self._accept_loop()
            return
        lease = Lease(
            state, source.singleton_lease, timeout_s=self.singleton_lease_s, clock=self.rt.clock
        )

        async def work(fence: Fence) -> None:
            await source.resume()
            if not isinstance(source, LeadsWork):
                await self._accept_loop(fence)
                return
            await source.lead(functools.partial(self._write_checkpoints, fence))
            try:
                await self._accept_loop(fence)
            finally:
                # Lost, given up or stopping: the source's own work stops with the lease.
                await settle(source.stand_by(), abandon=self.rt.forced)

        # Standing by, leading, and back to standing by when the lease is lost, until stop.
        runner = asyncio.ensure_future(lease.run(work))
        try:
            await self._stopping.wait()
        finally:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)

    async def _write_checkpoints(self, fence: Fence, checkpoint: Mapping[str, str | None]) -> None:
        """A singleton source's own checkpoint writes, fenced by its lease."""
        await self._persist([], dict(checkpoint), fence)

    async def _accept_loop(self, fence: Fence | None = None) -> None:
        """Receive and accept until stopped; with a fence (a singleton source's lease), a
        write refused because the lease moved on ends the loop (LeaseLostError)."""
        rt = self.rt
        failures = 0
        #: Records received while the last commit was under way, with their events built.
        taken: _Taken | None = None
        while taken is not None or not self._stopping.is_set():
            try:
                if taken is None:
                    records = await self._receive()
                    taken = await self._build_received(records) if records else None
                if taken is not None:
                    batch, taken = taken, None
                    taken = await self._commit(batch, fence, take_next=True)
                failures = 0
            except LeaseLostError:
                raise
            except Exception as exc:  # task boundary: a source or store error must not stop invokes
                failures += 1
                delay = self.throttle_backoff.delay(failures)
                extra = {"trigger": rt.name, "retry_in_s": delay}
                if isinstance(exc, TriggerdError):
                    # A known failure (the state store cannot write: a full disk) is one line
                    # with its reason, not a traceback per retry.
                    rt.log.error("source.accept_failed", extra={**extra, "error": str(exc)})
                else:
                    rt.log.exception("source.accept_failed", extra=extra)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)

    async def _receive(self) -> list[Record]:
        """Wait in the source until it has records or the trigger stops: an idle trigger does
        not wake up to ask (sources take records only once their wait is over, so one whose
        wait is cancelled has handed out nothing)."""
        receive = asyncio.ensure_future(self.rt.source.receive(ACCEPT_BATCH, ACCEPT_WAIT_S))
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait((receive, stopping), return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            if not receive.done():
                receive.cancel()
        try:
            return await receive
        except asyncio.CancelledError:
            if self._stopping.is_set() and not _cancelling():
                return []
            raise

    async def accept(self, records: list[Record], fence: Fence | None = None) -> None:
        """Persist the records' events (and checkpoints) durably, then ack the source. With
        a fence, the write is refused (LeaseLostError, records nacked) once the lease has
        moved on."""
        await self._commit(await self._build_received(records), fence, take_next=False)

    def _build(self, records: list[Record], into: _Taken | None = None) -> _Taken:
        """The events (and the checkpoint) of records taken from the source, added to
        `into` when given."""
        rt = self.rt
        kept, _dropped = apply_filter(rt, records)
        kept_ids = {id(r) for r in kept}
        now = rt.clock.time()
        # Built apart and added at the end: `_build` raising (the source's filter view, not
        # its envelope, whose failure sends a record to `unbuildable`) leaves `into` as it was.
        events: list[NewEvent] = []
        checkpoint: dict[str, str | None] = {}
        oversize: list[tuple[Record, bytes]] = []
        unbuildable: list[tuple[Record, BuildError]] = []
        for rec in records:
            if rec.checkpoint:
                checkpoint.update(rec.checkpoint)
            if id(rec) not in kept_ids:
                continue
            if rec.build_error is not None:  # its payload lacks the values: never invoked
                unbuildable.append((rec, rec.build_error))
                continue
            try:
                payload = orjson.dumps(rt.source.envelope([rec]))
            except Exception as exc:  # a source's envelope may raise anything
                # Building an event is a function of the record alone: one that fails now
                # fails at every retry, and a source that hands given-back records out first
                # would be blocked behind it. It goes to the on-failure path, acked with the
                # rest (a poison record, as AWS treats one that can never be invoked).
                unbuildable.append((rec, BuildError.of(exc, f"{rt.source_type} record")))
                continue
            if len(payload) > MAX_ASYNC_PAYLOAD:
                oversize.append((rec, payload))
                continue
            events.append(
                NewEvent(
                    trigger=rt.name,
                    function=rt.function,
                    payload=payload,
                    request_id=event_request_id(rt.name, rec.item_id),
                    enqueued_at=now,
                    available_at=now,
                    trace_id=rec.trace_id,
                )
            )
        if into is None:
            return _Taken(list(records), events, checkpoint, oversize, unbuildable)
        into.records += records
        into.events += events
        into.checkpoint.update(checkpoint)
        into.oversize += oversize
        into.unbuildable += unbuildable
        return into

    async def _commit(
        self, taken: _Taken, fence: Fence | None, *, take_next: bool
    ) -> _Taken | None:
        """Persist `taken` durably, then ack its records; on failure they are given back.
        `take_next`: while the write is under way, the records the source hands out meanwhile
        are taken and built (`_take_during`), returned for the next commit (given back with
        these if this one fails: the next commit never lands before this one)."""
        rt = self.rt
        following: _Taken | None = None
        try:
            for rec, payload in taken.oversize:
                await self._reject_oversize(rec, payload)
            for rec, error in taken.unbuildable:
                await self._reject_unbuildable(rec, error)
            persist = asyncio.ensure_future(self._persist(taken.events, taken.checkpoint, fence))
            # Cancelled meanwhile (a lost lease, a stop), the write goes on alone: its failure
            # is one line here, not asyncio's "exception was never retrieved" traceback.
            persist.add_done_callback(self._orphaned_write_done)
            if take_next:
                following = _Taken()
                await self._take_during(persist, following)
            await asyncio.shield(persist)
        except BaseException:
            # Not persisted: give the records back so that nothing is lost.
            await self._give_back(taken, following)
            raise
        try:
            await settle(rt.source.ack(taken.records), abandon=rt.forced)
        except Exception:
            # The ack raised (a plugin source's): its records are given back too, not held
            # by the source for good. Their events are durable already; handed out again,
            # they are enqueued under the same request ids (a duplicate of one still queued
            # is dropped: at least once), and a rejected one is not written twice.
            await self._give_back(taken, following)
            raise
        except BaseException:
            # Cancelled (a lost lease, a drain timeout) while acking: the records taken
            # meanwhile are not committed, and nothing else would settle them.
            await self._give_back(following)
            raise
        for rec, _ in (*taken.oversize, *taken.unbuildable):
            self._rejected.pop(event_request_id(rt.name, rec.item_id), None)
        if taken.events:
            rt.log.debug("events.accepted", extra={"trigger": rt.name, "count": len(taken.events)})
            self._poke()
        return following if following is not None and following.records else None

    async def _take_during(self, write: asyncio.Future[None], into: _Taken) -> None:
        """Until `write` is done (or the trigger stops), receive the records the source hands
        out, up to ACCEPT_MAX in all, and build their events into `into`. A receive still
        waiting when the write ends is cancelled, which hands out nothing."""
        source = self.rt.source
        while not self._stopping.is_set() and len(into.records) < ACCEPT_MAX:
            want = min(ACCEPT_BATCH, ACCEPT_MAX - len(into.records))
            receive = asyncio.ensure_future(source.receive(want, ACCEPT_WAIT_S))
            try:
                await asyncio.wait((receive, write), return_when=asyncio.FIRST_COMPLETED)
                if not receive.done():
                    receive.cancel()
                    await asyncio.wait((receive,))
            except BaseException:
                # Cancelled (also while the receive cancelled at the write's end finishes):
                # records the receive returned (just before, or all the same as it was
                # cancelled: asyncio.wait_for on Python 3.11 returns a result that was
                # ready) go into `into`, to be given back with the rest. Cancelled once only:
                # a second cancellation would stop it returning them.
                if not receive.cancelling():
                    receive.cancel()
                await asyncio.wait((receive,), timeout=SETTLE_GRACE_S)
                if receive.done() and not receive.cancelled() and receive.exception() is None:
                    into.records += receive.result()
                raise
            if receive.cancelled() or receive.exception() is not None:
                return  # the accept loop's next receive meets the source's error, if it stays
            records = receive.result()
            if records and not await self._build_taken(records, into):
                return
            if not records or write.done():
                return

    async def _build_received(self, records: list[Record]) -> _Taken:
        """`_build` of records received (not during a commit); if `_build` raises (a record
        whose event cannot be built does not: it goes to on-failure with the commit), they are
        given back (the loop logs the error and retries after its backoff), not left held by
        the source, neither acked nor nacked."""
        try:
            return self._build(records)
        except Exception:
            await settle(self.rt.source.nack(records), abandon=self.rt.forced)
            raise

    async def _build_taken(self, records: list[Record], into: _Taken) -> bool:
        """Build records taken during a commit into `into`; whether they were. If `_build`
        raises (a record whose event cannot be built does not: it goes to on-failure with the
        next commit), these records alone fail (given back, their error logged), not the
        commit under way, whose write goes on and lands."""
        rt = self.rt
        try:
            self._build(records, into)
        except Exception:  # task boundary: logs and nacks
            rt.log.exception("source.accept_failed", extra={"trigger": rt.name})
            await settle(rt.source.nack(records), abandon=rt.forced)
            return False
        return True

    async def _give_back(self, *batches: _Taken | None) -> None:
        """Nack the records of `batches` (in the order taken), the later ones first: a source
        hands out given-back records first, so the earlier ones come out again before them.
        One that fails (or is cancelled) does not keep the others from being given back; its
        error is raised after them."""
        error: BaseException | None = None
        for batch in reversed(batches):
            if batch is not None and batch.records:
                try:
                    await settle(self.rt.source.nack(batch.records), abandon=self.rt.forced)
                except BaseException as exc:
                    error = error or exc
        if error is not None:
            raise error

    def _orphaned_write_done(self, task: asyncio.Future[None]) -> None:
        """An accept's write has ended: its failure, which `accept` raises when it is still
        waiting, is read here too, and told as one line (the records were given back)."""
        if task.cancelled():
            return
        error = task.exception()
        if error is not None and not isinstance(error, LeaseLostError):
            self.rt.log.debug(
                "events.persist_failed", extra={"trigger": self.rt.name, "error": str(error)}
            )

    async def _persist(
        self, events: list[NewEvent], checkpoint: dict[str, str | None], fence: Fence | None
    ) -> None:
        checkpoints = {self.rt.name: checkpoint} if checkpoint else None
        if fence is not None and isinstance(self.state, LeaseStore):
            await self.state.enqueue_fenced(fence, events, checkpoints)
        else:
            await self.state.enqueue(events, checkpoints)

    async def _reject_oversize(self, rec: Record, payload: bytes) -> None:
        await self._reject(
            rec,
            "event.too_large",
            {"bytes": len(payload), "limit": MAX_ASYNC_PAYLOAD},
            payload,
            "RequestEntityTooLargeException",
            f"Event size {len(payload)} bytes exceeds the asynchronous invocation limit of "
            f"{MAX_ASYNC_PAYLOAD} bytes",
        )

    async def _reject_unbuildable(self, rec: Record, error: BuildError) -> None:
        """A record whose event cannot be built: its line names the exception's class, not
        its message, which may quote the record's values; the record has a null
        requestPayload (there is no event to carry) and the error in responsePayload."""
        await self._reject(
            rec,
            "event.unbuildable",
            {"item_id": rec.item_id, "error_type": error.error_type},
            b"null",
            "InvalidRequestContentException",
            f"The event of this record could not be built: {error.error_type}: {error.message}",
        )

    async def _reject(
        self,
        rec: Record,
        line: str,
        fields: dict[str, object],
        payload: bytes,
        error_type: str,
        message: str,
    ) -> None:
        """A commit's record to the on-failure path without invoking it, after one error
        `line` with `fields`; once at its destination (even if what follows fails), kept in
        `_rejected` until acked, and not sent again when taken again."""
        rt = self.rt
        request_id = event_request_id(rt.name, rec.item_id)
        if request_id in self._rejected:
            return
        extra = {"trigger": rt.name, "function": rt.function, "request_id": request_id}
        rt.log.error(line, extra={**extra, **fields})
        body = orjson.dumps({"errorType": error_type, "errorMessage": message})
        result = InvokeResult(Outcome.FUNCTION_ERROR, body, request_id, function_error="Unhandled")
        sent = asyncio.Event()
        try:
            await self.give_up(request_id, payload, "RetriesExhausted", result, 0, sent)
        finally:
            if sent.is_set():
                self._rejected[request_id] = None
                if len(self._rejected) > MAX_REJECTED:
                    self._rejected.popitem(last=False)

    async def give_up(
        self,
        request_id: str,
        payload: bytes,
        condition: AsyncCondition,
        result: InvokeResult | None,
        invoke_count: int,
        sent: asyncio.Event | None = None,
        timestamp: float | None = None,
    ) -> None:
        """Send an event to the on-failure path as Lambda's asynchronous invocation record;
        returns once the destination has it (`sent` is set then, before the index write).
        `timestamp`: when it was given up on (now when not given)."""
        rt = self.rt
        record = async_invocation_record(
            request_id=request_id,
            function_arn=rt.function_arn,
            condition=condition,
            approximate_invoke_count=invoke_count,
            request_payload=payload,
            result=result,
            timestamp=rt.clock.time() if timestamp is None else timestamp,
        )
        await rt.on_failure.deliver(record, condition, request_id, sent=sent)

    # ---- invoke ----

    async def _invoke_loop(self, tg: asyncio.TaskGroup) -> None:
        """Claim events ahead into a small buffer (up to `maximum_concurrency` beyond the
        invocations in flight) and start them as slots free up: a claim waits behind the
        store's commit under way, and with the buffer no slot idles during that wait."""
        self._tg = tg
        try:
            while not self._stopping.is_set():
                self._wake.clear()
                self._start_ready()
                want = self._want()
                if want < self._claim_min and self._ready:
                    want = 0  # enough buffered: claim a batch once the buffer runs lower
                claimed: list[QueuedEvent] = []
                if want > 0:
                    claimed = await self._claim(want)
                for event in claimed:
                    if event.id in self._inflight:
                        continue  # still being handled here (its lease was extended late)
                    self._inflight.add(event.id)
                    self._ready.append(event)
                self._start_ready()
                if claimed and len(claimed) == want:
                    continue
                timeout = await self._idle_wait(want, bool(claimed))
                if timeout > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), timeout)
        finally:
            self._tg = None
            await settle(self._release_ready(), abandon=self.rt.forced)

    async def _idle_wait(self, want: int, claimed: bool) -> float:
        """How long to wait for a wake-up (an enqueue, a slot freed, a stop) before claiming
        again: until the next queued event is due, at most IDLE_POLL_S; the poll interval
        while the store cannot be reached."""
        rt = self.rt
        if want <= 0:
            return IDLE_POLL_S  # the buffer is full: each settled event wakes the loop
        if self._claim_failed:
            return rt.poll_timeout_s
        if self._due is not None and self._due <= self._claimed_at:
            self._due = None  # it was due at the claim just made: taken, here or elsewhere
        if not self._inflight:
            try:
                self._due = await self.state.next_due(rt.name)
            except StateStoreError as exc:
                rt.log.debug("queue.next_due_failed", extra={"trigger": rt.name, "error": str(exc)})
                return rt.poll_timeout_s
        # With events in flight, each one settled wakes the loop, so the store is not asked
        # on every turn under load: the due time known from the last look (lowered by this
        # trigger's own retries) is waited for meanwhile.
        due = self._due
        if due is None:
            return IDLE_POLL_S
        wait = min(due - rt.clock.time(), IDLE_POLL_S)
        if wait <= 0 and not claimed:
            # Due, yet not claimable just now (a row locked by another daemon's claim under
            # way): look again shortly rather than spin.
            return 0.05
        return max(wait, 0.0)

    async def _claim(self, want: int) -> list[QueuedEvent]:
        """Claim events; when the store cannot be reached (a PostgreSQL store), say so and
        try again after the poll interval: the events wait in the store."""
        rt = self.rt
        self._claim_failed = False
        self._claimed_at = now = rt.clock.time()
        try:
            return await self.state.claim(rt.name, want, self.lease_s, now)
        except StateStoreError as exc:
            self._claim_failed = True
            rt.log.warning("queue.claim_failed", extra={"trigger": rt.name, "error": str(exc)})
            return []

    def _start_ready(self) -> None:
        """Start buffered events while slots are free, each in a task of its own that goes on
        with the next buffered events (`_run_events`)."""
        tg = self._tg
        while tg is not None and self._ready and len(self._invoking) < self.concurrency:
            if self._stopping.is_set():
                return
            event = self._ready.popleft()
            self._invoking.add(event.id)
            tg.create_task(self._run_events(event))

    async def _run_events(self, event: QueuedEvent) -> None:
        """Invoke `event`, then the next buffered event as long as a slot is free: one task
        per busy slot rather than one per event (a drain starts thousands a second). A
        successful event's completion is left to its commit (`_complete`), so the slot goes
        on at once; an event whose outcome this task waits for (a retry, an on-failure
        record) frees its slot for another task meanwhile."""
        while True:
            await self._handle(event)
            if self._stopping.is_set() or not self._ready:
                return
            if len(self._invoking) >= self.concurrency:
                return
            event = self._ready.popleft()
            self._invoking.add(event.id)

    async def _release_ready(self) -> None:
        """Stopping: claimed events never started are claimable again at once."""
        ready, self._ready = list(self._ready), collections.deque()
        now = self.rt.clock.time()
        for event in ready:
            self._inflight.discard(event.id)
        # Together: group commit puts them in one transaction. Failures only leave leases
        # to expire (or to the next start's recovery).
        await asyncio.gather(
            *(
                self.state.release(event.id, available_at=now, attempts=event.attempts)
                for event in ready
            ),
            return_exceptions=True,
        )

    async def _handle(self, event: QueuedEvent) -> None:
        settling = False
        try:
            settling = await self._invoke_one(event)
        except asyncio.CancelledError:
            # Shutting down mid-invoke: give it back now rather than at lease expiry (unless
            # it was settled already: a retry released, an on-failure record delivered).
            if event.id not in self._settled:
                await settle(
                    self.state.release(
                        event.id, available_at=self.rt.clock.time(), attempts=event.attempts
                    ),
                    abandon=self.rt.forced,
                )
            raise
        except Exception:  # task boundary: the lease expires and the event is retried
            self.rt.log.exception(
                "event.crashed",
                extra={
                    "trigger": self.rt.name,
                    "request_id": event.request_id,
                    "trace_id": event.trace_id,
                },
            )
        finally:
            self._settled.discard(event.id)
            self._invoking.discard(event.id)
            if not settling:
                self._inflight.discard(event.id)
            self._poke()

    async def _invoke_one(self, event: QueuedEvent) -> bool:
        """Invoke the event and settle it; True when its completion is still to be committed
        (`_completed` ends it)."""
        rt = self.rt
        cfg = rt.config
        now = rt.clock.time()
        condition, last = load_outcome(event.last_result)
        if condition is None and now - event.enqueued_at > cfg.maximum_event_age_s:
            condition = "EventAgeExceeded"
        elif condition is None and event.attempts > cfg.effective_retry_attempts:
            condition = "RetriesExhausted"  # the retry limit was lowered since it failed
        if condition is not None:
            # Given up on before a stop cut its on-failure delivery short (the record is sent
            # as it would have been, the function is not invoked again, as in Lambda), or too
            # old or out of attempts now: the record carries the last attempt's result.
            at = given_up_at(event.last_result)
            await self._dead_letter(event, condition, last, event.attempts, at)
            return False
        self._event_age.observe(max(0.0, now - event.enqueued_at))
        with (
            rt.metrics.tracer.batch(
                trigger=rt.name,
                function=rt.function,
                source_type=rt.source_type,
                records=1,
                trace=event.trace_id,
            ),
            invocation_scope(rt.name, event.attempts + 1),
        ):
            result = await rt.backend.invoke(
                event.payload,
                request_id=event.request_id,
                invocation_type="Event",
                trace_id=event.trace_id,
            )
        # The invocation is over: its slot goes to the next buffered event while this one's
        # outcome is written.
        self._invoking.discard(event.id)
        if result.outcome is Outcome.OK:
            if self._throttles:
                self._throttles.pop(event.id, None)
            self._complete(event)
            return True  # this task goes on with the next event itself (`_run_events`)
        self._start_ready()
        self._poke()
        now = rt.clock.time()
        if result.outcome in (Outcome.THROTTLED, Outcome.INVOKE_ERROR):
            # Not an attempt: the function's error from its last attempt, if it ran and
            # failed, stays the event's result (the record's responseContext and payload).
            kept = last if last is not None and last.failed else result
            if result.outcome is Outcome.THROTTLED and self.throttles_dead_letter:
                await self._dead_letter(event, "RetriesExhausted", kept, event.attempts)
                return False
            n = self._throttles[event.id] = self._throttles.get(event.id, 0) + 1
            delay = max(result.retry_after_s or 0.0, self.throttle_backoff.delay(n))
            await self._retry_later(event, now + delay, event.attempts, result, kept)
            return False
        attempts = event.attempts + 1
        if attempts > cfg.effective_retry_attempts:
            await self._dead_letter(event, "RetriesExhausted", result, attempts)
            return False
        rt.metrics.records_retried.labels(rt.name).inc()
        await self._retry_later(event, now + self.retry_backoff.delay(attempts), attempts, result)
        return False

    def _complete(self, event: QueuedEvent) -> None:
        """Remove a delivered event from the queue without waiting here for the commit: the
        event stays in flight (its lease extended) until `_completed`."""
        complete_later = self._complete_later
        try:
            if complete_later is not None:
                done = complete_later(event.id)
            else:
                # A store without it: a task of its own, kept until done (`run` waits for
                # the event to leave `_inflight`, so it never outlives the trigger).
                task = asyncio.ensure_future(self._complete_awaited(event.id))
                self._completing.add(task)
                task.add_done_callback(self._completing.discard)
                done = task
        except StateStoreError as exc:  # the store is closed: the lease expires, it is retried
            done = asyncio.get_running_loop().create_future()
            done.set_exception(exc)
        done.add_done_callback(functools.partial(self._completed, event))

    async def _complete_awaited(self, event_id: int) -> None:
        await self.state.complete(event_id)

    def _completed(self, event: QueuedEvent, done: asyncio.Future[None]) -> None:
        """The completion's commit is over: the event has left the queue (or, if the commit
        failed, its lease expires and it is invoked again)."""
        self._inflight.discard(event.id)
        error = None if done.cancelled() else done.exception()
        if error is None and not done.cancelled():
            self._succeeded.inc()
        else:
            self.rt.log.error(
                "event.crashed",
                extra={
                    "trigger": self.rt.name,
                    "request_id": event.request_id,
                    "trace_id": event.trace_id,
                    "error": str(error) if error is not None else "cancelled",
                },
            )
        self._poke()

    async def _retry_later(
        self,
        event: QueuedEvent,
        at: float,
        attempts: int,
        result: InvokeResult,
        kept: InvokeResult | None = None,
    ) -> None:
        """Give the event back for a retry at `at` (too late for its age: its record goes);
        `kept`: the result its record is to carry, when not this attempt's `result`."""
        rt = self.rt
        kept = result if kept is None else kept
        if at - event.enqueued_at > rt.config.maximum_event_age_s:
            await self._dead_letter(event, "EventAgeExceeded", kept, attempts)
            return
        rt.log.info(
            "event.retry_scheduled",
            extra={
                "trigger": rt.name,
                "function": rt.function,
                "request_id": event.request_id,
                "trace_id": event.trace_id,
                "attempt": attempts,
                "outcome": result.outcome.value,
                "retry_in_s": round(at - rt.clock.time(), 2),
            },
        )
        # An earlier attempt's result kept is in the store already: not written again (a
        # response of up to 6 MB per throttle).
        stored = dump_outcome(None, kept) if kept is result else None
        try:
            await settle(
                self.state.release(
                    event.id, available_at=at, attempts=attempts, last_result=stored
                ),
                abandon=self.rt.forced,
            )
        finally:
            self._settled.add(event.id)  # released (or given its grace): not again
        self._due = at if self._due is None else min(self._due, at)

    async def _dead_letter(
        self,
        event: QueuedEvent,
        condition: AsyncCondition,
        result: InvokeResult | None,
        attempts: int,
        at: float | None = None,
    ) -> None:
        """Send the event's record (`at`: when it was given up on, if before now) and
        complete it; cancelled, `_dead_letter_cancelled` keeps its record for the next start."""
        sent = asyncio.Event()
        at = self.rt.clock.time() if at is None else at
        delivery = asyncio.ensure_future(
            self.give_up(event.request_id, event.payload, condition, result, attempts, sent, at)
        )
        try:
            await asyncio.shield(delivery)
        except asyncio.CancelledError:
            self._settled.add(event.id)
            kept = dump_outcome(condition, result, at)
            await self._dead_letter_cancelled(event, delivery, sent, kept, attempts)
            raise
        self._settled.add(event.id)
        await settle(self.state.complete(event.id), abandon=self.rt.forced)
        self._throttles.pop(event.id, None)

    async def _dead_letter_cancelled(
        self,
        event: QueuedEvent,
        delivery: asyncio.Future[None],
        sent: asyncio.Event,
        kept: bytes | None,
        attempts: int,
    ) -> None:
        """Stopping while the event's on-failure record is being delivered: the delivery
        has `DELIVERY_GRACE_S` more. Delivered, the event is completed (a restart neither
        invokes it nor writes its record again); not, the delivery is cancelled and the event
        given back with its attempts counted and `kept` (its condition and last result: a
        restart sends that record, not the event)."""
        forced = self.rt.forced
        try:
            delivered = await finish_after_cancel(delivery, DELIVERY_GRACE_S, forced)
        except asyncio.CancelledError:
            delivery.cancel()  # cancelled again: as forced
            raise
        if forced.is_set():
            # A second signal forces the exit: the delivery ends too; the event stays leased
            # and comes back when its lease runs out, or at the next start on a SQLite store
            # (`recover_leases`; a PostgreSQL store's claims belong to the process that made
            # them) - at least once.
            delivery.cancel()
            return
        if delivered or sent.is_set():
            # At its destination (the index write may still be under way, and goes on).
            await settle(self.state.complete(event.id), abandon=self.rt.forced)
            return
        if not delivery.done():
            delivery.cancel()
            await finish_after_cancel(delivery, DELIVERY_CANCEL_S, forced)
        self.rt.log.warning(
            "event.dead_letter_interrupted",
            extra={
                "trigger": self.rt.name,
                "function": self.rt.function,
                "request_id": event.request_id,
                "attempt": attempts,
            },
        )
        await settle(
            self.state.release(
                event.id, available_at=self.rt.clock.time(), attempts=attempts, last_result=kept
            ),
            abandon=self.rt.forced,
        )
