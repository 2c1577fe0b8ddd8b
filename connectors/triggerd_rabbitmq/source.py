"""The `rabbitmq` source: one queue consumed with manual acknowledgements, in the shape of
Amazon MQ for RabbitMQ's event source mapping.

How it works:
- One connection, one channel, one consumer (a "link"). The broker pushes up to
  `prefetch_count` unacknowledged messages; they wait in an in-memory inbox (bounded by the
  prefetch) until `receive` turns them into records. Back-pressure is the prefetch: the
  pipeline stops calling `receive` when its buffer is full, acks stop, the broker stops sending.
- Each record's handle remembers the link it came on. `ack` sends basic.ack, `nack`
  basic.nack with requeue (the broker redelivers with `redelivered: true`), both on that link's
  channel only. A delivery tag is meaningless on another channel (acking it there closes the
  channel with PRECONDITION_FAILED), so settlements of a dead link are skipped: the broker has
  already requeued those messages and redelivers them.
- When the link dies (broker restart, network, `rabbitmqctl close_connection`), `receive`
  reconnects with exponential backoff (`reconnect_base_delay_s` .. `reconnect_max_delay_s`),
  drops the inbox's stale deliveries, and carries on. Nothing is lost: whatever was not acked
  is redelivered; whatever was in flight may be delivered twice (at-least-once).
- `attempts` (failed invocations so far) comes from `x-delivery-count` (quorum queues) or from
  counting our own nacks (attempts.py), so `maximum_retry_attempts` with an on-failure
  destination, or `dead_letter_after_attempts` with the queue's dead-letter exchange, ends a
  poison message's loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import ModuleType
from typing import TYPE_CHECKING, Any

import orjson

from triggerd.delivery.retry import Backoff
from triggerd.events.filters import view_with_data
from triggerd.types import (
    BaseSource,
    ConfigError,
    JSONDict,
    PermanentError,
    Record,
    RetryableError,
    SourceContext,
    hold_room_s,
)

from .attempts import RedeliveryCounter, counter_key, delivery_count
from .config import RabbitMQSourceConfig
from .connection import classify, open_connection, scrub
from .shape import envelope, message_entry, queue_key, synthesised_broker_arn
from .tags import Outstanding

if TYPE_CHECKING:
    from aio_pika.abc import AbstractChannel, AbstractConnection
    from aiormq.abc import AbstractChannel as RawChannel
    from aiormq.abc import DeliveredMessage

__all__ = ["Delivery", "Link", "RabbitMQSource"]


@dataclass(eq=False, slots=True)
class Link:
    """One connection, its channel and consumer."""

    generation: int
    connection: AbstractConnection
    channel: AbstractChannel
    raw: RawChannel
    outstanding: Outstanding = field(default_factory=Outstanding)
    #: Settlements are planned and written one call at a time: a multiple-ack must not reach
    #: the broker before a single ack (of a tag it covers) that was planned earlier.
    settling: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: The broker cancelled the consumer (its queue was deleted, say): the channel stays open
    #: but delivers nothing more, so the link counts as dead and `receive` reconnects.
    cancelled: bool = False
    #: triggerd closes it itself (the reason was logged already, or there is none): its close
    #: callbacks log nothing. Another link's close meanwhile is still logged.
    given_up: bool = False

    @property
    def alive(self) -> bool:
        return not self.cancelled and not self.raw.is_closed and not self.connection.is_closed


@dataclass(eq=False, slots=True)
class Delivery:
    """A record's handle: where to settle it."""

    link: Link
    tag: int
    #: Key of the message in the redelivery counter.
    key: str


Inbox = asyncio.Queue[tuple[Link, "DeliveredMessage"] | None]


class RabbitMQSource(BaseSource):
    def __init__(self, config: RabbitMQSourceConfig, ctx: SourceContext, aio_pika: ModuleType):
        self._cfg = config
        self._ctx = ctx
        self._aio_pika = aio_pika
        self._log = ctx.log
        self._name = config.connection_name or f"triggerd:{ctx.trigger}"
        self._queue_key = queue_key(config.queue, config.vhost)
        host, _, port = config.endpoint.rpartition(":")
        self.broker_arn = config.broker_arn or synthesised_broker_arn(
            ctx.region, ctx.account_id, host, int(port)
        )
        self._order_key = self._queue_key if config.ordered else None
        self._inbox: Inbox = asyncio.Queue()
        self._link: Link | None = None
        self._generation = 0
        self._backoff = Backoff(
            base_s=config.reconnect_base_delay_s, max_s=config.reconnect_max_delay_s
        )
        self._failures = 0
        self._retry_at = 0.0
        self._counter = RedeliveryCounter()
        self._stopped = False

    # ---- lifecycle ----

    async def start(self) -> None:
        """Connect once. Credentials, vhost or queue problems raise ConfigError (the daemon
        exits with status 2 and the message); a broker
        that cannot be reached is logged and retried by `receive` with backoff."""
        try:
            await self._open()
        except RetryableError as exc:
            self._connect_failed(exc)
        except PermanentError as exc:
            raise ConfigError([f"triggers.{self._ctx.trigger}.source: {exc}"]) from None

    async def stop(self) -> None:
        """Close the connection: the broker requeues every unacknowledged message."""
        self._stopped = True
        link, self._link = self._link, None
        if link is not None:
            await _close_quietly(link.connection)
        self._inbox.put_nowait(None)

    @property
    def connected(self) -> bool:
        return self._link is not None and self._link.alive

    # ---- connecting ----

    async def _open(self) -> None:
        cfg = self._cfg
        conn = await open_connection(self._aio_pika, cfg, self._name)
        self._generation += 1
        try:
            async with asyncio.timeout(cfg.connect_timeout_s):
                link = await self._consume(conn, self._generation)
        except Exception as exc:  # typed below; the connection must not leak
            await _close_quietly(conn)
            error = classify(exc, cfg, queue=cfg.queue)
            raise error from None
        self._link = link
        self._failures = 0

        def on_close(sender: Any = None, exc: BaseException | None = None, *_: Any) -> None:
            self._on_close(link, sender, exc)

        conn.close_callbacks.add(on_close)
        link.channel.close_callbacks.add(on_close)
        self._log.info(
            "source.rabbitmq.connected",
            extra={
                "trigger": self._ctx.trigger,
                "url": cfg.display_url(),
                "queue": cfg.queue,
                "generation": link.generation,
                "prefetch_count": cfg.prefetch_count,
            },
        )

    async def _consume(self, conn: AbstractConnection, generation: int) -> Link:
        cfg = self._cfg
        channel = await conn.channel(publisher_confirms=False)
        await channel.set_qos(prefetch_count=cfg.prefetch_count)
        if cfg.declare:
            await channel.declare_queue(
                cfg.queue, durable=cfg.durable, arguments=dict(cfg.queue_arguments) or None
            )
        else:
            await channel.declare_queue(cfg.queue, passive=True)
        raw = await channel.get_underlay_channel()
        link = Link(generation, conn, channel, raw)
        inbox = self._inbox

        async def on_message(message: DeliveredMessage) -> None:
            link.outstanding.delivered(int(message.delivery_tag or 0))
            inbox.put_nowait((link, message))

        async def on_cancel(frame: Any) -> None:
            self._consumer_cancelled(link)

        raw.on_consumer_cancel_callbacks.add(on_cancel)
        await raw.basic_consume(cfg.queue, on_message, no_ack=False)
        return link

    def _consumer_cancelled(self, link: Link) -> None:
        """The broker's Basic.Cancel: without it the trigger would wait for deliveries that
        never come, the connection up and nothing said. The link is dropped and `receive`
        connects again, declaring the queue (or checking it exists, with `declare = false`:
        until it does, each attempt is a `source.rabbitmq.connect_failed` warning)."""
        link.cancelled = True
        if not self._stopped:
            self._log.warning(
                "source.rabbitmq.consumer_cancelled",
                extra={
                    "trigger": self._ctx.trigger,
                    "queue": self._cfg.queue,
                    "generation": link.generation,
                    "reason": "the broker cancelled the consumer (the queue was deleted, or "
                    "its node went away); connecting again",
                },
            )
        self._inbox.put_nowait(None)  # wake `receive`, which notices the dead link

    def _on_close(self, link: Link, sender: Any, exc: BaseException | None) -> None:
        if not self._stopped and not link.given_up:
            self._log.info(
                "source.rabbitmq.closed",
                extra={
                    "trigger": self._ctx.trigger,
                    "what": type(sender).__name__,
                    "reason": scrub(repr(exc), self._cfg) if exc is not None else None,
                },
            )
        self._inbox.put_nowait(None)  # wake `receive`, which notices the dead link

    def _connect_failed(self, exc: PermanentError | RetryableError) -> None:
        self._failures += 1
        delay = self._backoff.delay(self._failures)
        self._retry_at = self._ctx.clock.monotonic() + delay
        self._log.warning(
            "source.rabbitmq.connect_failed",
            extra={
                "trigger": self._ctx.trigger,
                "url": self._cfg.display_url(),
                "queue": self._cfg.queue,
                "error": str(exc),
                "permanent": isinstance(exc, PermanentError),
                "attempt": self._failures,
                "retry_in_s": round(delay, 2),
            },
        )

    async def _recover(self, deadline: float) -> None:
        """Drop a dead link and reconnect when the backoff allows (until `deadline`)."""
        clock = self._ctx.clock
        link = self._link
        if link is not None:
            self._link = None
            self._log.warning(
                "source.rabbitmq.disconnected",
                extra={
                    "trigger": self._ctx.trigger,
                    "url": self._cfg.display_url(),
                    "generation": link.generation,
                    "stale_deliveries": self._inbox.qsize(),
                },
            )
            await self._close_own(link)
            _drain(self._inbox)
        wait = self._retry_at - clock.monotonic()
        if wait > 0:
            await clock.sleep(min(wait, max(0.0, deadline - clock.monotonic())))
            if clock.monotonic() < self._retry_at or self._stopped:
                return
        try:
            await self._open()
        except (PermanentError, RetryableError) as exc:
            self._connect_failed(exc)

    # ---- receiving ----

    async def receive(self, max_records: int, timeout_s: float) -> list[Record]:
        clock = self._ctx.clock
        deadline = clock.monotonic() + timeout_s
        if self._stopped:
            await clock.sleep(timeout_s)
            return []
        if not self.connected:
            await self._recover(deadline)
            if not self.connected:
                return []
        items = await self._take(max_records, deadline)
        records: list[Record] = []
        for link, message in items:
            if link is self._link and link.alive:
                records.append(self._record(link, message))
        return records

    async def _take(self, max_records: int, deadline: float) -> list[tuple[Link, DeliveredMessage]]:
        inbox = self._inbox
        out: list[tuple[Link, DeliveredMessage]] = []
        while not out:
            if inbox.empty():
                remaining = deadline - self._ctx.clock.monotonic()
                if remaining <= 0 or not self.connected:
                    return out
                try:
                    item = await asyncio.wait_for(inbox.get(), remaining)
                except TimeoutError:
                    return out
            else:
                item = inbox.get_nowait()
            if item is not None:
                out.append(item)
        while len(out) < max_records and not inbox.empty():
            item = inbox.get_nowait()
            if item is not None:
                out.append(item)
        return out

    def _record(self, link: Link, message: DeliveredMessage) -> Record:
        props = message.header.properties
        body = message.body
        delivery: Any = message.delivery
        redelivered = bool(delivery.redelivered)
        entry = message_entry(props, body, redelivered)
        key = counter_key(props.message_id, body, delivery.routing_key)
        tag = int(delivery.delivery_tag)
        stamp = props.timestamp
        return Record(
            payload=entry,
            item_id=props.message_id or f"{link.generation}.{tag}",
            size=len(orjson.dumps(entry)),
            created_at=stamp.timestamp() if isinstance(stamp, datetime) else self._ctx.clock.time(),
            key=self._order_key,
            handle=Delivery(link, tag, key),
            attempts=self._counter.attempts(key, redelivered, delivery_count(props.headers)),
        )

    # ---- settling ----

    async def ack(self, records: Sequence[Record]) -> None:
        for rec in records:
            self._counter.forget(rec.handle.key)
        await self._settle(records, "ack")

    async def nack(self, records: Sequence[Record]) -> None:
        """Requeue; a message that failed `dead_letter_after_attempts` times is rejected
        without requeue instead (the broker dead-letters or drops it). Only a record the
        pipeline marks `failed` counts as a failed attempt: one given back unfailed (at stop,
        behind a failed message in ordered mode, from a split batch) does not."""
        limit = self._cfg.dead_letter_after_attempts
        requeue: list[Record] = []
        reject: list[Record] = []
        for rec in records:
            handle: Delivery = rec.handle
            if not rec.failed:  # given back, not failed: not an attempt
                requeue.append(rec)
                continue
            failed = self._counter.failed(handle.key, at_least=rec.attempts + 1)
            if limit is not None and failed >= limit:
                self._counter.forget(handle.key)
                reject.append(rec)
            else:
                requeue.append(rec)
        if reject:
            self._log.warning(
                "source.rabbitmq.dead_lettered",
                extra={
                    "trigger": self._ctx.trigger,
                    "queue": self._cfg.queue,
                    "messages": len(reject),
                    "item_ids": [r.item_id for r in reject][:10],
                },
            )
            await self._settle(reject, "reject")
        if self._cfg.ordered and requeue:
            await self._requeue_everything(requeue)
            return
        await self._settle(requeue, "nack")

    async def _requeue_everything(self, records: Sequence[Record]) -> None:
        """Ordered mode: hand every unacknowledged delivery back so the broker redelivers the
        queue in its order (classic queues requeue in place). Nacking the records alone is not
        enough: deliveries the broker already sent but this client has not read yet (on the
        wire, in the inbox) would reach the function before the requeued ones. Closing the
        connection requeues all of them at once; `receive` reconnects (it is the only caller
        of `_open` once started), and drops what still arrives for the old link as stale."""
        link = self._link
        if link is None or not any(r.handle.link is link for r in records):
            return  # their link is gone: the broker has requeued them already
        self._link = None
        await self._close_own(link)
        self._inbox.put_nowait(None)  # wake a waiting `receive` to reconnect

    async def _close_own(self, link: Link) -> None:
        """Close a link triggerd itself gives up: its close callbacks log nothing (the
        reason was logged already)."""
        link.given_up = True
        await _close_quietly(link.connection)

    async def _settle(self, records: Sequence[Record], action: str) -> None:
        """Settle on the channel the records came from; skip those of a dead link."""
        import aiormq.exceptions as amqp

        link = self._link
        tags = [
            r.handle.tag
            for r in records
            if link is not None and r.handle.link is link and link.alive
        ]
        skipped = len(records) - len(tags)
        if tags and link is not None:
            try:
                async with link.settling:
                    await self._send(link, action, tags)
            except (amqp.ChannelInvalidStateError, amqp.AMQPError, ConnectionError):
                skipped = len(records)
        if skipped:
            self._log.info(
                "source.rabbitmq.settle_skipped",
                extra={
                    "trigger": self._ctx.trigger,
                    "action": action,
                    "messages": skipped,
                    "reason": "connection lost; the broker redelivers them",
                },
            )

    @staticmethod
    async def _send(link: Link, action: str, tags: list[int]) -> None:
        raw = link.raw
        if action == "ack":
            upto, singles = link.outstanding.plan_ack(tags)
            if upto is not None:
                await raw.basic_ack(upto, multiple=True, wait=not singles)
            for i, tag in enumerate(singles):
                await raw.basic_ack(tag, wait=i == len(singles) - 1)
            return
        link.outstanding.settle(tags)
        for i, tag in enumerate(tags):
            last = i == len(tags) - 1  # flush the socket once per call
            if action == "nack":
                await raw.basic_nack(tag, requeue=True, wait=last)
            else:
                await raw.basic_reject(tag, requeue=False, wait=last)

    def hold_limit_s(self) -> float | None:
        """HoldsRecords: the broker closes the channel of a delivery unacked for
        consumer_timeout_s (and requeues every unacked message of it)."""
        limit = self._cfg.consumer_timeout_s
        return hold_room_s(limit, self._ctx.function_timeout_s) if limit else None

    # ---- shapes ----

    def envelope(self, records: Sequence[Record]) -> JSONDict:
        return envelope(self.broker_arn, self._queue_key, [r.payload for r in records])

    def filter_view(self, record: Record) -> JSONDict:
        return view_with_data(record.payload, "data", "base64")

    def batch_info(self, records: Sequence[Record]) -> JSONDict:
        """triggerd's own batch info (AWS's MQ mappings have no on-failure destinations)."""
        return {
            "RabbitMQBatchInfo": {
                "eventSourceArn": self.broker_arn,
                "queue": self._cfg.queue,
                "virtualHost": self._cfg.vhost,
                "batchSize": len(records),
                "itemIdentifiers": [r.item_id for r in records],
            }
        }


def _drain(inbox: Inbox) -> None:
    with contextlib.suppress(asyncio.QueueEmpty):
        while True:
            inbox.get_nowait()


async def _close_quietly(conn: AbstractConnection) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(conn.close(), 5)
