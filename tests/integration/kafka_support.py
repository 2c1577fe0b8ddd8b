"""Helpers for the kafka tests: topics with random names on the session's tansu broker, a
producer, a reader of a whole topic, a group's committed offsets, and a poll trigger (real
source, real pipeline, scripted function) run until a condition holds.

tansu's gaps (TESTING.md): `end_offsets()` is wrong when producer batches hold several records,
so ends are read with `highwater()`; idempotent producers fail, so producers here (and the
destination) run with idempotence off."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

import triggerd_kafka as tk
from tests.fakes import FakeBackend, connector_registry
from tests.integration.trigger_harness import Harness, trigger_harness
from triggerd.config.plugins import Registry
from triggerd.delivery.destinations import file_plugin

#: Consumer settings that make tansu's group joins fast (TESTING.md).
FAST_GROUP = {"session_timeout_ms": 1000, "heartbeat_interval_ms": 300}


def unique(prefix: str = "t") -> str:
    return f"triggerd-{prefix}-{uuid.uuid4().hex[:10]}"


async def create_topic(bootstrap: str, partitions: int = 1, prefix: str = "t") -> str:
    name = unique(prefix)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
    finally:
        await admin.close()
    return name


@contextlib.asynccontextmanager
async def producer(bootstrap: str) -> AsyncIterator[AIOKafkaProducer]:
    p = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False, acks="all")
    await p.start()
    try:
        yield p
    finally:
        await p.stop()


async def produce(
    bootstrap: str,
    topic: str,
    values: Sequence[bytes | None],
    *,
    partition: int | None = 0,
    key: bytes | None = None,
    headers: list[tuple[str, bytes]] | None = None,
) -> None:
    async with producer(bootstrap) as p:
        for value in values:
            await p.send_and_wait(topic, value, key=key, partition=partition, headers=headers)


async def read_topic(bootstrap: str, topic: str, count: int, timeout: float = 15) -> list[Any]:
    """`count` records of `topic` from the start (no group)."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    out: list[Any] = []
    try:
        async with asyncio.timeout(timeout):
            while len(out) < count:
                batch = await consumer.getmany(timeout_ms=200)
                for messages in batch.values():
                    out += messages
    finally:
        await consumer.stop()
    return out


async def committed(bootstrap: str, group: str, topic: str, partitions: int) -> list[int | None]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    await consumer.start()
    try:
        return [await consumer.committed(TopicPartition(topic, p)) for p in range(partitions)]
    finally:
        await consumer.stop()


def registry() -> Registry:
    return connector_registry(
        {"kafka": tk.plugin}, {"kafka": tk.destination_plugin, "file": file_plugin}
    )


def harness(
    tmp_path: Path, source: dict[str, Any], backend: FakeBackend, **options: Any
) -> contextlib.AbstractAsyncContextManager[Harness]:
    """A kafka source's trigger (tests.integration.trigger_harness); group joins and
    rebalances take their time, so the waits are longer."""
    options.setdefault("run_timeout_s", 30.0)
    options.setdefault("stop_timeout_s", 20.0)
    source = {"type": "kafka", **FAST_GROUP, **source}
    return trigger_harness(tmp_path, registry(), source, backend, **options)


def values(event: dict[str, Any]) -> list[bytes | None]:
    import base64

    out: list[bytes | None] = []
    for records in event["records"].values():
        for r in records:
            out.append(base64.b64decode(r["value"]) if r["value"] is not None else None)
    return out
