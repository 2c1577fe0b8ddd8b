"""Resharding while records flow through the kinesis source: a stream of one shard is split
while its records are being delivered, then the two children are merged. Against moto_server
and against bench/fake_kinesis.py (a Kinesis-compatible endpoint over real HTTP): moto 5.2.5
accepts SplitShard and MergeShards and lists the parents and children, but keeps routing
every new record to the closed parent, so its children stay empty; the fake endpoint routes
new records to the open children as Kinesis does, so there the children carry records.

Checked throughout the run (sampled every 20 ms and on every invocation): a shard is read only
once each of its parents is read to its end and checkpointed (`SHARD_END`), and a child's
records are invoked only after that; at the end every record was delivered exactly once
(no failures were scripted, so at-least-once allows no repeat here) and each partition key's
records arrived in the order they were put, across the split and the merge."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes import FakeBackend
from tests.integration.kinesis_support import data_of, kinesis_client, make_stream, registry, source
from tests.integration.trigger_harness import trigger_harness
from triggerd.delivery.shards import ShardedSource

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

PARENT, LEFT, RIGHT, MERGED = (f"shardId-{i:012d}" for i in range(4))
PARENTS = {LEFT: (PARENT,), RIGHT: (PARENT,), MERGED: (LEFT, RIGHT)}
KEYS = [f"k{i}" for i in range(8)]


@pytest.fixture(scope="module")
def fake_kinesis() -> Iterator[str]:
    from bench.fake_kinesis import fake_kinesis_server

    with fake_kinesis_server() as url:  # stopped by PID when the module's tests are done
        yield url


@pytest.fixture(params=["moto_server", "fake_kinesis"])
def endpoint(request: pytest.FixtureRequest) -> tuple[str, str]:
    return request.param, str(request.getfixturevalue(request.param))


class Timeline(logging.Handler):
    """Shards finished (the reader's `stream.shard_finished`, logged once SHARD_END is
    written) and shards invoked, in the order they happened."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() == "stream.shard_finished":
            self.events.append(("finished", str(getattr(record, "shard", ""))))

    def finished(self) -> set[str]:
        return {shard for kind, shard in self.events if kind == "finished"}


async def put(client: Any, stream: str, start: int, count: int) -> None:
    for i in range(start, start + count):
        key = KEYS[i % len(KEYS)]
        data = f'{{"k": "{key}", "i": {i}}}'.encode()
        await client.put_record(StreamName=stream, Data=data, PartitionKey=key)


def hash_range(shard: dict[str, Any]) -> tuple[int, int]:
    r = shard["HashKeyRange"]
    return int(r["StartingHashKey"]), int(r["EndingHashKey"])


async def test_split_then_merge_while_records_flow(
    endpoint: tuple[str, str], tmp_path: Path
) -> None:
    server, url = endpoint
    # moto routes records put after the split to the closed parent, which it keeps listing
    # with a growing EndingSequenceNumber: only records put before the split are asked of it.
    later = 60 if server == "fake_kinesis" else 0
    timeline = Timeline()
    log = logging.getLogger("test.kinesis")
    level = log.level
    log.setLevel(logging.INFO)
    log.addHandler(timeline)
    violations: list[str] = []

    def respond(event: dict[str, Any]) -> Any:
        shard = event["Records"][0]["eventID"].split(":")[0]
        timeline.events.append(("invoke", shard))
        missing = set(PARENTS.get(shard, ())) - timeline.finished()
        if missing:
            violations.append(f"{shard} invoked before {sorted(missing)} finished")
        return {}

    backend = FakeBackend(respond, delay_s=0.05)
    cfg = source(url, "", shard_refresh_s=0.2)
    try:
        async with kinesis_client(url) as client:
            stream = await make_stream(client)
            cfg["stream"] = stream
            await put(client, stream, 0, 60)
            async with trigger_harness(tmp_path, registry(), cfg, backend, batch_size=5) as h:
                assert isinstance(h.source, ShardedSource) and h.source.reader is not None
                reader = h.source.reader

                def check_reading() -> None:
                    for sid, state in reader.shard_state().items():
                        waiting = [p for p in PARENTS.get(sid, ()) if p in reader.shards]
                        if state == "reading" and waiting:
                            violations.append(f"{sid} read while {waiting} unfinished")

                def done() -> bool:
                    check_reading()
                    return len(delivered(backend)) >= 60 + 2 * later and set(
                        reader.shard_state()
                    ) == {MERGED}

                runner = asyncio.create_task(h.run_until(done, timeout=60))
                while len(delivered(backend)) < 10:
                    await asyncio.sleep(0.01)
                parent = (await client.list_shards(StreamName=stream))["Shards"][0]
                low, high = hash_range(parent)
                await client.split_shard(
                    StreamName=stream,
                    ShardToSplit=PARENT,
                    NewStartingHashKey=str((low + high) // 2),
                )
                assert len(delivered(backend)) < 60, "split after the parent was delivered"
                await put(client, stream, 60, later)
                await client.merge_shards(
                    StreamName=stream, ShardToMerge=LEFT, AdjacentShardToMerge=RIGHT
                )
                await put(client, stream, 60 + later, later)
                await runner
    finally:
        log.removeHandler(timeline)
        log.setLevel(level)

    assert violations == []
    got = delivered(backend)
    assert sorted(v["i"] for v in got) == list(range(60 + 2 * later))  # none lost, none twice
    for key in KEYS:
        order = [v["i"] for v in got if v["k"] == key]
        assert order == sorted(order), key
    finished = [shard for kind, shard in timeline.events if kind == "finished"]
    assert finished.index(PARENT) < min(finished.index(LEFT), finished.index(RIGHT))
    invoked = [shard for kind, shard in timeline.events if kind == "invoke"]
    if later:  # the children and the merged shard carried records, each after its parents
        assert {LEFT, RIGHT, MERGED} <= set(invoked)
        last_parent = max(i for i, s in enumerate(invoked) if s == PARENT)
        first_child = min(i for i, s in enumerate(invoked) if s in (LEFT, RIGHT))
        last_child = max(i for i, s in enumerate(invoked) if s in (LEFT, RIGHT))
        assert last_parent < first_child
        assert last_child < invoked.index(MERGED)
    else:
        assert set(invoked) == {PARENT}


def delivered(backend: FakeBackend) -> list[Any]:
    return [v for event in backend.calls for v in data_of(event)]
