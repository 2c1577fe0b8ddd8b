"""Helpers for the kafka tests: topics with random names on the session's tansu broker, a
producer, a reader of a whole topic, a group's committed offsets, and a poll trigger (real
source, real pipeline, scripted function) run until a condition holds.

tansu's gaps (TESTING.md): `end_offsets()` is wrong when producer batches hold several records,
so ends are read with `highwater()`; idempotent producers fail, so producers here (and the
destination) run with idempotence off."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import triggerd_kafka as tk
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tests.fakes import FakeBackend, FakeFunctionConfig
from triggerd.config.model import validate_data
from triggerd.config.plugins import Registry
from triggerd.delivery.destinations import file_plugin
from triggerd.delivery.onfailure import OnFailure
from triggerd.delivery.pipeline import SyncTrigger, TriggerRuntime
from triggerd.events.filters import compile_filters
from triggerd.state.sqlite import SQLiteStateStore
from triggerd.telemetry.metrics import Metrics
from triggerd.types import BackendPlugin, DestinationContext, Source, SourceContext, SystemClock

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
    reg = Registry(entry_points={})
    reg.register("source", "kafka", tk.plugin)
    reg.register("destination", "kafka", tk.destination_plugin)
    reg.register("destination", "file", file_plugin)
    reg.register("backend", "fake", BackendPlugin(FakeFunctionConfig, lambda c, ctx: FakeBackend()))
    return reg


@dataclass
class Harness:
    trigger: SyncTrigger
    source: Source
    on_failure: OnFailure
    metrics: Metrics

    @property
    def succeeded(self) -> float:
        return float(self.metrics.records_succeeded.labels(self.trigger.rt.name)._value.get())

    async def run_until(self, done: Callable[[], bool], timeout: float = 30) -> None:
        task = asyncio.create_task(self.trigger.run())
        try:
            async with asyncio.timeout(timeout):
                while not done():
                    if task.done():
                        task.result()
                    await asyncio.sleep(0.02)
        finally:
            self.trigger.stop()
            await asyncio.wait_for(task, 20)


@contextlib.asynccontextmanager
async def harness(
    tmp_path: Path,
    source: dict[str, Any],
    backend: FakeBackend,
    *,
    on_failure: dict[str, Any] | None = None,
    name: str = "t",
    **trigger: Any,
) -> AsyncIterator[Harness]:
    data: dict[str, Any] = {
        "functions": {"f": {"backend": "fake"}},
        "triggers": [
            {
                "function": "f",
                "name": name,
                "source": {"type": "kafka", **FAST_GROUP, **source},
                **trigger,
            }
        ],
    }
    if on_failure is not None:
        data["triggers"][0]["on_failure"] = on_failure
    reg = registry()
    tcfg = validate_data(data, reg, base_dir=tmp_path).trigger_list[0]
    log = logging.getLogger("test.kafka")
    clock, metrics = SystemClock(), Metrics()
    store = SQLiteStateStore(str(tmp_path / f"state-{name}.db"))
    await store.open()
    dest, dest_type = None, "none"
    if tcfg.on_failure_config is not None:
        dest_type = getattr(tcfg.on_failure_config, "type")  # noqa: B009
        dest = reg.destination(dest_type).create(
            tcfg.on_failure_config, DestinationContext(trigger=name, clock=clock, log=log)
        )
    of = OnFailure(
        trigger=name,
        function="f",
        destination=dest,
        destination_name=dest_type,
        state=store,
        clock=clock,
        metrics=metrics,
        log=log,
    )
    src = reg.source("kafka").create(
        tcfg.source_config, SourceContext(trigger=name, state=store, clock=clock, log=log)
    )
    await of.start()
    await src.start()
    rt = TriggerRuntime(
        name=name,
        config=tcfg,
        function="f",
        function_arn="arn:aws:lambda:us-east-1:123456789012:function:f",
        source=src,
        backend=backend,
        filter=compile_filters(tcfg.filters),
        on_failure=of,
        clock=clock,
        metrics=metrics,
        log=log,
        include_payload=dest_type in ("file", "kafka"),
        poll_timeout_s=0.2,
    )
    h = Harness(SyncTrigger(rt), src, of, metrics)
    try:
        yield h
    finally:
        await src.stop()
        await of.stop()
        await store.close()


def values(event: dict[str, Any]) -> list[bytes | None]:
    import base64

    out: list[bytes | None] = []
    for records in event["records"].values():
        for r in records:
            out.append(base64.b64decode(r["value"]) if r["value"] is not None else None)
    return out
