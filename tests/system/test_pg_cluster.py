"""Two daemons (subprocesses) sharing one PostgreSQL state store (a fresh database on the
machine's server): Invoke API `Event` calls posted to both are each invoked once, by one
daemon or the other; after kill -9 of one daemon, the events it had claimed are invoked by
the other once their lease (`lease_timeout_s`, short here) has run out. And two daemons as
competing consumers of one RabbitMQ queue, one killed mid-batch. (Two daemons in one Kafka
consumer group: tests/system/test_kafka_daemon.py.)"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.integration.rabbitmq_support import broker, unique
from tests.pg_state import fresh_database
from tests.system.conftest import FUNCTIONS, Daemon, free_port, wait_for
from tests.system.test_invoke_event_kill import invoke_event

pytestmark = pytest.mark.system

FUNCTION = Path(__file__).resolve().parents[1] / "integration" / "functions" / "invoke_api"
LEASE_S = 3


def config(url: str, name: str, port: int, work: Path) -> str:
    return f"""
[daemon]
state = "{url}"
listen = ""
control_listen = "127.0.0.1:{port}"
work_dir = "{work}"
shutdown_timeout_s = 5
lease_timeout_s = {LEASE_S}
log_format = "json"

[functions.recorder]
handler = "app.handler"
code = "{FUNCTION}"
timeout_s = 10
reserved_concurrency = 2
environment = {{ DAEMON = "{name}" }}
"""


def start_all(daemons: Iterable[Daemon]) -> None:
    """Start the daemons side by side (each start waits for its daemon to be ready; the
    first daemons of a test session install the runtimes' boto3, slow on a loaded machine)."""
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda d: d.start(ready_timeout=120), daemons))


def records(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    with fresh_database("triggerd_cluster") as url:
        yield url


def test_two_daemons_share_the_async_queue_and_take_over_a_killed_one_s_claims(
    tmp_path: Path, pg_url: str
) -> None:
    ports = {"a": free_port(), "b": free_port()}
    daemons: dict[str, Daemon] = {}
    for name, port in ports.items():
        (tmp_path / name).mkdir()
        # trust authentication ignores the password: here only to be kept out of the output
        url = pg_url.replace("postgres@", "postgres:s3cr3t-pw@")
        daemons[name] = Daemon(tmp_path / name, config(url, name, port, tmp_path / name / "work"))
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

        # 2. Slow events; daemon a is killed holding claims: b invokes them after the lease.
        slow = tmp_path / "slow.jsonl"
        for i in range(12):
            assert invoke_event(ports["a"], {"id": i, "record": str(slow), "sleep": 1.0}) == 202
        time.sleep(0.5)  # both daemons have claimed some
        killed_at = time.monotonic()
        daemons["a"].kill9()
        wait_for(
            lambda: {int(str(r["id"])) for r in records(slow)} == set(range(12)),
            60,
            "every event to be invoked after the kill",
        )
        taken_over = time.monotonic() - killed_at
        by_b_late = [r for r in records(slow) if r["daemon"] == "b"]
        assert by_b_late, "b invoked nothing"
        # Only events a was invoking when it died may run twice (at least once).
        twice = [i for i, n in Counter(int(str(r["id"])) for r in records(slow)).items() if n > 1]
        assert len(twice) <= 2
        assert taken_over >= LEASE_S - 1  # a's claims waited for their lease
        assert daemons["b"].terminate() == 0
        for d in daemons.values():
            assert "s3cr3t-pw" not in d.stdout() + d.stderr()
            assert "state postgresql://postgres@127.0.0.1" in d.stdout()
    finally:
        for d in daemons.values():
            d.stop()


def rabbit_config(url: str, work: Path, amqp: str, queue: str, record: Path) -> str:
    return f"""
[daemon]
state = "{url}"
listen = ""
control_listen = ""
work_dir = "{work}"
shutdown_timeout_s = 5
log_format = "json"

[functions.recorder]
handler = "app.handler"
code = "{FUNCTIONS / "recorder"}"
timeout_s = 10
reserved_concurrency = 2
environment = {{ RECORD_FILE = "{record}", SLEEP_S = "0.2" }}

[[triggers]]
name = "orders"
function = "recorder"
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


def rabbit_delivered(path: Path) -> list[str]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        if line.endswith("}"):
            for msgs in json.loads(line)["event"]["rmqMessagesByQueue"].values():
                out += [base64.b64decode(m["data"]).decode() for m in msgs]
    return out


def test_two_daemons_compete_for_one_rabbitmq_queue_and_one_killed_loses_nothing(
    tmp_path: Path, pg_url: str, rabbitmq_url: str
) -> None:
    queue = unique("cluster")
    sent = [f"msg-{i:03}" for i in range(80)]

    async def declare() -> None:
        async with broker(rabbitmq_url) as b:
            await b.channel.declare_queue(queue, durable=True)

    async def publish() -> None:
        async with broker(rabbitmq_url) as b:
            for body in sent:
                await b.publish(queue, body.encode())

    async def leftovers() -> list[bytes]:
        async with broker(rabbitmq_url) as b:
            b.owns(queue)
            return [m.body for m in await b.drain(queue)]

    asyncio.run(declare())
    daemons = {}
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        text = rabbit_config(
            pg_url, tmp_path / name / "work", rabbitmq_url, queue, tmp_path / f"{name}.jsonl"
        )
        daemons[name] = Daemon(tmp_path / name, text)
    try:
        start_all(daemons.values())
        asyncio.run(publish())
        wait_for(
            lambda: all(rabbit_delivered(tmp_path / f"{n}.jsonl") for n in "ab"),
            30,
            "both daemons to consume",
        )
        daemons["a"].kill9()
        by_a = rabbit_delivered(tmp_path / "a.jsonl")
        assert len(set(by_a)) < len(sent), "killed while work was pending"
        wait_for(
            lambda: set(by_a + rabbit_delivered(tmp_path / "b.jsonl")) >= set(sent),
            60,
            "every message, by one daemon or the other",
        )
        by_b = rabbit_delivered(tmp_path / "b.jsonl")
        assert by_b and by_a
        # Only what a had taken and not acked when it died is delivered twice.
        assert len(by_a) + len(by_b) - len(sent) <= 10  # a's prefetch
        assert daemons["b"].terminate() == 0
    finally:
        for d in daemons.values():
            d.stop()
        left = asyncio.run(leftovers())
    assert left == [], "everything was acked"
