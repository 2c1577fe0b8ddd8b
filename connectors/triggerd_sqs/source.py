"""The `sqs` source: Lambda's SQS event source mapping on any machine.

How it works:
- Pollers (tasks of the source's own TaskGroup) long-poll ReceiveMessage for up to 10 messages
  into a bounded buffer that `receive` drains. A poller asks only when the buffer has room for
  a full receive (back-pressure: no poll while the pipeline is behind). One poller always runs;
  another is added after each full receive, up to `max_pollers`, and extra pollers retire after
  an empty one.
- Nothing is deleted on receipt. `ack` (success, filtered out, or written to the on-failure
  destination) deletes with DeleteMessageBatch; `nack` leaves the message to its visibility
  timeout (or sets `nack_visibility_timeout_s`), so the queue's redrive policy keeps counting.
- Every received, unsettled message is outstanding: a heartbeat extends its visibility
  (ChangeMessageVisibilityBatch) before it runs out, so a slow invocation is not redelivered.
- On stop, messages still in the buffer (never delivered) are made visible again at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from typing import Any

import orjson

from triggerd.delivery.retry import Backoff
from triggerd.events.filters import view_with_data
from triggerd.types import (
    BaseSource,
    ConfigError,
    JSONDict,
    Record,
    SourceContext,
    hold_room_s,
)

from .client import batch_entries, describe, open_client, queue_attributes
from .config import SqsSourceConfig
from .shape import MalformedMessageError, queue_arn_from_url, to_record

#: A ReceiveMessage call returns at most this many messages.
RECEIVE_MAX = 10
#: Smallest heartbeat period (for tiny visibility timeouts in tests).
_MIN_TICK_S = 0.1
#: SQS refuses to extend a message's visibility past 12 hours from its receipt.
VISIBILITY_CEILING_S = 43_200


class SqsSource(BaseSource):
    def __init__(self, config: SqsSourceConfig, ctx: SourceContext, *, client: Any = None) -> None:
        self.config = config
        self.ctx = ctx
        self.log = ctx.log
        self.region = config.region_or(ctx.region)
        self.fifo = config.is_fifo
        self.client: Any = client
        self.queue_arn = ""
        #: The visibility timeout in force for our receives (seconds).
        self.visibility_s = config.visibility_timeout_s or 30
        self.capacity = config.buffer_capacity
        self.backoff = Backoff(base_s=0.5, max_s=30.0)
        self._stack = AsyncExitStack()
        self._buffer: deque[Record] = deque()
        self._reserved = 0
        self._arrived = asyncio.Event()
        self._space = asyncio.Event()
        self._space.set()
        #: receipt handle -> monotonic time its visibility runs out
        self._outstanding: dict[str, float] = {}
        self._runner: asyncio.Task[None] | None = None
        self._tg: asyncio.TaskGroup | None = None
        self.pollers = 0
        self._stopped = False
        #: `pause_receiving` was called: no receive starts any more.
        self._paused = False
        #: Receives under way, and set when there are none.
        self._receiving = 0
        self._quiet = asyncio.Event()
        self._quiet.set()

    # ---- lifecycle ----

    async def start(self) -> None:
        cfg = self.config
        opened = self.client is None
        if opened:
            self.client = await open_client(
                self._stack,
                cfg,
                self.region,
                pool=cfg.max_pollers + 10,
                read_timeout_s=cfg.wait_time_s + 30,
            )
        try:
            attrs = await queue_attributes(self.client, cfg, self.ctx.trigger, "source")
            self._use_attributes(attrs)
        except BaseException:
            await self._stack.aclose()
            if opened:
                # Closed with the stack: a start tried again (the endpoint was unreachable)
                # opens a new one.
                self.client = None
            raise
        if self.visibility_s < self.ctx.function_timeout_s and not cfg.extend_visibility:
            self.log.warning(
                "sqs.visibility_shorter_than_timeout",
                extra={
                    "trigger": self.ctx.trigger,
                    "visibility_timeout_s": self.visibility_s,
                    "function_timeout_s": self.ctx.function_timeout_s,
                },
            )
        self._check_redrive(attrs.get("RedrivePolicy"))
        if self.ctx.splits_batches and not cfg.extend_visibility:
            self.log.warning(
                "sqs.split_without_extend_visibility",
                extra={
                    "trigger": self.ctx.trigger,
                    "visibility_timeout_s": self.visibility_s,
                    "hint": "a failed batch is split and its halves invoked one after another "
                    "within the visibility timeout; later ones are given back, so set "
                    "extend_visibility = true or a long visibility_timeout_s",
                },
            )
        self._runner = asyncio.create_task(self._run(), name=f"sqs-{self.ctx.trigger}")
        self.log.info(
            "sqs.started",
            extra={
                "trigger": self.ctx.trigger,
                "queue": cfg.queue_url,
                "fifo": self.fifo,
                "visibility_timeout_s": self.visibility_s,
            },
        )

    def _use_attributes(self, attrs: dict[str, str]) -> None:
        cfg = self.config
        self.queue_arn = attrs.get("QueueArn") or queue_arn_from_url(
            cfg.queue_url, self.region, self.ctx.account_id
        )
        check_visibility(cfg, attrs, self.ctx.trigger)
        if cfg.visibility_timeout_s is None:
            self.visibility_s = _int(attrs.get("VisibilityTimeout"), 30)

    def _check_redrive(self, policy: str | None) -> None:
        """Warn when the queue's redrive policy moves a failing message to its dead-letter
        queue before the trigger's attempts are used up: the on-failure destination would
        never receive anything."""
        attempts = self.ctx.gives_up_after
        if attempts is None or not policy:
            return
        try:
            max_receives = int(orjson.loads(policy)["maxReceiveCount"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return
        if max_receives <= attempts:
            self.log.warning(
                "sqs.redrive_before_on_failure",
                extra={
                    "trigger": self.ctx.trigger,
                    "max_receive_count": max_receives,
                    "maximum_retry_attempts": attempts,
                    "hint": "the queue moves a failing message to its dead-letter queue after "
                    "maxReceiveCount receives, before its maximum_retry_attempts + 1 attempts "
                    "are used up, so on_failure never receives it: lower "
                    "maximum_retry_attempts below maxReceiveCount, or raise maxReceiveCount",
                },
            )

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        leftovers = list(self._buffer)
        self._buffer.clear()
        if leftovers and self.client is not None:
            await self._change_visibility(leftovers, 0, "sqs.release_failed")
        self._outstanding.clear()
        await self._stack.aclose()

    async def _run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            self._spawn_poller(permanent=True)
            if self.config.extend_visibility and self.visibility_s > 0:
                tg.create_task(self._heartbeat())

    def _spawn_poller(self, *, permanent: bool = False) -> None:
        assert self._tg is not None
        self.pollers += 1
        self._tg.create_task(self._poll(permanent))
        self.log.debug(
            "sqs.poller_added", extra={"trigger": self.ctx.trigger, "pollers": self.pollers}
        )

    # ---- polling ----

    def _room(self) -> int:
        return self.capacity - len(self._buffer) - self._reserved

    async def _reserve(self) -> int:
        """Wait until a full receive fits in the buffer; reserve its room."""
        want = min(RECEIVE_MAX, self.capacity)
        while self._paused or self._room() < want:
            self._space.clear()
            await self._space.wait()
        self._reserved += want
        return want

    async def _poll(self, permanent: bool) -> None:
        failures = 0
        while True:
            want = await self._reserve()
            self._receiving += 1
            self._quiet.clear()
            try:
                messages = await self._receive_messages(want)
            except Exception as exc:  # task boundary: log, back off, poll again
                failures += 1
                delay = self.backoff.delay(failures)
                self.log.error(
                    "sqs.receive_failed",
                    extra={
                        "trigger": self.ctx.trigger,
                        "error": describe(exc),
                        "retry_in_s": round(delay, 2),
                    },
                )
                await self.ctx.clock.sleep(delay)
                continue
            finally:
                self._reserved -= want
                self._receiving -= 1
                if not self._receiving:
                    self._quiet.set()
            failures = 0
            self._accept(messages)
            if len(messages) >= want and self.pollers < self.config.max_pollers:
                self._spawn_poller()
            elif not messages and not permanent:
                self.pollers -= 1
                self.log.debug(
                    "sqs.poller_retired",
                    extra={"trigger": self.ctx.trigger, "pollers": self.pollers},
                )
                return

    async def pause_receiving(self) -> None:
        """Start no more receives and let the ones under way finish (within `wait_time_s`):
        what they return is buffered, and released by `stop` (visible again at once)
        instead of being lost to its visibility timeout in a cancelled request."""
        self._paused = True
        await self._quiet.wait()

    async def _receive_messages(self, want: int) -> list[dict[str, Any]]:
        params: dict[str, Any] = {
            "QueueUrl": self.config.queue_url,
            "MaxNumberOfMessages": want,
            "WaitTimeSeconds": self.config.wait_time_s,
            "MessageSystemAttributeNames": ["All"],
            "MessageAttributeNames": ["All"],
        }
        if self.config.visibility_timeout_s is not None:
            params["VisibilityTimeout"] = self.config.visibility_timeout_s
        response = await self.client.receive_message(**params)
        messages = response.get("Messages") or []
        return [m for m in messages if isinstance(m, dict)]

    def _accept(self, messages: list[dict[str, Any]]) -> None:
        now = self.ctx.clock.time()
        deadline = self.ctx.clock.monotonic() + self.visibility_s
        for message in messages:
            try:
                record = to_record(message, self.queue_arn, self.region, fifo=self.fifo, now=now)
            except MalformedMessageError as exc:
                self.log.error(
                    "sqs.malformed_message",
                    extra={"trigger": self.ctx.trigger, "error": str(exc)},
                )
                continue
            self._outstanding[record.handle] = deadline
            self._buffer.append(record)
        if self._buffer:
            self._arrived.set()

    async def receive(self, max_records: int, timeout_s: float) -> list[Record]:
        self._check_runner()
        if not self._buffer:
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), timeout_s)
        out: list[Record] = []
        while self._buffer and len(out) < max_records:
            out.append(self._buffer.popleft())
        if out:
            self._space.set()
        return out

    def _check_runner(self) -> None:
        runner = self._runner
        if runner is not None and runner.done() and not runner.cancelled():
            exc = runner.exception()
            if exc is not None:
                raise RuntimeError(f"sqs pollers of trigger {self.ctx.trigger!r} failed") from exc

    # ---- settling ----

    async def ack(self, records: Sequence[Record]) -> None:
        """Delete the messages (DeleteMessageBatch); ones that cannot be deleted are logged
        and will be redelivered after their visibility timeout (at least once)."""
        if not records:
            return
        for rec in records:
            self._outstanding.pop(rec.handle, None)
        await self._settle(
            self.client.delete_message_batch, records, {}, logging.ERROR, "sqs.delete_failed"
        )

    async def nack(self, records: Sequence[Record]) -> None:
        """Leave failed messages to their visibility timeout (as AWS does), or set
        `nack_visibility_timeout_s`. On FIFO queues, buffered messages of the same groups are
        given back too, so a group is redelivered in order."""
        records = list(records)
        if self.fifo:
            records += self._take_groups({r.key for r in records if r.key is not None})
        if not records:
            return
        for rec in records:
            self._outstanding.pop(rec.handle, None)
        timeout = self.config.nack_visibility_timeout_s
        if timeout is not None:
            await self._change_visibility(records, timeout, "sqs.nack_failed")

    def _take_groups(self, keys: set[str]) -> list[Record]:
        if not keys:
            return []
        taken = [r for r in self._buffer if r.key in keys]
        if taken:
            self._buffer = deque(r for r in self._buffer if r.key not in keys)
            self._space.set()
        return taken

    async def _change_visibility(
        self, records: Sequence[Record], visibility_s: int, event: str
    ) -> None:
        await self._settle(
            self.client.change_message_visibility_batch,
            records,
            {"VisibilityTimeout": visibility_s},
            logging.WARNING,
            event,
        )

    async def _settle(
        self,
        api: Callable[..., Awaitable[dict[str, Any]]],
        records: Sequence[Record],
        fields: dict[str, Any],
        level: int,
        event: str,
    ) -> None:
        """One of SQS's *Batch calls on the records' receipt handles (with `fields` in every
        entry); messages it still fails for after the retries are logged at `level`."""
        entries = [{"ReceiptHandle": r.handle, "_record": r} for r in records]
        url = self.config.queue_url

        async def call(chunk: list[dict[str, Any]]) -> dict[str, Any]:
            sent = [{"Id": e["Id"], "ReceiptHandle": e["ReceiptHandle"], **fields} for e in chunk]
            return await api(QueueUrl=url, Entries=sent)

        failed = await batch_entries(call, entries, sleep=self.ctx.clock.sleep)
        if failed:
            self.log.log(
                level,
                event,
                extra={
                    "trigger": self.ctx.trigger,
                    "messages": [e["_record"].item_id for e, _ in failed],
                    "codes": sorted({code for _, code in failed}),
                },
            )

    # ---- visibility heartbeat ----

    @property
    def heartbeat_tick_s(self) -> float:
        return max(_MIN_TICK_S, min(self.visibility_s / 4, 60.0))

    async def _heartbeat(self) -> None:
        tick = self.heartbeat_tick_s
        while True:
            await self.ctx.clock.sleep(tick)
            try:
                await self.extend_due()
            except Exception as exc:  # task boundary: the next tick tries again
                self.log.error(
                    "sqs.heartbeat_failed",
                    extra={"trigger": self.ctx.trigger, "error": describe(exc)},
                )

    async def extend_due(self) -> int:
        """Extend the visibility of outstanding messages that would run out within 3/4 of the
        timeout; returns how many were extended."""
        now = self.ctx.clock.monotonic()
        horizon = now + self.visibility_s * 0.75
        due = [h for h, until in self._outstanding.items() if until <= horizon]
        if not due:
            return 0
        entries = [{"ReceiptHandle": h, "VisibilityTimeout": self.visibility_s} for h in due]
        url = self.config.queue_url
        #: Handles whose last call got no answer (it raised): nothing is known of them.
        unanswered: set[str] = set()

        async def call(chunk: list[dict[str, Any]]) -> dict[str, Any]:
            sent = [{k: v for k, v in e.items()} for e in chunk]
            handles = {e["ReceiptHandle"] for e in chunk}
            try:
                response: dict[str, Any] = await self.client.change_message_visibility_batch(
                    QueueUrl=url, Entries=sent
                )
            except Exception:
                unanswered.update(handles)
                raise
            unanswered.difference_update(handles)
            return response

        failed = await batch_entries(call, entries, sleep=self.ctx.clock.sleep, attempts=2)
        refused = {e["ReceiptHandle"] for e, _ in failed} - unanswered
        until = self.ctx.clock.monotonic() + self.visibility_s
        for handle in due:
            if handle in refused:  # deleted meanwhile, or no longer in flight: stop extending
                self._outstanding.pop(handle, None)
            elif handle in self._outstanding and handle not in unanswered:
                self._outstanding[handle] = until
            # Unanswered (the endpoint did not answer): still due, tried at the next tick.
        if failed:
            self.log.warning(
                "sqs.extend_failed",
                extra={
                    "trigger": self.ctx.trigger,
                    "count": len(failed),
                    "codes": sorted({code for _, code in failed}),
                },
            )
        return len(due) - len(failed)

    @property
    def outstanding(self) -> int:
        return len(self._outstanding)

    def hold_limit_s(self) -> float | None:
        """HoldsRecords: a message is SQS's for the taking again once its visibility runs out:
        after the 12-hour ceiling with the heartbeat, else after the visibility timeout."""
        extended = self.config.extend_visibility and self.visibility_s > 0
        limit = VISIBILITY_CEILING_S if extended else self.visibility_s
        return hold_room_s(limit, self.ctx.function_timeout_s)

    # ---- shapes ----

    def filter_view(self, record: Record) -> JSONDict:
        return view_with_data(record.payload, "body", "json-text")

    def batch_info(self, records: Sequence[Record]) -> JSONDict:
        return {}


def check_visibility(cfg: SqsSourceConfig, attrs: dict[str, str], trigger: str) -> None:
    """A ConfigError when the visibility in force for the trigger's receives would be 0: every
    message would be visible again the moment it is received, so received and invoked again
    and again while the function runs (no heartbeat can help). At start and for `validate
    --connect`."""
    if cfg.visibility_timeout_s is not None or _int(attrs.get("VisibilityTimeout"), 30) > 0:
        return
    raise ConfigError(
        [
            f"trigger {trigger!r}: source.queue_url {cfg.queue_url}: the queue's "
            "VisibilityTimeout is 0, so every message would be received again at once while "
            "the function still runs; set visibility_timeout_s (at least 1) or the queue's "
            "VisibilityTimeout"
        ]
    )


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default
