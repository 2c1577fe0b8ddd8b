"""The daemon as a subprocess on an SQS queue (moto_server), killed with -9 while it bisects a
batch that failed because of one poison message: after a restart nothing is lost, every good
message succeeded and was deleted, and only the poison reached the on-failure file, once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.integration.sqs_harness import depth, make_queue, sqs_client
from tests.system.conftest import Daemon, wait_for
from tests.system.test_sqs_daemon import config, run
from triggerd.delivery.destinations import read_jsonl

pytestmark = [pytest.mark.system, pytest.mark.usefixtures("aws_env")]

GOOD = {f"g{i}" for i in range(9)}


async def _setup(endpoint: str) -> str:
    async with sqs_client(endpoint) as c:
        url = await make_queue(c, "poison", VisibilityTimeout="2")
        bodies = [{"id": g, "sleep": 0.5} for g in sorted(GOOD)]
        bodies.insert(4, {"id": "poison", "fail": "always"})
        for body in bodies:
            await c.send_message(QueueUrl=url, MessageBody=json.dumps(body))
        return url


async def _depth(endpoint: str, url: str) -> int:
    async with sqs_client(endpoint) as c:
        return await depth(c, url)


def invocations(tmp: Path) -> list[list[str]]:
    path = tmp / "calls.jsonl"
    if not path.exists():
        return []
    lines = [line for line in path.read_text().splitlines() if line.endswith("}")]
    return [[json.loads(r["body"])["id"] for r in json.loads(x)["event"]["Records"]] for x in lines]


def succeeded(tmp: Path) -> set[str]:
    return {i for ids in invocations(tmp) if "poison" not in ids for i in ids}


def test_kill9_mid_bisect_redelivers_and_only_the_poison_reaches_the_file(
    tmp_path: Path, moto_server: str, daemon_factory: Any
) -> None:
    url = run(_setup(moto_server))
    extra = (
        "batching_window_s = 2\nmaximum_retry_attempts = 1\n"
        'on_failure = { type = "file", path = "dlq.jsonl" }'
    )
    text = config(tmp_path, url, moto_server, extra=extra)
    text = text.replace("batch_size = 5", "batch_size = 10")
    text = text.replace("maximum_concurrency = 2", "maximum_concurrency = 1")
    d: Daemon = daemon_factory(text)
    d.start()
    # The whole batch failed, then the first half was invoked: the split is under way.
    wait_for(lambda: len(invocations(tmp_path)) >= 2, 40, "the batch to fail and be split")
    d.kill9()
    assert succeeded(tmp_path) != GOOD, "killed before every good message had succeeded"
    dlq = tmp_path / "dlq.jsonl"
    assert not dlq.exists() or read_jsonl(dlq) == []
    d.start()
    wait_for(lambda: run(_depth(moto_server, url)) == 0, 60, "every message deleted")
    assert d.terminate() == 0
    assert succeeded(tmp_path) == GOOD, "every good message succeeded (some maybe twice)"
    [record] = read_jsonl(dlq)
    assert [json.loads(r["body"])["id"] for r in record["payload"]["Records"]] == ["poison"]
    assert record["requestContext"]["condition"] == "RetryAttemptsExhausted"
