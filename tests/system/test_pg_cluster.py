"""Two daemons (subprocesses) sharing one PostgreSQL state store (a fresh database on the
machine's server), with the same config: Invoke API `Event` calls posted to both are each
invoked once, by one daemon or the other; both compete for one RabbitMQ queue; after kill -9
of one daemon, the events it had claimed are invoked by the other once their lease
(`lease_timeout_s`, short here) has run out, and the messages it had taken are redelivered to
the other. (Two daemons in one Kafka consumer group: tests/system/test_kafka_daemon.py.)"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.integration.rabbitmq_support import broker, unique
from tests.pg_state import fresh_database
from tests.system.conftest import FUNCTIONS, Daemon, free_port, wait_for
from tests.system.pg_cluster import daemon_table, start_all
from tests.system.test_invoke_event_kill import invoke_event

pytestmark = [pytest.mark.system, pytest.mark.integration]

INVOKE_FUNCTION = Path(__file__).resolve().parents[1] / "integration" / "functions" / "invoke_api"
LEASE_S = 3
MESSAGES = [f"msg-{i:03}" for i in range(80)]


def config(url: str, name: str, port: int, tmp: Path, amqp: str, queue: str) -> str:
    daemon = daemon_table(url, tmp / name / "work", port, lease_timeout_s=LEASE_S)
    return f"""
{daemon}

[functions.recorder]
handler = "app.handler"
code = "{INVOKE_FUNCTION}"
timeout_s = 10
reserved_concurrency = 2
environment = {{ DAEMON = "{name}" }}

[functions.consumer]
handler = "app.handler"
code = "{FUNCTIONS / "recorder"}"
timeout_s = 10
reserved_concurrency = 2
environment = {{ RECORD_FILE = "{tmp / f"{name}.rmq.jsonl"}", SLEEP_S = "0.5" }}

[[triggers]]
name = "orders"
function = "consumer"
batch_size = 5
batching_window_s = 0
maximum_concurrency = 2

[triggers.source]
type = "rabbitmq"
url = "{amqp}"
queue = "{queue}"
prefetch_count = 10
reconnect_base_delay_s = 0.2
"""


def records(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def consumed(path: Path) -> list[str]:
    out = []
    for doc in records(path):
        event = doc["event"]
        assert isinstance(event, dict)
        for msgs in event["rmqMessagesByQueue"].values():
            out += [base64.b64decode(m["data"]).decode() for m in msgs]
    return out


@pytest.fixture
def pg_url() -> Iterator[str]:
    with fresh_database("triggerd_cluster") as url:
        yield url


async def declare(amqp: str, queue: str) -> None:
    async with broker(amqp) as b:
        await b.channel.declare_queue(queue, durable=True)


async def publish(amqp: str, queue: str) -> None:
    async with broker(amqp) as b:
        for body in MESSAGES:
            await b.publish(queue, body.encode())


async def leftovers(amqp: str, queue: str) -> list[bytes]:
    async with broker(amqp) as b:
        b.owns(queue)
        return [m.body for m in await b.drain(queue)]


def test_two_daemons_share_the_queue_and_a_broker_and_take_over_from_a_killed_one(
    tmp_path: Path, pg_url: str, rabbitmq_url: str
) -> None:
    queue = unique("cluster")
    asyncio.run(declare(rabbitmq_url, queue))
    ports = {"a": free_port(), "b": free_port()}
    # trust authentication ignores the password: here only to be kept out of the output
    url = pg_url.replace("postgres@", "postgres:s3cr3t-pw@")
    daemons: dict[str, Daemon] = {}
    for name, port in ports.items():
        (tmp_path / name).mkdir()
        text = config(url, name, port, tmp_path, rabbitmq_url, queue)
        daemons[name] = Daemon(tmp_path / name, text)
    try:
        start_all(daemons.values())

        # 1. Events posted to both daemons: each invoked exactly once, by either.
        shared = tmp_path / "shared.jsonl"
        with ThreadPoolExecutor(8) as pool:
            statuses = list(
                pool.map(
                    lambda i: invoke_event(
                        ports["ab"[i % 2]], {"id": i, "record": str(shared), "sleep": 0.02}
                    ),
                    range(80),
                )
            )
        assert statuses == [202] * 80
        wait_for(lambda: len(records(shared)) >= 80, 60, "80 events to be invoked")
        time.sleep(0.5)  # a duplicate would show up now
        got = records(shared)
        counts = Counter(int(str(r["id"])) for r in got)
        assert sorted(counts) == list(range(80))
        assert set(counts.values()) == {1}
        assert {str(r["daemon"]) for r in got} == {"a", "b"}

        # 2. Slow events on the queue, messages on the broker; both daemons take some.
        slow = tmp_path / "slow.jsonl"
        asyncio.run(publish(rabbitmq_url, queue))
        for i in range(8):
            assert invoke_event(ports["a"], {"id": i, "record": str(slow), "sleep": 1.0}) == 202
        rmq = {n: tmp_path / f"{n}.rmq.jsonl" for n in "ab"}
        wait_for(lambda: all(consumed(p) for p in rmq.values()), 30, "both to consume")

        # 3. kill -9 of a: b invokes a's claimed events after the lease, and gets the
        # messages a had taken and not acknowledged.
        killed_at = time.monotonic()
        daemons["a"].kill9()
        by_a = consumed(rmq["a"])
        assert len(set(by_a)) < len(MESSAGES), "killed while messages were pending"
        wait_for(
            lambda: {int(str(r["id"])) for r in records(slow)} == set(range(8)),
            60,
            "every event to be invoked after the kill",
        )
        taken_over = time.monotonic() - killed_at
        assert any(r["daemon"] == "b" for r in records(slow)), "b invoked nothing"
        # Only events a was invoking when it died may run twice (at least once).
        twice = [i for i, n in Counter(int(str(r["id"])) for r in records(slow)).items() if n > 1]
        assert len(twice) <= 2
        assert taken_over >= LEASE_S - 1  # a's claims waited for their lease
        wait_for(
            lambda: set(by_a + consumed(rmq["b"])) >= set(MESSAGES),
            60,
            "every message, by one daemon or the other",
        )
        # Only what a had taken and not acknowledged is delivered twice (its prefetch).
        assert len(by_a) + len(consumed(rmq["b"])) - len(MESSAGES) <= 10
        assert daemons["b"].terminate() == 0
        for d in daemons.values():
            assert "s3cr3t-pw" not in d.stdout() + d.stderr()
            assert "state postgresql://postgres@127.0.0.1" in d.stdout()
    finally:
        for d in daemons.values():
            d.stop()
        left = asyncio.run(leftovers(rabbitmq_url, queue))
    assert left == [], "every message was acknowledged"
