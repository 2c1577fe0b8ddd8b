"""Kinesis records/s: N records on a stream of several shards through triggerd's kinesis
source and poll pipeline (no-op function on the local backend, batch 100, checkpointed after
success), against a bare aiobotocore get_records loop per shard (no function, no checkpoint)
on the same stream contents and server, in the same run. Against the fast endpoint a second
bare loop reads with the same response parsing as triggerd's client (`wire_values`: arrival
times as epoch seconds, data as base64 text, no datetime or base64 decoding per record), the
strictest baseline: it shows what triggerd adds on top of reading, with no parsing advantage.

Two servers. moto_server costs 13-25 ms per call, so the moto figures are bounded by moto;
the fast endpoint (bench/fake_kinesis.py: in-memory, its own process, sub-millisecond answers)
leaves the client side as the bottleneck, so its ratio is what shows triggerd's own cost
(invocations, checkpoints, shaping). Each figure runs from the first call to the moment the
last record was read (raw) or acknowledged (triggerd). The growth of this process's RSS over
the triggerd rounds is reported too.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from bench import HELLO_DIR, Row, run_async
from bench.harness import moto_server
from bench.sqs import CountingSource, best_of_interleaved

NAME = "kinesis"
TRIGGER = "bench"
log = logging.getLogger("bench.kinesis")


@dataclass(frozen=True, slots=True)
class Settings:
    #: Records per round against moto_server: five GetRecords pages per shard, so a round
    #: measures a stream being read and invoked at once, not one page then its invocations.
    records: int = 10_000
    shards: int = 2
    #: triggerd's batch_size.
    batch_size: int = 100
    #: Limit of each GetRecords call, for both.
    page: int = 1000
    rounds: int = 3
    timeout_s: float = 180.0
    #: Records per round against the fast in-process endpoint.
    fast_records: int = 20_000


QUICK = Settings(records=4000, rounds=2, fast_records=10_000)
SMOKE = Settings(records=40, shards=2, batch_size=10, rounds=1, timeout_s=60.0, fast_records=100)


@contextlib.asynccontextmanager
async def client(endpoint: str, *, wire: bool = False) -> AsyncIterator[Any]:
    """`wire`: responses parsed as triggerd's stream sources parse them (`wire_values`)."""
    from aiobotocore.session import get_session

    from triggerd.config.aws import epoch_seconds

    session = get_session()
    if wire:
        session.get_component("response_parser_factory").set_parser_defaults(
            timestamp_parser=epoch_seconds, blob_parser=lambda value: value
        )
    async with session.create_client(
        "kinesis",
        region_name="us-east-1",
        endpoint_url=endpoint,
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
    ) as c:
        yield c


async def fill_stream(endpoint: str, settings: Settings, count: int) -> str:
    name = f"bench-{uuid.uuid4().hex[:10]}"
    body = b'{"hello": "world", "padding": "' + b"x" * 64 + b'"}'
    async with client(endpoint) as c:
        await c.create_stream(StreamName=name, ShardCount=settings.shards)
        for _ in range(200):
            summary = await c.describe_stream_summary(StreamName=name)
            if summary["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE":
                break
            await asyncio.sleep(0.05)
        for start in range(0, count, 500):
            entries = [
                {"Data": body, "PartitionKey": f"k{i}"}
                for i in range(start, min(count, start + 500))
            ]
            await c.put_records(StreamName=name, Records=entries)
    return name


async def raw_rate(endpoint: str, settings: Settings, count: int, *, wire: bool = False) -> float:
    """Records/s of one bare get_records loop per shard, until every record was read."""
    stream = await fill_stream(endpoint, settings, count)
    async with client(endpoint, wire=wire) as c:
        shards = (await c.list_shards(StreamName=stream))["Shards"]
        read = 0
        finished = asyncio.Event()
        t_end = 0.0

        async def loop(shard_id: str) -> None:
            nonlocal read, t_end
            it = (
                await c.get_shard_iterator(
                    StreamName=stream, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
                )
            )["ShardIterator"]
            while not finished.is_set():
                r = await c.get_records(ShardIterator=it, Limit=settings.page)
                for rec in r["Records"]:  # what a consumer does at least: look at the data
                    if wire:
                        rec["Data"].encode()  # base64 text already, as a Lambda event has it
                    else:
                        base64.b64encode(rec["Data"])
                read += len(r["Records"])
                if read >= count:
                    t_end = time.perf_counter()
                    finished.set()
                it = r["NextShardIterator"]
                if not r["Records"]:
                    await asyncio.sleep(0.01)

        t0 = time.perf_counter()
        async with asyncio.timeout(settings.timeout_s), asyncio.TaskGroup() as tg:
            for shard in shards:
                tg.create_task(loop(shard["ShardId"]))
        return read / (t_end - t0)


async def triggerd_rate(endpoint: str, work_dir: str, settings: Settings, count: int) -> float:
    """Records/s through the kinesis source, the poll pipeline and the local backend."""
    from triggerd.functions.backends.local import plugin as local_plugin

    stream = await fill_stream(endpoint, settings, count)
    trigger, source, backend = build_trigger(
        endpoint, stream, work_dir, settings, count, local_plugin
    )
    await backend.start()
    try:
        await source.start()
        try:
            t0 = time.perf_counter()
            async with asyncio.timeout(settings.timeout_s), asyncio.TaskGroup() as tg:
                runner = tg.create_task(trigger.run())
                await source.done.wait()
                trigger.stop()
                await runner
            return source.acked / (source.finished_at - t0)
        finally:
            await source.stop()
    finally:
        await backend.stop()


def build_trigger(
    endpoint: str, stream: str, work_dir: str, settings: Settings, count: int, local_plugin: Any
) -> tuple[Any, CountingSource, Any]:
    import triggerd_kinesis
    from triggerd.config.load import validate_data
    from triggerd.config.plugins import Registry
    from triggerd.delivery.pipeline import SyncTrigger, TriggerRuntime
    from triggerd.state.sqlite import MEMORY_PATH, SQLiteStateStore
    from triggerd.telemetry.metrics import Metrics
    from triggerd.types import BackendContext, SourceContext, SystemClock

    reg = Registry()
    reg.register("source", "kinesis", triggerd_kinesis.plugin)
    reg.register("backend", "local", local_plugin)
    data: dict[str, Any] = {
        "functions": {
            "hello": {
                "handler": "app.handler",
                "code": str(HELLO_DIR),
                "timeout_s": 30,
                # One warm worker per shard before the clock starts, as a running daemon has
                # them: a round measures throughput, not the workers' cold starts.
                "provisioned_concurrency": settings.shards,
            }
        },
        "triggers": [
            {
                "name": TRIGGER,
                "function": "hello",
                "batch_size": settings.batch_size,
                "maximum_concurrency": settings.shards,
                "source": {
                    "type": "kinesis",
                    "stream": stream,
                    "endpoint_url": endpoint,
                    "region": "us-east-1",
                    "records_per_call": settings.page,
                    "poll_interval_s": 0.01,
                    "aws_access_key_id": "bench",
                    "aws_secret_access_key": "bench",
                },
            }
        ],
    }
    cfg = validate_data(data, reg, base_dir=HELLO_DIR)
    tcfg = cfg.trigger_list[0]
    clock, metrics = SystemClock(), Metrics()
    state = SQLiteStateStore(MEMORY_PATH)
    backend = local_plugin.create(
        cfg.function_map["hello"],
        BackendContext(function="hello", clock=clock, log=log, work_dir=work_dir),
    )
    inner = triggerd_kinesis.plugin.create(
        tcfg.source_config, SourceContext(trigger=TRIGGER, state=state, clock=clock, log=log)
    )
    source = _OpenStore(inner, count, state)
    rt = TriggerRuntime.assemble(
        name=TRIGGER,
        config=tcfg,
        function="hello",
        function_arn="arn:aws:lambda:us-east-1:123456789012:function:hello",
        source=source,
        backend=backend,
        state=state,
        clock=clock,
        metrics=metrics,
        log=log,
    )
    return SyncTrigger(rt), source, backend


class _OpenStore(CountingSource):
    """The counting source with its in-memory state store opened and closed around it."""

    def __init__(self, inner: Any, target: int, state: Any) -> None:
        super().__init__(inner, target)
        self.state = state

    async def start(self) -> None:
        await self.state.open()
        await super().start()

    async def stop(self) -> None:
        await super().stop()
        await self.state.close()


def _rss_mb() -> float:
    import psutil

    return float(psutil.Process().memory_info().rss) / 1024 / 1024


async def measure(settings: Settings) -> list[Row]:
    from bench.fake_kinesis import fake_kinesis_server

    with tempfile.TemporaryDirectory(prefix="triggerd-bench-") as wd:
        with moto_server() as endpoint:
            n = settings.records
            raw, ours = await best_of_interleaved(
                settings.rounds,
                lambda: raw_rate(endpoint, settings, n),
                lambda: triggerd_rate(endpoint, wd, settings, n),
            )
        fast_n = settings.fast_records
        with fake_kinesis_server() as fast:
            await triggerd_rate(fast, wd, settings, settings.batch_size)  # warm the worker
            rss_before = _rss_mb()
            best = {"raw": 0.0, "wire": 0.0, "ours": 0.0}
            for _ in range(settings.rounds):  # alternating, so host noise hits all three alike
                best["raw"] = max(best["raw"], await raw_rate(fast, settings, fast_n))
                best["wire"] = max(best["wire"], await raw_rate(fast, settings, fast_n, wire=True))
                best["ours"] = max(best["ours"], await triggerd_rate(fast, wd, settings, fast_n))
            rss_growth = _rss_mb() - rss_before
        fast_raw, fast_wire, fast_ours = best["raw"], best["wire"], best["ours"]
    shards = f"{settings.shards} shards, batch {settings.batch_size}"
    desc = (
        f"one bare aiobotocore get_records({settings.page}) loop per shard on the same moto_server"
    )
    fast_desc = (
        f"one bare aiobotocore get_records({settings.page}) loop per shard on the same fast "
        "in-memory Kinesis endpoint (bench/fake_kinesis.py, own process)"
    )
    return [
        Row(NAME, f"records/s, {shards} (moto)", ours, raw, baseline_desc=desc, digits=0),
        Row(
            NAME, "share of the raw loop (%) (moto)", 100 * ours / raw, target=80, op=">=", digits=0
        ),
        Row(
            NAME,
            f"records/s, {shards} (fast endpoint)",
            fast_ours,
            fast_raw,
            baseline_desc=fast_desc,
            digits=0,
        ),
        Row(
            NAME,
            "share of the raw loop (%) (fast endpoint)",
            100 * fast_ours / fast_raw,
            digits=0,
        ),
        Row(
            NAME,
            f"records/s, {shards} (fast endpoint, raw loop parsing as triggerd does)",
            fast_ours,
            fast_wire,
            baseline_desc=fast_desc + ", its responses parsed as triggerd's client parses them",
            digits=0,
        ),
        Row(
            NAME,
            "share of that raw loop (%) (fast endpoint)",
            100 * fast_ours / fast_wire,
            digits=0,
        ),
        Row(NAME, f"RSS growth over {settings.rounds} fast rounds (MB)", rss_growth, digits=1),
    ]


def run(settings: Settings) -> list[Row]:
    return run_async(measure(settings))
