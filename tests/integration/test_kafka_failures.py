"""Kafka failure handling against a real broker: a poison record ends in the destination topic
(AWS's Kafka failure record, with the batch) while the rest of its partition flows; partial
batch responses retry from the first failed offset; the destination works with idempotence
off (the test broker has no InitProducerId)."""

from __future__ import annotations

import json
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
    read_topic,
    unique,
    values,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


async def test_a_poison_record_ends_in_the_destination_topic_and_its_partition_flows(
    tmp_path: Path, kafka_broker: TansuBroker
) -> None:
    bootstrap = kafka_broker.bootstrap
    topic = await create_topic(bootstrap)
    dlt = await create_topic(bootstrap, prefix="dlt")
    group = unique("g")
    sent = [f"r{i}".encode() for i in range(10)]
    sent[4] = b"poison"
    await produce(bootstrap, topic, sent)

    def respond(event: dict[str, Any]) -> Any:
        if b"poison" in values(event):
            raise ValueError("cannot handle poison")
        return None

    be = FakeBackend(respond)
    source = {
        "bootstrap_servers": bootstrap,
        "topics": [topic],
        "group_id": group,
        "starting_position": "TRIM_HORIZON",
    }
    on_failure = {"type": "kafka", "bootstrap_servers": bootstrap, "topic": dlt}
    async with harness(
        tmp_path,
        source,
        be,
        on_failure=on_failure,
        batch_size=4,
        batching_window_s=0,
        maximum_retry_attempts=1,
        bisect_batch_on_function_error=True,
        retry_base_delay_s=0.05,
    ) as h:
        await h.run_until(lambda: h.succeeded >= 9)
    [dead] = await read_topic(bootstrap, dlt, 1)
    assert dead.key == f"{topic}-0".encode()
    record = json.loads(dead.value)
    assert record["requestContext"]["condition"] == "RetryAttemptsExhausted"
    info = record["KafkaBatchInfo"]
    assert info["batchSize"] == 1 and info["bootstrapServers"] == bootstrap
    assert info["recordsInfo"][f"{topic}-0"]["firstRecordOffset"] == "4"
    assert values(record["payload"]) == [b"poison"]
    delivered = [v for c in be.calls for v in values(c) if v != b"poison"]
    assert sorted(set(delivered)) == sorted(v for v in sent if v != b"poison")
    assert await committed(bootstrap, group, topic, 1) == [10]


async def test_partial_batch_response_retries_from_the_first_failed_offset(
    tmp_path: Path, kafka_broker: TansuBroker
) -> None:
    bootstrap = kafka_broker.bootstrap
    topic = await create_topic(bootstrap)
    await produce(bootstrap, topic, [f"r{i}".encode() for i in range(6)])
    failed_once: list[bool] = []

    def respond(event: dict[str, Any]) -> Any:
        [(key, records)] = event["records"].items()
        if not failed_once and len(records) == 6:
            failed_once.append(True)
            return {"batchItemFailures": [{"itemIdentifier": {"partition": key, "offset": 3}}]}
        return {"batchItemFailures": []}

    be = FakeBackend(respond)
    source = {
        "bootstrap_servers": bootstrap,
        "topics": [topic],
        "starting_position": "TRIM_HORIZON",
    }
    async with harness(
        tmp_path,
        source,
        be,
        batch_size=6,
        batching_window_s=0.5,
        report_batch_item_failures=True,
        retry_base_delay_s=0.05,
    ) as h:
        await h.run_until(lambda: h.succeeded >= 6)
    assert [values(c) for c in be.calls] == [
        [f"r{i}".encode() for i in range(6)],
        [f"r{i}".encode() for i in range(3, 6)],
    ]
