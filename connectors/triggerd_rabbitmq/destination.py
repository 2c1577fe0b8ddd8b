"""The `rabbitmq` on-failure destination: each record is published as JSON to an exchange with
publisher confirms, and `send` returns only once the broker confirmed it (routed, and stored
when the queue is durable and the message persistent).

Any failure (no connection, a nack, an unroutable record returned under `mandatory`, a confirm
timeout) raises from `send`; the pipeline's OnFailure retries with backoff and acks the source
only after a confirmed send. A lost connection is reopened on the next send.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from types import ModuleType
from typing import TYPE_CHECKING, Any

import orjson

from triggerd.types import ConfigError, DestinationContext, JSONDict, PermanentError, RetryableError

from .config import RabbitMQDestinationConfig
from .connection import classify, open_connection, scrub

if TYPE_CHECKING:
    from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange

__all__ = ["RabbitMQDestination"]


class RabbitMQDestination:
    def __init__(
        self, config: RabbitMQDestinationConfig, ctx: DestinationContext, aio_pika: ModuleType
    ) -> None:
        self._cfg = config
        self._ctx = ctx
        self._aio_pika = aio_pika
        self._name = config.connection_name or f"triggerd:{ctx.trigger}:on-failure"
        self._lock = asyncio.Lock()
        self._conn: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None

    async def start(self) -> None:
        """Connect and check the exchange exists. Bad credentials or a missing exchange raise
        ConfigError; an unreachable broker is logged, and `send` connects later."""
        try:
            await self._ready()
        except PermanentError as exc:
            raise ConfigError([f"triggers.{self._ctx.trigger}.on_failure: {exc}"]) from None
        except RetryableError as exc:
            self._ctx.log.warning(
                "destination.rabbitmq.connect_failed",
                extra={
                    "trigger": self._ctx.trigger,
                    "url": self._cfg.display_url(),
                    "error": str(exc),
                },
            )

    async def stop(self) -> None:
        async with self._lock:
            await self._reset()

    async def send(self, record: JSONDict) -> None:
        """Publish `record` and wait for the broker's confirm; raises on any failure."""
        exchange = await self._ready()
        message = self._message(record)
        try:
            confirm = await exchange.publish(
                message,
                routing_key=self._cfg.routing_key,
                mandatory=self._cfg.mandatory,
                timeout=self._cfg.confirm_timeout_s,
            )
        except Exception as exc:  # the channel or connection is unusable: reopen next time
            async with self._lock:
                await self._reset()
            error = RetryableError(
                f"RabbitMQ at {self._cfg.display_url()}: publish failed: "
                + scrub(f"{type(exc).__name__}: {exc}", self._cfg)
            )
        else:
            self._check_confirm(confirm)
            return
        raise error

    def _check_confirm(self, confirm: Any) -> None:
        from pamqp.commands import Basic

        if isinstance(confirm, Basic.Ack):
            return
        where = f"exchange {self._cfg.exchange!r} routing key {self._cfg.routing_key!r}"
        if isinstance(confirm, Basic.Nack):
            raise RetryableError(f"RabbitMQ refused the record ({where}): basic.nack")
        raise RetryableError(f"RabbitMQ could not route the record ({where}): returned")

    def _message(self, record: JSONDict) -> Any:
        aio_pika = self._aio_pika
        context = record.get("requestContext")
        request_id = context.get("requestId") if isinstance(context, dict) else None
        condition = context.get("condition") if isinstance(context, dict) else None
        headers: dict[str, Any] = {"x-triggerd-trigger": self._ctx.trigger}
        if isinstance(condition, str):
            headers["x-triggerd-condition"] = condition
        mode = aio_pika.DeliveryMode.PERSISTENT if self._cfg.persistent else None
        return aio_pika.Message(
            orjson.dumps(record),
            content_type="application/json",
            delivery_mode=mode,
            message_id=request_id if isinstance(request_id, str) else str(uuid.uuid4()),
            timestamp=self._ctx.clock.time(),
            headers=headers,
        )

    async def _ready(self) -> AbstractExchange:
        async with self._lock:
            if self._exchange is not None and self._usable():
                return self._exchange
            await self._reset()
            conn = await open_connection(self._aio_pika, self._cfg, self._name)
            try:
                async with asyncio.timeout(self._cfg.connect_timeout_s):
                    channel = await conn.channel(publisher_confirms=True)
                    if self._cfg.exchange:
                        exchange = await channel.get_exchange(self._cfg.exchange, ensure=True)
                    else:
                        exchange = channel.default_exchange
            except Exception as exc:  # typed below; close what was opened
                with contextlib.suppress(Exception):
                    await conn.close()
                error = classify(exc, self._cfg)
                if isinstance(error, PermanentError):
                    error = PermanentError(f"{error} (on-failure exchange {self._cfg.exchange!r})")
                raise error from None
            self._conn, self._channel, self._exchange = conn, channel, exchange
            return exchange

    def _usable(self) -> bool:
        return (
            self._conn is not None
            and not self._conn.is_closed
            and self._channel is not None
            and not self._channel.is_closed
        )

    async def _reset(self) -> None:
        conn, self._conn, self._channel, self._exchange = self._conn, None, None, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 5)
