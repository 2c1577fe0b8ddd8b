"""The `kafka` on-failure destination: each record (AWS's Kafka failure record, with the failed
batch's event under `payload`) is produced as JSON to a topic, keyed by the source's
`"<topic>-<partition>"` so one partition's failures stay in order, with acks=all by default.
`send` returns only once the broker acknowledged the record and raises otherwise, so the
pipeline retries and commits the source only after the record is stored.

Idempotence is off by default: brokers without InitProducerId (some Kafka-compatible ones)
refuse idempotent producers. A record too large for `max_request_size` (1 MiB, Kafka's
default), or one the broker or topic refuses as too large (its `message.max.bytes` /
`max.message.bytes` can be lower), is sent again without its payload, as AWS drops the payload
of a record that does not fit its destination, instead of failing forever.
"""

from __future__ import annotations

import asyncio
import contextlib
from types import ModuleType
from typing import Any

import orjson

from triggerd.types import ConfigError, DestinationContext, JSONDict, PermanentError

from .client import classify, client_kwargs, describe
from .config import KafkaDestinationConfig

__all__ = ["KafkaDestination", "record_key"]

#: Bytes kept free under max_request_size for the record's framing and headers.
_FRAMING = 1024


def record_key(record: JSONDict) -> bytes | None:
    """The source topic-partition of a failure record (from its batch info or payload)."""
    info = record.get("KafkaBatchInfo")
    if isinstance(info, dict) and isinstance(info.get("recordsInfo"), dict) and info["recordsInfo"]:
        return str(next(iter(info["recordsInfo"]))).encode()
    payload = record.get("payload")
    if (
        isinstance(payload, dict)
        and isinstance(payload.get("records"), dict)
        and payload["records"]
    ):
        return str(next(iter(payload["records"]))).encode()
    return None


def _without_payload(record: JSONDict) -> JSONDict:
    return {k: v for k, v in record.items() if k != "payload"}


class KafkaDestination:
    def __init__(
        self, config: KafkaDestinationConfig, ctx: DestinationContext, aiokafka: ModuleType
    ) -> None:
        self.config = config
        self.ctx = ctx
        self._aiokafka = aiokafka
        self._producer: Any = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        """Connect. Authentication or TLS problems raise ConfigError; unreachable brokers
        are logged and `send` connects later."""
        try:
            await self._ready()
        except PermanentError as exc:
            raise ConfigError([f"triggers.{self.ctx.trigger}.on_failure: {exc}"]) from None
        except Exception as exc:  # unreachable now: send() connects later
            self.ctx.log.warning(
                "destination.kafka.connect_failed",
                extra={
                    "trigger": self.ctx.trigger,
                    "bootstrap_servers": self.config.bootstrap,
                    "error": describe(exc, self.config),
                },
            )

    async def _ready(self) -> Any:
        async with self._lock:
            if self._producer is not None:
                return self._producer
            cfg = self.config
            try:
                kwargs = client_kwargs(cfg, f"triggerd-{self.ctx.trigger}-on-failure")
            except OSError as exc:
                raise PermanentError(str(exc)) from None
            producer = self._aiokafka.AIOKafkaProducer(
                **kwargs,
                acks="all" if cfg.acks == "all" else int(cfg.acks),
                enable_idempotence=cfg.enable_idempotence,
                compression_type=cfg.compression_type,
                max_request_size=cfg.max_request_size,
            )
            try:
                await producer.start()
            except Exception as exc:  # typed below; the producer must not leak
                with contextlib.suppress(Exception):
                    await producer.stop()
                raise classify(exc, cfg) from None
            self._producer = producer
            return producer

    async def send(self, record: JSONDict) -> None:
        producer = await self._ready()
        try:
            try:
                await self._produce(producer, record, self.encode(record))
            except self._too_large() as exc:
                if "payload" not in record:
                    raise
                self._payload_dropped(describe(exc, self.config))
                await self._produce(producer, record, orjson.dumps(_without_payload(record)))
        except Exception as exc:  # reported to OnFailure, which retries with backoff
            raise RuntimeError(
                f"Kafka at {self.config.bootstrap}: producing to {self.config.topic!r} failed: "
                + describe(exc, self.config)
            ) from None

    async def _produce(self, producer: Any, record: JSONDict, value: bytes) -> None:
        await asyncio.wait_for(
            producer.send_and_wait(
                self.config.topic,
                value=value,
                key=record_key(record),
                headers=self._headers(record),
            ),
            self.config.send_timeout_s,
        )

    def _too_large(self) -> tuple[type[BaseException], ...]:
        """What the producer (over max_request_size) or the broker (over its or the topic's
        message size limit) answer for a record that does not fit."""
        errors = self._aiokafka.errors
        return (
            errors.MessageSizeTooLargeError,
            errors.RecordTooLargeError,
            errors.RecordListTooLargeError,
        )

    def encode(self, record: JSONDict) -> bytes:
        body = orjson.dumps(record)
        size = len(body)
        if size > self.config.max_request_size - _FRAMING and "payload" in record:
            body = orjson.dumps(_without_payload(record))
            self._payload_dropped(f"{size} bytes: over max_request_size")
        return body

    def _payload_dropped(self, reason: str) -> None:
        self.ctx.log.warning(
            "destination.kafka.payload_dropped",
            extra={"trigger": self.ctx.trigger, "reason": reason},
        )

    def _headers(self, record: JSONDict) -> list[tuple[str, bytes]]:
        headers = [("x-triggerd-trigger", self.ctx.trigger.encode())]
        context = record.get("requestContext")
        if isinstance(context, dict) and isinstance(context.get("condition"), str):
            headers.append(("x-triggerd-condition", context["condition"].encode()))
        return headers

    async def stop(self) -> None:
        async with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.stop(), 30)
