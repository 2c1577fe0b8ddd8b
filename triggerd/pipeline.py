"""The poll pipeline: event-source-mapping rules for sync sources.

Source -> filter -> batcher -> dispatcher (bounded concurrency, per-key order) -> backend ->
judge (success / partial batch failure / error) -> ack, retry (backoff, bisect, attempts, age),
or on-failure destination then ack. Sources never ack by themselves; every received record is
settled exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

import orjson

from triggerd.batching import BatchBuffer
from triggerd.config import TriggerBase
from triggerd.failures import stream_failure_record
from triggerd.filters import CompiledFilter
from triggerd.metrics import Metrics
from triggerd.onfailure import OnFailure
from triggerd.results import judge
from triggerd.retry import Backoff, RetryPolicy
from triggerd.types import MAX_SYNC_PAYLOAD, Backend, Clock, InvokeResult, Outcome, Record, Source


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

    @property
    def source_owned(self) -> bool:
        """Failed records go back to the source for redelivery (SQS, RabbitMQ)."""
        return self.config.source_config.retry_owner == "source"


def apply_filter(rt: TriggerRuntime, records: list[Record]) -> tuple[list[Record], list[Record]]:
    """(kept, dropped). Filtered-out records are acked by the caller, as AWS does."""
    rt.metrics.records_received.labels(rt.name).inc(len(records))
    if not rt.filter:
        return records, []
    kept: list[Record] = []
    dropped: list[Record] = []
    for rec in records:
        (kept if rt.filter.matches(rt.source.filter_view(rec)) else dropped).append(rec)
    if dropped:
        rt.metrics.records_filtered.labels(rt.name).inc(len(dropped))
    return kept, dropped


class SyncTrigger:
    def __init__(self, rt: TriggerRuntime) -> None:
        self.rt = rt
        cfg = rt.config
        self.buffer = BatchBuffer(
            batch_size=cfg.effective_batch_size,
            window_s=cfg.effective_window_s,
            capacity=cfg.effective_batch_size * (cfg.maximum_concurrency + 1),
        )
        self.policy = RetryPolicy(
            maximum_retry_attempts=cfg.effective_retry_attempts,
            maximum_record_age_s=cfg.maximum_record_age_s,
            bisect_batch_on_function_error=cfg.bisect_batch_on_function_error,
        )
        self.backoff = Backoff(base_s=cfg.effective_base_delay_s, max_s=cfg.retry_max_delay_s)
        self.busy: set[str] = set()
        self.inflight = 0
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._producer_done = False

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._produce())
                await self._dispatch(tg)
        finally:
            leftovers = self.buffer.take_all()
            if leftovers:
                await asyncio.shield(self.rt.source.nack(leftovers))

    # ---- receiving ----

    async def _produce(self) -> None:
        rt = self.rt
        try:
            while not self._stopping.is_set():
                room = min(self.buffer.room(), self.buffer.batch_size)
                if room == 0:
                    self._wake.clear()
                    await self._wait_wake(rt.poll_timeout_s)
                    continue
                records = await rt.source.receive(room, rt.poll_timeout_s)
                if not records:
                    continue
                kept, dropped = apply_filter(rt, records)
                if dropped:
                    await rt.source.ack(dropped)
                if kept:
                    self.buffer.add(kept, rt.clock.monotonic())
                    self._wake.set()
        finally:
            self._producer_done = True
            self._wake.set()

    async def _wait_wake(self, wait_s: float | None) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), wait_s)

    # ---- dispatching ----

    async def _dispatch(self, tg: asyncio.TaskGroup) -> None:
        cfg = self.rt.config
        while True:
            stopping = self._stopping.is_set()
            if stopping and self._producer_done:
                return  # buffered records are nacked by run(); in-flight batches drain
            self._wake.clear()
            if self.inflight < cfg.maximum_concurrency and not stopping:
                batch = self.buffer.next_batch(self.rt.clock.monotonic(), self.busy)
                if batch:
                    self._launch(tg, batch)
                    continue
            deadline = self.buffer.deadline(self.busy)
            timeout = None if deadline is None else max(0.0, deadline - self.rt.clock.monotonic())
            if timeout is not None and self.inflight >= cfg.maximum_concurrency:
                timeout = None
            await self._wait_wake(timeout)

    def _launch(self, tg: asyncio.TaskGroup, batch: list[Record]) -> None:
        keys = {r.key for r in batch if r.key is not None}
        self.busy |= keys
        self.inflight += 1
        self.rt.metrics.inflight.labels(self.rt.name).inc()
        tg.create_task(self._run_batch(batch, keys))

    async def _run_batch(self, batch: list[Record], keys: set[str]) -> None:
        unsettled: dict[int, Record] = {id(r): r for r in batch}
        try:
            await BatchRun(self, unsettled).process(batch)
        except asyncio.CancelledError:
            await asyncio.shield(self.rt.source.nack(list(unsettled.values())))
            raise
        except Exception:  # task boundary: log, give the records back
            self.rt.log.exception("batch.crashed", extra={"trigger": self.rt.name})
            await self.rt.source.nack(list(unsettled.values()))
        finally:
            self.busy -= keys
            self.inflight -= 1
            self.rt.metrics.inflight.labels(self.rt.name).dec()
            self._wake.set()


class BatchRun:
    """Invokes one batch until every record in it is settled."""

    def __init__(self, trigger: SyncTrigger, unsettled: dict[int, Record]) -> None:
        self.t = trigger
        self.rt = trigger.rt
        self.unsettled = unsettled

    async def process(self, batch: list[Record]) -> None:
        pending: list[list[Record]] = [batch]
        throttles = 0
        while pending:
            records = pending.pop(0)
            payload = orjson.dumps(self.rt.source.envelope(records))
            if len(payload) > MAX_SYNC_PAYLOAD:
                await self.give_up(records, "MaximumPayloadSizeExceeded", None)
                continue
            result = await self.invoke(payload)
            if result.outcome in (Outcome.THROTTLED, Outcome.INVOKE_ERROR):
                throttles += 1
                rest = await self.drop_too_old(records, result)
                if rest:
                    await asyncio.sleep(
                        result.retry_after_s or self.rt.throttle_backoff.delay(throttles)
                    )
                    pending.insert(0, rest)
                continue
            throttles = 0
            retry = await self.settle(records, result)
            pending[0:0] = retry

    async def invoke(self, payload: bytes) -> InvokeResult:
        rt = self.rt
        start = rt.clock.monotonic()
        result = await rt.backend.invoke(payload)
        rt.metrics.invoke_seconds.labels(rt.function).observe(rt.clock.monotonic() - start)
        rt.metrics.invocations.labels(rt.name, rt.function, result.outcome.value).inc()
        rt.log.debug(
            "batch.invoked",
            extra={
                "trigger": rt.name,
                "function": rt.function,
                "request_id": result.request_id,
                "outcome": result.outcome.value,
            },
        )
        return result

    async def settle(self, records: list[Record], result: InvokeResult) -> list[list[Record]]:
        """Ack what succeeded; return the sub-batches to retry (after sleeping the backoff)."""
        verdict = judge(
            result, records, report_batch_item_failures=self.rt.config.report_batch_item_failures
        )
        await self.ack(verdict.succeeded, delivered=True)
        failed = verdict.failed
        if not failed:
            return []
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
        if self.rt.source_owned:
            await self.settle_source_owned(failed, result)
            return []
        policy = self.t.policy
        whole = len(failed) == len(records) and not verdict.malformed
        if policy.bisect_batch_on_function_error and whole and result.failed and len(failed) > 1:
            half = len(failed) // 2
            return [failed[:half], failed[half:]]
        for rec in failed:
            rec.attempts += 1
        now = self.rt.clock.time()
        if any(policy.exhausted(r) for r in failed):
            await self.give_up(failed, "RetryAttemptsExhausted", result)
            return []
        if any(policy.too_old(r, now) for r in failed):
            await self.give_up(failed, "RecordAgeExceeded", result)
            return []
        self.rt.metrics.records_retried.labels(self.rt.name).inc(len(failed))
        await asyncio.sleep(self.t.backoff.delay(max(r.attempts for r in failed)))
        return [failed]

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
            followers: list[Record] = []
            for key in {r.key for r in back if r.key is not None}:
                followers += self.t.buffer.take_key(key)
            await self.nack(back)
            if followers:
                await self.rt.source.nack(followers)

    async def drop_too_old(self, records: list[Record], result: InvokeResult) -> list[Record]:
        now = self.rt.clock.time()
        old = [r for r in records if self.t.policy.too_old(r, now)]
        if old:
            await self.give_up(old, "RecordAgeExceeded", result)
        return [r for r in records if not self.t.policy.too_old(r, now)]

    async def give_up(
        self, records: list[Record], condition: str, result: InvokeResult | None
    ) -> None:
        rt = self.rt
        request_id = result.request_id if result else str(uuid.uuid4())
        record = stream_failure_record(
            request_id=request_id,
            function_arn=rt.function_arn,
            condition=condition,
            approximate_invoke_count=max((r.attempts for r in records), default=0),
            result=result,
            timestamp=rt.clock.time(),
            batch_info=rt.source.batch_info(records),
            payload=rt.source.envelope(records) if rt.include_payload else None,
        )
        await rt.on_failure.deliver(record, condition, request_id)
        await self.ack(records)

    async def ack(self, records: Sequence[Record], *, delivered: bool = False) -> None:
        if not records:
            return
        await asyncio.shield(self.rt.source.ack(records))
        for rec in records:
            self.unsettled.pop(id(rec), None)
        if delivered:
            self.rt.metrics.records_succeeded.labels(self.rt.name).inc(len(records))

    async def nack(self, records: Sequence[Record]) -> None:
        await asyncio.shield(self.rt.source.nack(records))
        for rec in records:
            self.unsettled.pop(id(rec), None)
