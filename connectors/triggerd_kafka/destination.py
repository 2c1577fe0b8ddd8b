"""The `kafka` on-failure destination: each record (AWS's Kafka failure record, with the failed
batch's event under `payload`) is produced as JSON to a topic, keyed by the source's
`"<topic>-<partition>"` so one partition's failures stay in order, with acks=all by default.
`send` returns only once the broker acknowledged the record and raises otherwise, so the
pipeline retries and commits the source only after the record is stored.

Idempotence is off by default: brokers without InitProducerId (some Kafka-compatible ones)
refuse idempotent producers. A record too large for `max_request_size` is sent without its
payload, as AWS trims records for its destinations.
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
            await asyncio.wait_for(
                producer.send_and_wait(
                    self.config.topic,
                    value=self.encode(record),
                    key=record_key(record),
                    headers=self._headers(record),
                ),
                self.config.send_timeout_s,
            )
        except Exception as exc:  # reported to OnFailure, which retries with backoff
            raise RuntimeError(
                f"Kafka at {self.config.bootstrap}: producing to {self.config.topic!r} failed: "
                + describe(exc, self.config)
            ) from None

    def encode(self, record: JSONDict) -> bytes:
        body = orjson.dumps(record)
        if len(body) > self.config.max_request_size - _FRAMING and "payload" in record:
            body = orjson.dumps({k: v for k, v in record.items() if k != "payload"})
            self.ctx.log.warning(
                "destination.kafka.payload_dropped",
                extra={"trigger": self.ctx.trigger, "bytes": len(body)},
            )
        return body

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
