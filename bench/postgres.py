"""PostgreSQL CDC: rows/s from committed changes to a no-op function (batch 100) through
triggerd (the postgres source, the poll pipeline, the local backend), against a bare loop that
only peeks through a cursor, decodes the pgoutput messages and advances the slot, on the same
changes in the same run: two slots are created before the rows are written, one for each.

Also commit-to-invoke latency (p50 / p99) at a steady rate (one row per transaction): each row
carries its commit-time clock reading, and the time triggerd calls the function is taken in the
daemon's process; the baseline is the bare loop polling every 10 ms, commit to decoded.

The rates are measured in `rounds` rounds, each on a new table with its own slots (bare loop,
source alone, through triggerd); each figure is the median over the rounds, the ratio the
median of the per-round ratios. Each also measures the CPU time per row of this process, which
runs the bare loop, the source and the pipeline (the server and the function's worker, in
their own processes, are not counted): on a shared machine it moves far less with the load
than the rates do.

The cluster is a throwaway one (bench/postgres_cluster.py), `fsync = off`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import orjson

import triggerd_postgres as pg
from bench import HELLO_DIR, BenchError, Row, median, percentile, run_async
from bench.postgres_cluster import Cluster, postgres_cluster
from triggerd.config.load import validate_data
from triggerd.config.plugins import Registry
from triggerd.delivery.pipeline import SyncTrigger, TriggerRuntime
from triggerd.functions.backends.local import LocalFunctionConfig
from triggerd.functions.backends.local import plugin as local_plugin
from triggerd.state.sqlite import MEMORY_PATH, SQLiteStateStore
from triggerd.telemetry.metrics import Metrics
from triggerd.types import (
    Backend,
    BackendContext,
    EncodesEvents,
    InvokeResult,
    Record,
    Source,
    SourceContext,
    SystemClock,
)
from triggerd_postgres.pgoutput import Commit, Decoder, Insert

NAME = "postgres"
log = logging.getLogger("bench.postgres")


@dataclass(frozen=True, slots=True)
class Settings:
    rows: int = 50_000
    rows_per_transaction: int = 100
    batch_size: int = 100
    concurrency: int = 4
    #: Steady rate and duration of the latency run.
    rate: int = 500
    latency_s: float = 10.0
    timeout_s: float = 300.0
    rounds: int = 3


QUICK = Settings(rows=20_000, latency_s=4.0, rounds=1)
SMOKE = Settings(rows=300, latency_s=0.5, rate=100, timeout_s=60.0, rounds=1)

PEEK = (
    "SELECT data FROM pg_logical_slot_peek_binary_changes($1, NULL, $2, "
    "'proto_version', '1', 'publication_names', $3)"
)


async def _write_rows(dsn: str, table: str, settings: Settings) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        per = settings.rows_per_transaction
        for start in range(0, settings.rows, per):
            end = min(settings.rows, start + per)
            await conn.execute(
                f"INSERT INTO {table} SELECT g, 'row ' || g, now(), 0 "
                f"FROM generate_series({start + 1}, {end}) g"
            )
    finally:
        await conn.close()


async def raw_loop(
    dsn: str, slot: str, publication: str, rows: int, *, timeout_s: float, idle_s: float = 0.0
) -> tuple[float, list[float]]:
    """Peek (cursor, 500 rows a fetch), decode, advance after each peek, until `rows` row
    changes were decoded. Returns (seconds, commit-to-decoded latencies of the rows whose
    table has a `sent` column)."""
    conn = await asyncpg.connect(dsn)
    decoder = Decoder()
    latencies: list[float] = []
    seen = 0
    t0 = time.perf_counter()
    try:
        async with asyncio.timeout(timeout_s):
            while seen < rows:
                end_lsn = None
                async with conn.transaction():
                    cursor = await conn.cursor(PEEK, slot, 10_000, publication)
                    while True:
                        page = await cursor.fetch(500)
                        now = time.time()
                        for row in page:
                            msg = decoder.decode(row["data"])
                            if isinstance(msg, Insert):
                                seen += 1
                                sent = msg.new[3]
                                if isinstance(sent, str) and sent != "0":
                                    latencies.append(now - float(sent))
                            elif isinstance(msg, Commit):
                                end_lsn = msg.end_lsn
                        if len(page) < 500:
                            break
                if end_lsn is not None:
                    await conn.execute("SELECT pg_replication_slot_advance($1, $2)", slot, end_lsn)
                elif idle_s:
                    await asyncio.sleep(idle_s)
        return time.perf_counter() - t0, latencies
    finally:
        await conn.close()


class TimingBackend:
    """The real backend, noting commit-to-invoke latency of each row that carries `sent`."""

    def __init__(self, inner: Backend, *, timing: bool) -> None:
        self.inner = inner
        #: Parse payloads for latencies only in the latency round (it costs the event loop).
        self.timing = timing
        self.latencies: list[float] = []

    async def start(self) -> None:
        await self.inner.start()

    async def stop(self) -> None:
        await self.inner.stop()

    async def invoke(self, payload: bytes, **kwargs: Any) -> InvokeResult:
        now = time.time()
        for record in orjson.loads(payload)["Records"] if self.timing else ():
            sent = record["dynamodb"]["NewImage"]["sent"]["N"]
            if sent != "0":
                self.latencies.append(now - float(sent))
        return await self.inner.invoke(payload, **kwargs)


def _registry() -> Registry:
    reg = Registry(entry_points={})
    reg.register("source", "postgres", pg.plugin)
    reg.register("backend", "local", local_plugin)
    return reg


class Pipeline:
    """triggerd's poll pipeline on a postgres source, a no-op function on the local backend."""

    def __init__(self, cluster: Cluster, table: str, trigger: str, settings: Settings) -> None:
        self.settings = settings
        data = {
            "functions": {"hello": {"handler": "app.handler", "code": str(HELLO_DIR)}},
            "triggers": [
                {
                    "name": trigger,
                    "function": "hello",
                    "source": {
                        "type": "postgres",
                        "dsn": cluster.dsn,
                        "tables": [table],
                        "lag_interval_s": 60,
                    },
                    "batch_size": settings.batch_size,
                    "maximum_concurrency": settings.concurrency,
                }
            ],
        }
        self.tcfg = validate_data(data, _registry(), base_dir=Path(".")).trigger_list[0]
        self.trigger = trigger

    async def run(
        self, store: SQLiteStateStore, work_dir: str, until_rows: int, *, timing: bool = False
    ) -> tuple[float, list[float]]:
        s = self.settings
        clock, metrics = SystemClock(), Metrics()
        backend = TimingBackend(
            local_plugin.create(
                LocalFunctionConfig(
                    handler="app.handler",
                    code=str(HELLO_DIR),
                    timeout_s=30,
                    reserved_concurrency=s.concurrency,
                ),
                BackendContext(function="hello", clock=clock, log=log, work_dir=work_dir),
            ),
            timing=timing,
        )
        source = pg.plugin.create(
            self.tcfg.source_config,
            SourceContext(trigger=self.trigger, state=store, clock=clock, log=log),
        )
        rt = TriggerRuntime.assemble(
            name=self.trigger,
            config=self.tcfg,
            function="hello",
            function_arn="arn:aws:lambda:us-east-1:123456789012:function:hello",
            source=source,
            backend=backend,
            state=store,
            clock=clock,
            metrics=metrics,
            log=log,
        )
        await backend.start()
        await source.start()
        trigger = SyncTrigger(rt)
        succeeded = metrics.records_succeeded.labels(self.trigger)
        try:
            t0 = time.perf_counter()
            task = asyncio.create_task(trigger.run())
            async with asyncio.timeout(s.timeout_s):
                while succeeded._value.get() < until_rows:
                    if task.done():
                        raise BenchError(f"trigger stopped early: {task.exception()!r}")
                    await asyncio.sleep(0.005)
            elapsed = time.perf_counter() - t0
            trigger.stop()
            await task
            return elapsed, backend.latencies
        finally:
            trigger.stop()
            await source.stop()
            await backend.stop()


async def source_only(
    cluster: Cluster, table: str, trigger: str, store: SQLiteStateStore, settings: Settings
) -> float:
    """Seconds for the postgres source alone to hand out and settle `rows` records (receive,
    the batch's event as the pipeline builds it, ack; no function), on its own slot. Called
    once before the rows are written (to create the slot) with `rows` 0."""
    cfg = pg.PostgresSourceConfig(
        type="postgres",
        dsn=cluster.dsn,
        tables=[table],
        lag_interval_s=60,
    )
    source = pg.plugin.create(
        cfg, SourceContext(trigger=trigger, state=store, clock=SystemClock(), log=log)
    )
    await source.start()
    try:
        got = 0
        t0 = time.perf_counter()
        async with asyncio.timeout(settings.timeout_s):
            while got < settings.rows:
                records = await source.receive(settings.batch_size, 1.0)
                _event(source, records)
                await source.ack(records)
                got += len(records)
        return time.perf_counter() - t0
    finally:
        await source.stop()


def _event(source: Source, records: list[Record]) -> bytes:
    """The batch's event as the pipeline builds it (`TriggerRuntime.event`)."""
    if isinstance(source, EncodesEvents):
        return source.encode_event(records)
    return orjson.dumps(source.envelope(records))


async def _steady(dsn: str, table: str, rate: int, seconds: float, first_id: int) -> int:
    """One row per transaction at `rate` rows/s, each carrying its send time; returns rows."""
    conn = await asyncpg.connect(dsn)
    try:
        count = int(rate * seconds)
        start = time.perf_counter()
        for i in range(count):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await conn.execute(
                f"INSERT INTO {table} VALUES ($1, 'steady', now(), $2)",
                first_id + i,
                time.time(),
            )
        return count
    finally:
        await conn.close()


async def _prepare(cluster: Cluster, settings: Settings) -> tuple[str, str, str]:
    """A table, its publication, and a raw slot (the triggerd slot is made by the source)."""
    suffix = uuid.uuid4().hex[:8]
    table, trigger = f"bench_{suffix}", f"bench_{suffix}"
    conn = await asyncpg.connect(cluster.dsn)
    try:
        await conn.execute(
            f"CREATE TABLE {table} (id bigint PRIMARY KEY, v text, at timestamptz, "
            "sent double precision)"
        )
        await conn.execute(f"CREATE PUBLICATION pub_{suffix} FOR TABLE {table}")
        await conn.execute(
            "SELECT pg_create_logical_replication_slot($1, 'pgoutput')", f"raw_{suffix}"
        )
    finally:
        await conn.close()
    return table, trigger, suffix


async def _rates_round(
    cluster: Cluster, store: SQLiteStateStore, work_dir: str, settings: Settings
) -> tuple[tuple[float, float, float], tuple[float, float, float], tuple[Pipeline, str, str]]:
    """Seconds of (bare loop, source alone, through triggerd) on a new table; the CPU time
    per row of this process in each (us: the server and the function's worker not counted,
    and far less disturbed by other load than the rates); and the pipeline, table and suffix
    (for the latency round)."""
    table, trigger, suffix = await _prepare(cluster, settings)
    pipeline = Pipeline(cluster, table, trigger, settings)
    # The sources create their slots and publications before the rows come.
    await pipeline.run(store, work_dir, until_rows=0)
    only = f"{trigger}_source"
    await source_only(cluster, table, only, store, Settings(rows=0))
    await _write_rows(cluster.dsn, table, settings)
    cpu = [time.process_time()]
    raw_s, _ = await raw_loop(
        cluster.dsn, f"raw_{suffix}", f"pub_{suffix}", settings.rows, timeout_s=settings.timeout_s
    )
    cpu.append(time.process_time())
    only_s = await source_only(cluster, table, only, store, settings)
    cpu.append(time.process_time())
    full_s, _ = await pipeline.run(store, work_dir, until_rows=settings.rows)
    cpu.append(time.process_time())
    per_row = [(b - a) / max(settings.rows, 1) * 1e6 for a, b in itertools.pairwise(cpu)]
    return (raw_s, only_s, full_s), (per_row[0], per_row[1], per_row[2]), (pipeline, table, suffix)


async def measure(settings: Settings) -> list[Row]:
    rounds: list[tuple[float, float, float]] = []
    cpus: list[tuple[float, float, float]] = []
    with postgres_cluster() as cluster:
        store = SQLiteStateStore(MEMORY_PATH)
        await store.open()
        try:
            with tempfile.TemporaryDirectory(prefix="triggerd-bench-") as work_dir:
                for _ in range(settings.rounds):
                    seconds, cpu, (pipeline, table, suffix) = await _rates_round(
                        cluster, store, work_dir, settings
                    )
                    rounds.append(seconds)
                    cpus.append(cpu)
                latency = await _latency_round(cluster, table, suffix, pipeline, store, work_dir)
        finally:
            await store.close()
    log.info("postgres rounds (seconds: bare, source, triggerd): %s", rounds)
    log.info("postgres rounds (CPU us per row: bare, source, triggerd): %s", cpus)
    raw_rate = median([settings.rows / raw for raw, _, _ in rounds])
    only_rate = median([settings.rows / only for _, only, _ in rounds])
    full_rate = median([settings.rows / full for _, _, full in rounds])
    ratio = median([raw / full for raw, _, full in rounds])
    trig_lat, raw_lat = latency
    desc = "a bare loop: peek through a cursor, decode pgoutput, advance (same changes)"
    lat_desc = "the bare loop polling every 10 ms: commit to decoded"
    return [
        Row(
            NAME,
            f"rows/s through triggerd (no-op function, batch {settings.batch_size})",
            full_rate,
            raw_rate,
            target=20_000,
            op=">=",
            baseline_desc=desc,
            digits=0,
        ),
        Row(
            NAME,
            "through triggerd / bare loop",
            ratio,
            target=0.7,
            op=">=",
        ),
        Row(
            NAME,
            "CPU us per row through triggerd (the pipeline's process)",
            median([full for _, _, full in cpus]),
            median([raw for raw, _, _ in cpus]),
            baseline_desc="the bare loop's process (the server and the function's worker, in "
            "their own processes, are not counted on either side)",
            digits=1,
        ),
        Row(
            NAME,
            "CPU us per row out of the source (records built, receive + ack)",
            median([only for _, only, _ in cpus]),
            median([raw for raw, _, _ in cpus]),
            baseline_desc="the bare loop's process",
            digits=1,
        ),
        Row(
            NAME,
            "rows/s out of the source (records built, receive + ack, no function)",
            only_rate,
            raw_rate,
            baseline_desc=desc,
            digits=0,
        ),
        Row(
            NAME,
            f"commit-to-invoke p50 (ms) at {settings.rate} rows/s",
            percentile(trig_lat, 50) * 1000,
            percentile(raw_lat, 50) * 1000,
            baseline_desc=lat_desc,
            digits=1,
        ),
        Row(
            NAME,
            f"commit-to-invoke p99 (ms) at {settings.rate} rows/s",
            percentile(trig_lat, 99) * 1000,
            percentile(raw_lat, 99) * 1000,
            baseline_desc=lat_desc,
            digits=1,
        ),
    ]


async def _latency_round(
    cluster: Cluster,
    table: str,
    suffix: str,
    pipeline: Pipeline,
    store: SQLiteStateStore,
    work_dir: str,
) -> tuple[list[float], list[float]]:
    s = pipeline.settings
    count = int(s.rate * s.latency_s)
    # triggerd, with the writer running beside it
    run = asyncio.create_task(pipeline.run(store, work_dir, until_rows=count, timing=True))
    await asyncio.sleep(1.0)  # the source has started and is polling
    await _steady(cluster.dsn, table, s.rate, s.latency_s, 10_000_000)
    _, trig_lat = await run
    # the bare loop: skip what triggerd's round wrote, then the same rate again
    await raw_loop(cluster.dsn, f"raw_{suffix}", f"pub_{suffix}", count, timeout_s=s.timeout_s)
    raw = asyncio.create_task(
        raw_loop(
            cluster.dsn,
            f"raw_{suffix}",
            f"pub_{suffix}",
            count,
            timeout_s=s.timeout_s,
            idle_s=0.01,
        )
    )
    await _steady(cluster.dsn, table, s.rate, s.latency_s, 20_000_000)
    _, raw_lat = await raw
    if not trig_lat or not raw_lat:
        raise BenchError("no latency samples")
    return trig_lat, raw_lat


def run(settings: Settings) -> list[Row]:
    return run_async(measure(settings))
