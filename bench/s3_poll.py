"""S3 poll mode, objects/s: the s3 source listing a moto_server bucket of N objects, against a
bare aiobotocore ListObjectsV2 pagination loop over the same bucket in the same run.

Two triggerd figures: the first scan (TRIM_HORIZON: every object becomes an event, committed
to the durable queue with its checkpoint in a SQLite state file, as the daemon's accept loop
does), and a rescan with nothing changed (list + diff against the stored state: the steady
cost of poll mode). moto_server is started for the run and stopped by PID.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import BenchError, Row, run_async
from bench.harness import commit, moto_server
from triggerd.state.sqlite import SQLiteStateStore
from triggerd.types import SourceContext, SystemClock
from triggerd_s3 import S3SourceConfig
from triggerd_s3.poll import PollSource

NAME = "s3_poll"
TRIGGER = "bench"
REGION = "us-east-1"
CREDENTIALS = {"aws_access_key_id": "bench", "aws_secret_access_key": "bench-secret"}
log = logging.getLogger("bench.s3_poll")


@dataclass(frozen=True, slots=True)
class Settings:
    objects: int = 5000
    page_size: int = 1000
    #: Concurrent PutObject calls while filling the bucket.
    fill_concurrency: int = 16
    timeout_s: float = 300.0


QUICK = Settings(objects=1000)
SMOKE = Settings(objects=30, page_size=10, timeout_s=60.0)


@asynccontextmanager
async def s3_client(endpoint: str) -> AsyncIterator[Any]:
    import aiobotocore.session

    session = aiobotocore.session.get_session()
    async with AsyncExitStack() as stack:
        yield await stack.enter_async_context(
            session.create_client("s3", region_name=REGION, endpoint_url=endpoint, **CREDENTIALS)
        )


async def fill(s3: Any, bucket: str, settings: Settings) -> None:
    await s3.create_bucket(Bucket=bucket)
    keys = iter(range(settings.objects))

    async def worker() -> None:
        for i in keys:
            await s3.put_object(Bucket=bucket, Key=f"data/{i:07d}.bin", Body=b"x" * 16)

    async with asyncio.TaskGroup() as tg:
        for _ in range(settings.fill_concurrency):
            tg.create_task(worker())


async def bare_listing_rate(s3: Any, bucket: str, settings: Settings) -> float:
    """Objects/s of a plain ListObjectsV2 paginate loop that only counts."""
    t0 = time.perf_counter()
    count = 0
    paginator = s3.get_paginator("list_objects_v2")
    async for page in paginator.paginate(
        Bucket=bucket, PaginationConfig={"PageSize": settings.page_size}
    ):
        count += len(page.get("Contents", []))
    elapsed = time.perf_counter() - t0
    if count != settings.objects:
        raise BenchError(f"listed {count} objects, expected {settings.objects}")
    return count / elapsed


async def scan_rate(source: PollSource, state: SQLiteStateStore, expected: int) -> float:
    """Objects/s of one complete scan; records are committed (event + checkpoint in one
    transaction) and acked as they come, 64 at a time like the accept loop."""
    t0 = time.perf_counter()
    scan = asyncio.create_task(source.scan_once())
    got = 0
    while not scan.done() or not source._ready.empty():
        batch = await source.receive(64, 0.01)
        if not batch:
            continue
        await commit(source, state, TRIGGER, batch)
        got += len(batch)
    stats = await scan
    elapsed = time.perf_counter() - t0
    if got != expected:
        raise BenchError(f"the scan emitted {got} records, expected {expected}")
    return stats.listed / elapsed


async def measure(settings: Settings) -> list[Row]:
    with moto_server() as endpoint, tempfile.TemporaryDirectory(prefix="triggerd-bench-") as tmp:
        bucket = f"bench-{uuid.uuid4().hex[:12]}"
        async with asyncio.timeout(settings.timeout_s), s3_client(endpoint) as s3:
            await fill(s3, bucket, settings)
            await bare_listing_rate(s3, bucket, settings)  # warm-up
            baseline = await bare_listing_rate(s3, bucket, settings)
            state = SQLiteStateStore(str(Path(tmp) / "state.db"))
            await state.open()
            try:
                config = S3SourceConfig.model_validate(
                    {
                        "type": "s3",
                        "bucket": bucket,
                        "mode": "poll",
                        "endpoint_url": endpoint,
                        "page_size": settings.page_size,
                        "starting_position": "TRIM_HORIZON",
                        **CREDENTIALS,
                    }
                )
                ctx = SourceContext(trigger=TRIGGER, state=state, clock=SystemClock(), log=log)
                source = PollSource(config, ctx, s3)
                first = await scan_rate(source, state, settings.objects)
                rescan = await scan_rate(source, state, 0)
                baseline_after = await bare_listing_rate(s3, bucket, settings)
            finally:
                await state.close()
    base = (baseline + baseline_after) / 2
    desc = (
        f"bare ListObjectsV2 paginate loop (page {settings.page_size}) over the same "
        f"{settings.objects}-object moto bucket"
    )
    return [
        Row(
            NAME,
            "objects/s, first scan (events committed)",
            first,
            base,
            baseline_desc=desc,
            digits=0,
        ),
        Row(NAME, "objects/s, rescan with no changes", rescan, base, baseline_desc=desc, digits=0),
    ]


def run(settings: Settings) -> list[Row]:
    return run_async(measure(settings))
