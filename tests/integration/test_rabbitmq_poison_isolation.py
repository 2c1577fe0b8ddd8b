"""Poison isolation on a RabbitMQ trigger (the machine's broker, the real pipeline): a batch of
ten with one poison message, `maximum_retry_attempts = 1` and a rabbitmq on-failure destination
queue: exactly the poison message is published there, once; the nine good messages each succeed
once and are acked. Switched off, all ten reach the destination without ever succeeding. With
`dead_letter_after_attempts` instead, only the poison message is dead-lettered by the broker."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from tests.fakes import FakeBackend
from tests.integration.rabbitmq_support import bodies, broker, harness, poison
from tests.integration.trigger_harness import Harness

pytestmark = pytest.mark.integration

GOOD = [f"good-{i}".encode() for i in range(9)]


async def run_batch_of_ten(
    rabbitmq_url: str, tmp_path: Path, succeeding: int, **trigger: Any
) -> tuple[FakeBackend, list[dict[str, Any]], int]:
    """Publish the batch, run the trigger until the destination took a record and `succeeding`
    messages succeeded, then stop it (the batch in flight finishes and acks);
    returns the backend, the destination's records and the messages left in the source queue."""
    async with broker(rabbitmq_url) as b:
        q, dest = await b.queue(), await b.queue("dest")
        for i, body in enumerate(GOOD[:4] + [b"poison"] + GOOD[4:]):
            await b.publish(q, body, message_id=f"m{i}")
        backend = FakeBackend(poison)
        async with harness(
            tmp_path,
            {"url": rabbitmq_url, "queue": q, "reconnect_base_delay_s": 0.1},
            backend,
            batch_size=10,
            batching_window_s=1,
            maximum_concurrency=1,
            maximum_retry_attempts=1,
            on_failure={"type": "rabbitmq", "url": rabbitmq_url, "routing_key": dest},
            **trigger,
        ) as h:
            await h.run_until(lambda: dead_lettered(h) and h.succeeded == succeeding, timeout=30)
        records = [json.loads(m.body) for m in await b.wait_drain(dest, 1)]
        records += [json.loads(m.body) for m in await b.drain(dest)]
        left = len(await b.drain(q))
    return backend, records, left


def dead_lettered(h: Harness) -> bool:
    """The destination confirmed a record (the pipeline then acks its messages)."""
    counter = h.metrics.dead_lettered.labels("t", "RetryAttemptsExhausted")
    return bool(counter._value.get())


def payload_bodies(record: dict[str, Any]) -> list[bytes]:
    return [
        base64.b64decode(m["data"])
        for msgs in record["payload"]["rmqMessagesByQueue"].values()
        for m in msgs
    ]


async def test_only_the_poison_message_reaches_the_destination(
    rabbitmq_url: str, tmp_path: Path
) -> None:
    backend, records, left = await run_batch_of_ten(rabbitmq_url, tmp_path, succeeding=9)
    [record] = records
    assert payload_bodies(record) == [b"poison"], "exactly the poison message, exactly once"
    assert record["RabbitMQBatchInfo"]["itemIdentifiers"] == ["m4"]
    assert record["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 2
    succeeded = [b for c in backend.calls if b"poison" not in bodies(c) for b in bodies(c)]
    assert sorted(succeeded) == GOOD, "each good message succeeded exactly once"
    assert [b"poison"] in [bodies(c) for c in backend.calls], "it failed on its own"
    assert left == 0, "the good messages and the poison were all acked"


async def test_switched_off_the_good_messages_fail_with_the_poison(
    rabbitmq_url: str, tmp_path: Path
) -> None:
    backend, records, left = await run_batch_of_ten(
        rabbitmq_url, tmp_path, succeeding=0, bisect_batch_on_function_error=False
    )
    sent = sorted(b for r in records for b in payload_bodies(r))
    assert sent == sorted([*GOOD, b"poison"]), "the whole batch reached the destination"
    assert all(b"poison" in bodies(c) for c in backend.calls), "no good message succeeded"
    assert left == 0


async def test_dead_lettering_by_the_broker_takes_only_the_poison_message(
    rabbitmq_url: str, tmp_path: Path
) -> None:
    """`dead_letter_after_attempts` without a destination: the failed batch is bisected too, so
    only the poison message is rejected into the queue's dead-letter exchange."""
    async with broker(rabbitmq_url) as b:
        dlx = await b.exchange("dlx")
        parked = await b.queue("parked")
        await (await b.channel.get_queue(parked)).bind(dlx)
        q = await b.queue(arguments={"x-dead-letter-exchange": dlx})
        for i, body in enumerate(GOOD[:4] + [b"poison"] + GOOD[4:]):
            await b.publish(q, body, message_id=f"m{i}")
        backend = FakeBackend(poison)
        async with harness(
            tmp_path,
            {"url": rabbitmq_url, "queue": q, "dead_letter_after_attempts": 2},
            backend,
            batch_size=10,
            batching_window_s=1,
            maximum_concurrency=1,
        ) as h:
            await h.run_until(lambda: h.succeeded == 9 and failed_alone(backend) == 2)
            dead = await b.wait_drain(parked, 1)
            dead += await b.drain(parked)
        left = await b.drain(q)
    assert [m.body for m in dead] == [b"poison"]
    succeeded = [x for c in backend.calls if b"poison" not in bodies(c) for x in bodies(c)]
    assert sorted(succeeded) == GOOD
    assert left == []


def failed_alone(backend: FakeBackend) -> int:
    """Invocations of the poison message on its own."""
    return sum(1 for c in backend.calls if bodies(c) == [b"poison"])
