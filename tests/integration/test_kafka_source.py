"""The kafka source against a real broker (tansu): the event shape, keys, null keys, binary
values, headers, filters, ordering per partition while another partition fails, commits,
LATEST for a new group."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import pytest

from bench.harness import TansuBroker
from tests.fakes import FakeBackend
from tests.integration.kafka_support import (
    committed,
    create_topic,
    harness,
    produce,
    unique,
    values,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


async def test_records_arrive_in_the_self_managed_kafka_shape(
    tmp_path: Path, kafka_broker: TansuBroker
) -> None:
    bootstrap = kafka_broker.bootstrap
    topic = await create_topic(bootstrap)
    await produce(bootstrap, topic, [b'{"n": 1}'], key=b"k1", headers=[("h", b"\xff\x01a")])
    await produce(bootstrap, topic, [b"\x00\x9f binary"], key=None)
    be = FakeBackend()
    source = {
        "bootstrap_servers": bootstrap,
        "topics": [topic],
        "starting_position": "TRIM_HORIZON",
    }
    async with harness(tmp_path, source, be, batching_window_s=0.3) as h:
        await h.run_until(lambda: sum(len(values(c)) for c in be.calls) >= 2)
    event = be.calls[0]
    assert event["eventSource"] == "SelfManagedKafka"
    assert event["bootstrapServers"] == bootstrap
    [(key, records)] = event["records"].items()
    assert key == f"{topic}-0"
    first = records[0]
    assert list(first) == [
        "topic", "partition", "offset", "timestamp", "timestampType", "key", "value", "headers"
    ]  # fmt: skip
    assert first["topic"] == topic and first["partition"] == 0 and first["offset"] == 0
    assert first["timestampType"] == "CREATE_TIME" and first["timestamp"] > 1_600_000_000_000
    assert base64.b64decode(first["key"]) == b"k1"
    assert base64.b64decode(first["value"]) == b'{"n": 1}'
    assert first["headers"] == [{"h": [-1, 1, 97]}]
    all_records = [r for c in be.calls for rs in c["records"].values() for r in rs]
    second = all_records[1]
    assert "key" not in second, "a null key is left out"
    assert base64.b64decode(second["value"]) == b"\x00\x9f binary"
    assert second["headers"] == []


async def test_filters_match_the_decoded_value_and_filtered_records_are_committed(
    tmp_path: Path, kafka_broker: TansuBroker
) -> None:
    bootstrap = kafka_broker.bootstrap
    topic = await create_topic(bootstrap)
    group = unique("g")
    await produce(bootstrap, topic, [b'{"kind": "keep"}', b'{"kind": "drop"}', b"not json"])
    be = FakeBackend()
    source = {
        "bootstrap_servers": bootstrap,
        "topics": [topic],
        "group_id": group,
        "starting_position": "TRIM_HORIZON",
    }
    filters = [{"value": {"kind": ["keep"]}}]
    async with harness(tmp_path, source, be, filters=filters, batching_window_s=0) as h:
        await h.run_until(lambda: h.source.states and _point(h) == 3)  # type: ignore[attr-defined]
    assert [values(c) for c in be.calls] == [[b'{"kind": "keep"}']]
    assert await committed(bootstrap, group, topic, 1) == [3]


def _point(h: Any) -> int | None:
    state = next(iter(h.source.states.values()))
    return int(state.committed) if state.committed is not None else None


async def test_a_failing_partition_keeps_its_order_while_the_other_flows(
    tmp_path: Path, kafka_broker: TansuBroker
) -> None:
    bootstrap = kafka_broker.bootstrap
    topic = await create_topic(bootstrap, partitions=2)
    group = unique("g")
    await produce(bootstrap, topic, [f"bad-{i}".encode() for i in range(5)], partition=0)
    await produce(bootstrap, topic, [f"ok-{i}".encode() for i in range(20)], partition=1)
    failures = {"left": 3}

    def respond(event: dict[str, Any]) -> Any:
        if any(v and v.startswith(b"bad") for v in values(event)) and failures["left"] > 0:
            failures["left"] -= 1
            raise ValueError("partition 0 fails three times")
        return None

    be = FakeBackend(respond)
    source = {
        "bootstrap_servers": bootstrap,
        "topics": [topic],
        "group_id": group,
        "starting_position": "TRIM_HORIZON",
    }
    async with harness(
        tmp_path, source, be, batch_size=5, batching_window_s=0, retry_base_delay_s=0.3
    ) as h:
        await h.run_until(lambda: h.succeeded >= 25)
    seen: dict[str, list[bytes]] = {}
    for call in be.calls:
        assert len(call["records"]) == 1, "one partition per batch"
        [(key, _)] = call["records"].items()
        seen.setdefault(key, []).extend(v for v in values(call) if v is not None)
    ok = [v for v in seen[f"{topic}-1"]]
    assert ok == [f"ok-{i}".encode() for i in range(20)], "partition 1 in order, once"
    bad_calls = [values(c) for c in be.calls if f"{topic}-0" in c["records"]]
    assert bad_calls[:4] == [[f"bad-{i}".encode() for i in range(5)]] * 4, "retried in place"
    first_ok_done = next(i for i, c in enumerate(be.calls) if f"{topic}-1" in c["records"])
    # Partition 0 is invoked four times (three failures, then success) over ~2 s of backoff:
    # partition 1 was invoked before partition 0's last attempt, so it did not wait for them
    # (an index bound, not a timing one: a loaded machine only shifts both).
    bad_at = [i for i, c in enumerate(be.calls) if f"{topic}-0" in c["records"]]
    assert first_ok_done < bad_at[3], "partition 1 did not wait for partition 0's retries"
    assert await committed(bootstrap, group, topic, 2) == [5, 20]


async def test_latest_starts_a_new_group_after_the_records_already_there(
    tmp_path: Path, kafka_broker: TansuBroker
) -> None:
    # aiokafka's offset reset is "earliest" whatever the starting position (an expired
    # committed offset starts at the oldest record still held): LATEST is the source's own
    # seek to the end, made while the new partitions are paused.
    bootstrap = kafka_broker.bootstrap
    topic = await create_topic(bootstrap, partitions=2)
    await produce(bootstrap, topic, [b"old-1", b"old-2", b"old-3"])
    be = FakeBackend()
    source = {"bootstrap_servers": bootstrap, "topics": [topic], "starting_position": "LATEST"}
    produced: list[asyncio.Task[None]] = []

    def seen() -> list[bytes | None]:
        return [v for c in be.calls for v in values(c)]

    async with harness(tmp_path, source, be, batching_window_s=0.1) as h:
        states = h.source.states  # type: ignore[attr-defined]

        def done() -> bool:
            positioned = len(states) == 2 and not any(s.positioning for s in states.values())
            if positioned and not produced:
                produced.append(
                    asyncio.ensure_future(produce(bootstrap, topic, [b"new-1", b"new-2"]))
                )
            return len(seen()) >= 2

        await h.run_until(done)
    await produced[0]
    assert sorted(v or b"" for v in seen()) == [b"new-1", b"new-2"]
