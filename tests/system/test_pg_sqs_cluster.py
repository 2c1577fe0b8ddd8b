"""Two daemons (subprocesses) on one PostgreSQL state store (a fresh database) and one SQS
queue (moto_server), with the same config: SQS's competing consumers share the messages
between them (each invoked once while both run), and after kill -9 of one, the messages it
had received and not deleted come back after the visibility timeout and are invoked by the
other (at least once: only those run twice)."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.sqs_harness import FUNCTION_DIR, depth, make_queue, sqs_client
from tests.pg_state import fresh_database
from tests.system.conftest import Daemon, free_port, wait_for
from tests.system.pg_cluster import daemon_table, json_lines, start_all

pytestmark = [pytest.mark.system, pytest.mark.integration, pytest.mark.usefixtures("aws_env")]

COUNT = 40
BATCH = 5
CONCURRENCY = 2


def config(url: str, name: str, port: int, tmp: Path, queue: str, endpoint: str) -> str:
    return f"""
{daemon_table(url, tmp / name / "work", port)}

[functions.recorder]
handler = "app.handler"
code = "{FUNCTION_DIR}"
timeout_s = 10
environment = {{ RECORD_FILE = "{tmp / f"{name}.calls.jsonl"}", REPORT = "0" }}

[[triggers]]
name = "orders"
function = "recorder"
batch_size = {BATCH}
maximum_concurrency = {CONCURRENCY}
batching_window_s = 0

[triggers.source]
type = "sqs"
queue_url = "{queue}"
endpoint_url = "{endpoint}"
wait_time_s = 1
# A modest read-ahead, so that the first daemon to poll does not take the whole backlog.
max_pollers = 1
prefetch = 10  # the least: one ReceiveMessage's worth
"""


def ids(path: Path) -> list[str]:
    return [json.loads(r["body"])["id"] for c in json_lines(path) for r in c["event"]["Records"]]


async def _setup(endpoint: str) -> str:
    async with sqs_client(endpoint) as c:
        return await make_queue(c, "cluster", VisibilityTimeout="3")


async def _send(endpoint: str, url: str) -> None:
    async with sqs_client(endpoint) as c:
        for i in range(COUNT):
            await c.send_message(
                QueueUrl=url, MessageBody=json.dumps({"id": f"m{i:02}", "sleep": 0.5})
            )


async def _depth(endpoint: str, url: str) -> int:
    async with sqs_client(endpoint) as c:
        return await depth(c, url)


@pytest.fixture
def pg_url() -> Iterator[str]:
    with fresh_database("triggerd_sqs_cluster") as url:
        yield url


def test_two_daemons_share_an_sqs_queue_and_the_survivor_gets_a_killed_ones_messages(
    tmp_path: Path, pg_url: str, moto_server: str
) -> None:
    queue = asyncio.run(_setup(moto_server))
    daemons: dict[str, Daemon] = {}
    for name in "ab":
        (tmp_path / name).mkdir()
        text = config(pg_url, name, free_port(), tmp_path, queue, moto_server)
        daemons[name] = Daemon(tmp_path / name, text)
    calls = {n: tmp_path / f"{n}.calls.jsonl" for n in "ab"}
    try:
        start_all(daemons.values())
        asyncio.run(_send(moto_server, queue))  # both daemons poll by now
        wait_for(lambda: all(len(ids(p)) >= BATCH for p in calls.values()), 60, "both to invoke")
        daemons["a"].kill9()
        by_a = ids(calls["a"])
        assert len(set(by_a)) < COUNT, "killed while messages were pending"
        before_kill: dict[str, Any] = Counter(by_a + ids(calls["b"]))
        # While both ran, no message went to both (SQS hides a received one).
        assert set(before_kill.values()) == {1}
        expected = {f"m{i:02}" for i in range(COUNT)}
        wait_for(
            lambda: set(ids(calls["a"]) + ids(calls["b"])) == expected,
            60,
            "every message, by one daemon or the other",
        )
        wait_for(lambda: asyncio.run(_depth(moto_server, queue)) == 0, 30, "all deleted")
        time.sleep(0.5)  # a late duplicate would show up now
        counts = Counter(by_a + ids(calls["b"]))
        twice = {m for m, n in counts.items() if n > 1}
        # Only messages a had received and not deleted when it died run again, by b.
        assert twice <= set(by_a)
        assert len(twice) <= BATCH * CONCURRENCY
        assert max(counts.values()) <= 2
        assert daemons["b"].terminate() == 0
    finally:
        for d in daemons.values():
            d.stop()
