"""RabbitMQ messages/s: N messages consumed through triggerd (the rabbitmq source, the poll
pipeline, a no-op function on the local backend, batch 10, acks after success) against a bare
aio-pika consume/ack loop on the same broker in the same run (one basic.ack per message,
the same prefetch).

Each figure is the best of `rounds` interleaved runs (the machine is shared and noisy).
Also reported: the source alone (receive + ack, no function), to separate the connector's
cost from the invocations'. Publishing is not timed. The broker is the machine's RabbitMQ
(TRIGGERD_BENCH_RABBITMQ_URL, default amqp://guest:guest@127.0.0.1:5672/).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika

import triggerd_rabbitmq as rmq
from bench import HELLO_DIR, BenchError, Row, run_async
from bench.harness import hello_backend, started_trigger
from triggerd.config.load import validate_data
from triggerd.config.plugins import Registry
from triggerd.functions.backends.local import plugin as local_plugin
from triggerd.state.sqlite import MEMORY_PATH, SQLiteStateStore
from triggerd.telemetry.metrics import Metrics
from triggerd.types import SourceContext, SystemClock

NAME = "rabbitmq"
log = logging.getLogger("bench.rabbitmq")


@dataclass(frozen=True, slots=True)
class Settings:
    messages: int = 10_000
    body_bytes: int = 256
    batch_size: int = 10
    concurrency: int = 4
    prefetch: int = 1000
    timeout_s: float = 180.0
    #: Each figure is the best of this many runs, interleaved (the machine is shared).
    rounds: int = 3


QUICK = Settings(messages=5000, rounds=2)
SMOKE = Settings(messages=100, timeout_s=60.0, rounds=1)


def broker_url() -> str:
    return os.environ.get("TRIGGERD_BENCH_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")


@contextlib.asynccontextmanager
async def filled_queue(settings: Settings) -> AsyncIterator[str]:
    """A fresh queue holding `messages` messages; deleted afterwards."""
    name = f"triggerd-bench-{uuid.uuid4().hex[:10]}"
    conn = await aio_pika.connect(broker_url())
    try:
        channel = await conn.channel(publisher_confirms=True)
        await channel.declare_queue(name, durable=False)
        body = b'{"n": 0, "pad": "' + b"x" * max(0, settings.body_bytes - 17) + b'"}'
        pending: list[Any] = []
        for _ in range(settings.messages):
            pending.append(
                channel.default_exchange.publish(aio_pika.Message(body), routing_key=name)
            )
            if len(pending) >= 500:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
        yield name
    finally:
        with contextlib.suppress(Exception):
            cleanup = await conn.channel()
            await cleanup.queue_delete(name)
        await conn.close()


async def raw_rate(settings: Settings) -> float:
    """messages/s of a bare aio-pika consumer that acks each message."""
    async with filled_queue(settings) as queue:
        conn = await aio_pika.connect(broker_url())
        try:
            channel = await conn.channel()
            await channel.set_qos(prefetch_count=settings.prefetch)
            q = await channel.get_queue(queue)
            done = asyncio.Event()
            count = 0

            async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                nonlocal count
                await message.ack()
                count += 1
                if count >= settings.messages:
                    done.set()

            t0 = time.perf_counter()
            await q.consume(on_message)
            async with asyncio.timeout(settings.timeout_s):
                await done.wait()
            return settings.messages / (time.perf_counter() - t0)
        finally:
            await conn.close()


def _registry() -> Registry:
    reg = Registry(entry_points={})
    reg.register("source", "rabbitmq", rmq.plugin)
    reg.register("backend", "local", local_plugin)
    return reg


async def source_only_rate(settings: Settings, store: SQLiteStateStore) -> float:
    """messages/s out of the rabbitmq source, acked in batches, no function."""
    async with filled_queue(settings) as queue:
        cfg = rmq.RabbitMQSourceConfig(
            type="rabbitmq", url=broker_url(), queue=queue, prefetch_count=settings.prefetch
        )
        ctx = SourceContext(trigger="bench", state=store, clock=SystemClock(), log=log)
        source = rmq.plugin.create(cfg, ctx)
        await source.start()
        try:
            got = 0
            t0 = time.perf_counter()
            async with asyncio.timeout(settings.timeout_s):
                while got < settings.messages:
                    records = await source.receive(settings.batch_size, 1.0)
                    source.envelope(records)
                    await source.ack(records)
                    got += len(records)
            return got / (time.perf_counter() - t0)
        finally:
            await source.stop()


async def triggerd_rate(settings: Settings, store: SQLiteStateStore, work_dir: str) -> float:
    """messages/s through the whole poll pipeline and a no-op function."""
    async with filled_queue(settings) as queue:
        data = {
            "functions": {"hello": {"handler": "app.handler", "code": str(HELLO_DIR)}},
            "triggers": [
                {
                    "function": "hello",
                    "source": {
                        "type": "rabbitmq",
                        "url": broker_url(),
                        "queue": queue,
                        "prefetch_count": settings.prefetch,
                    },
                    "batch_size": settings.batch_size,
                    "maximum_concurrency": settings.concurrency,
                }
            ],
        }
        tcfg = validate_data(data, _registry(), base_dir=Path(".")).trigger_list[0]
        clock, metrics = SystemClock(), Metrics()
        backend = hello_backend(settings.concurrency, clock, log, work_dir)
        trigger = await started_trigger(tcfg, rmq.plugin, backend, store, clock, metrics, log)
        succeeded = metrics.records_succeeded.labels("bench")
        try:
            t0 = time.perf_counter()
            task = asyncio.create_task(trigger.run())
            async with asyncio.timeout(settings.timeout_s):
                while succeeded._value.get() < settings.messages:
                    if task.done():
                        raise BenchError(f"trigger stopped early: {task.exception()!r}")
                    await asyncio.sleep(0.005)
            elapsed = time.perf_counter() - t0
            trigger.stop()
            await task
            return settings.messages / elapsed
        finally:
            trigger.stop()
            await trigger.rt.source.stop()
            await backend.stop()


async def measure(settings: Settings) -> list[Row]:
    store = SQLiteStateStore(MEMORY_PATH)
    await store.open()
    raw = only = full = 0.0
    try:
        for _ in range(settings.rounds):
            raw = max(raw, await raw_rate(settings))
            only = max(only, await source_only_rate(settings, store))
            with tempfile.TemporaryDirectory(prefix="triggerd-bench-") as work_dir:
                full = max(full, await triggerd_rate(settings, store, work_dir))
    finally:
        await store.close()
    raw_desc = "a bare aio-pika consumer acking each message (same broker, same prefetch)"
    return [
        Row(
            NAME,
            f"messages/s through triggerd (no-op function, batch {settings.batch_size})",
            full,
            raw,
            baseline_desc=raw_desc,
            digits=0,
        ),
        Row(
            NAME,
            "through triggerd / bare loop",
            full / raw,
            target=0.8,
            op=">=",
            digits=2,
        ),
        Row(
            NAME,
            "messages/s out of the source (receive + ack, no function)",
            only,
            raw,
            baseline_desc=raw_desc,
            digits=0,
        ),
    ]


def run(settings: Settings) -> list[Row]:
    return run_async(measure(settings))
