"""Consumer groups against a real broker: two members share six partitions and every record
is delivered when one stops (its partitions move to the other, after it committed what it
finished); back-pressure pauses partitions so memory stays bounded behind a slow function;
the source survives a broker restart."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections import Counter
from pathlib import Path
from typing import Any

import psutil
import pytest

from bench.harness import TansuBroker
from tests.fakes import FakeBackend
from tests.integration.kafka_support import (
    committed,
    create_topic,
    harness,
    producer,
    unique,
    values,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


async def produce_spread(bootstrap: str, topic: str, start: int, count: int, parts: int) -> None:
    async with producer(bootstrap) as p:
        futures = [
            await p.send(topic, f"v{i}".encode(), partition=i % parts)
            for i in range(start, start + count)
        ]
        await asyncio.gather(*futures)


async def test_two_members_share_partitions_and_one_stopping_hands_over_without_loss(
    tmp_path: Path, kafka_broker: TansuBroker
) -> None:
    bootstrap = kafka_broker.bootstrap
    topic = await create_topic(bootstrap, partitions=6)
    group = unique("g")
    seen: Counter[bytes] = Counter()

    def record(event: dict[str, Any]) -> Any:
        seen.update(v for v in values(event) if v is not None)
        return None

    source = {
        "bootstrap_servers": bootstrap,
        "topics": [topic],
        "group_id": group,
        "starting_position": "TRIM_HORIZON",
    }
    opts = {"batch_size": 10, "batching_window_s": 0.05}
    be_a, be_b = FakeBackend(record, delay_s=0.01), FakeBackend(record, delay_s=0.01)
    async with (
        harness(tmp_path, source, be_a, name="a", **opts) as a,
        harness(tmp_path, source, be_b, name="b", **opts) as b,
    ):
        run_a = asyncio.create_task(a.trigger.run())
        run_b = asyncio.create_task(b.trigger.run())
        try:
            await produce_spread(bootstrap, topic, 0, 300, 6)
            async with asyncio.timeout(30):
                while not (be_a.calls and be_b.calls and len(seen) >= 150):
                    await asyncio.sleep(0.05)
            shares = (len(a.source.states), len(b.source.states))  # type: ignore[attr-defined]
            assert sum(shares) == 6 and min(shares) >= 1, shares
            b.trigger.stop()
            await asyncio.wait_for(run_b, 20)
            await b.source.stop()  # leaves the group: its partitions move to a
            await produce_spread(bootstrap, topic, 300, 300, 6)
            async with asyncio.timeout(40):
                while len(seen) < 600:
                    await asyncio.sleep(0.05)
            assert len(a.source.states) == 6  # type: ignore[attr-defined]
            async with asyncio.timeout(10):
                while (await committed(bootstrap, group, topic, 6)) != [100] * 6:
                    await asyncio.sleep(0.2)
        finally:
            a.trigger.stop()
            b.trigger.stop()
            await asyncio.gather(run_a, run_b, return_exceptions=True)
    assert set(seen) == {f"v{i}".encode() for i in range(600)}
    assert a.source.rebalances >= 2  # type: ignore[attr-defined]


async def test_back_pressure_pauses_partitions_and_keeps_memory_bounded(
    tmp_path: Path, kafka_broker: TansuBroker
) -> None:
    bootstrap = kafka_broker.bootstrap
    topic = await create_topic(bootstrap, partitions=2)
    body = b"x" * 1024
    async with producer(bootstrap) as p:
        for chunk in range(0, 40_000, 2000):
            futures = [
                await p.send(topic, body, partition=i % 2) for i in range(chunk, chunk + 2000)
            ]
            await asyncio.gather(*futures)
    proc = psutil.Process(os.getpid())
    be = FakeBackend(delay_s=0.05)  # 10 records per 50 ms: far slower than the topic
    source = {
        "bootstrap_servers": bootstrap,
        "topics": [topic],
        "starting_position": "TRIM_HORIZON",
        "max_buffered_records_per_partition": 500,
        "max_partition_fetch_bytes": 256 * 1024,
        "fetch_max_bytes": 512 * 1024,
    }
    async with harness(tmp_path, source, be, batch_size=10, batching_window_s=0) as h:
        src: Any = h.source
        rss_before = proc.memory_info().rss
        task = asyncio.create_task(h.trigger.run())
        held: list[int] = []
        paused_seen = False
        try:
            for _ in range(30):
                await asyncio.sleep(0.1)
                held.append(sum(len(s.ready) for s in src.states.values()))
                paused_seen = paused_seen or bool(src.consumer.paused())
        finally:
            h.trigger.stop()
            await asyncio.wait_for(task, 20)
        rss_growth = proc.memory_info().rss - rss_before
    assert paused_seen, "partitions were paused"
    # Per partition: the limit plus one fetch response (about 256 records of 1 KB).
    assert max(held) <= 2 * (500 + 600), held
    # 40 MB of backlog waits in the topic: growth under half of it shows it was not pulled in
    # (measured: about 5 MB, the two partitions' limits plus a fetch response each).
    assert rss_growth < 20 * 1024 * 1024, rss_growth
    assert h.succeeded < 40_000 / 4, "the function really was slower than the topic"


async def test_the_source_survives_a_broker_restart(tmp_path: Path) -> None:
    """The broker goes away and comes back on the same port (tansu keeps data in memory, so
    the topic is created again): the source reconnects and delivers new records."""
    broker = TansuBroker(tmp_path / "tansu.log")
    broker.start()
    try:
        bootstrap = broker.bootstrap
        topic = await create_topic(bootstrap)
        await produce_spread(bootstrap, topic, 0, 5, 1)
        seen: set[bytes] = set()

        def record(event: dict[str, Any]) -> Any:
            seen.update(v for v in values(event) if v is not None)
            return None

        be = FakeBackend(record)
        source = {
            "bootstrap_servers": bootstrap,
            "topics": [topic],
            "starting_position": "TRIM_HORIZON",
            "request_timeout_ms": 3000,
        }
        async with harness(tmp_path, source, be, batching_window_s=0) as h:
            task = asyncio.create_task(h.trigger.run())
            try:
                async with asyncio.timeout(20):
                    while len(seen) < 5:
                        await asyncio.sleep(0.05)
                broker.stop()
                await asyncio.sleep(1.5)
                broker.start()
                admin_topic = await _recreate(bootstrap, topic)
                assert admin_topic == topic
                async with asyncio.timeout(40):
                    while len(seen) < 10:
                        with contextlib.suppress(Exception):
                            await produce_spread(bootstrap, topic, 5, 5, 1)
                        await asyncio.sleep(1.0)
            finally:
                h.trigger.stop()
                await asyncio.wait_for(task, 20)
        assert {f"v{i}".encode() for i in range(10)} <= seen
    finally:
        broker.stop()


async def _recreate(bootstrap: str, topic: str) -> str:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()
    return topic
