"""The daemon as a subprocess on an SQS queue (moto_server): kill -9 mid-batch loses nothing,
and a poison message ends in the on-failure file without blocking the others."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from tests.integration.sqs_harness import FUNCTION_DIR, depth, make_queue, sqs_client
from tests.system.conftest import Daemon, wait_for
from triggerd.delivery.destinations import read_jsonl

pytestmark = [pytest.mark.system, pytest.mark.usefixtures("aws_env")]


def config(tmp: Path, url: str, endpoint: str, *, report: bool = False, extra: str = "") -> str:
    return f"""
[daemon]
state = "sqlite:///state/state.db"
listen = ""
control_listen = ""
shutdown_timeout_s = 5
log_format = "json"

[functions.recorder]
handler = "app.handler"
code = "{FUNCTION_DIR}"
timeout_s = 10
environment = {{ RECORD_FILE = "{tmp / "calls.jsonl"}", REPORT = "{int(report)}" }}

[[triggers]]
name = "orders"
function = "recorder"
source = {{ type = "sqs", queue_url = "{url}", endpoint_url = "{endpoint}", wait_time_s = 1 }}
batch_size = 5
maximum_concurrency = 2
{extra}
"""


def bodies(tmp: Path) -> list[str]:
    path = tmp / "calls.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        if line.endswith("}"):
            out += [json.loads(r["body"])["id"] for r in json.loads(line)["event"]["Records"]]
    return out


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def _setup(endpoint: str, count: int, visibility: str, extra: list[dict[str, Any]]) -> str:
    async with sqs_client(endpoint) as c:
        url = await make_queue(c, "sys", VisibilityTimeout=visibility)
        for i in range(count):
            await c.send_message(
                QueueUrl=url, MessageBody=json.dumps({"id": f"m{i:02}", "sleep": 0.3})
            )
        for body in extra:
            await c.send_message(QueueUrl=url, MessageBody=json.dumps(body))
        return url


async def _depth(endpoint: str, url: str) -> int:
    async with sqs_client(endpoint) as c:
        return await depth(c, url)


def test_kill9_mid_batch_loses_no_message(
    tmp_path: Path, moto_server: str, daemon_factory: Any
) -> None:
    url = run(_setup(moto_server, 30, "2", []))
    d: Daemon = daemon_factory(config(tmp_path, url, moto_server))
    d.start()
    wait_for(lambda: len(bodies(tmp_path)) >= 5, 30, "some invocations")
    d.kill9()
    assert len(set(bodies(tmp_path))) < 30, "killed while work was still pending"
    d.start()
    expected = {f"m{i:02}" for i in range(30)}
    wait_for(lambda: set(bodies(tmp_path)) == expected, 60, "every message")
    wait_for(lambda: run(_depth(moto_server, url)) == 0, 60, "every message deleted")
    assert d.terminate() == 0


def test_poison_message_goes_to_the_file_destination_and_does_not_block(
    tmp_path: Path, moto_server: str, daemon_factory: Any
) -> None:
    url = run(_setup(moto_server, 6, "1", [{"id": "poison", "fail": "always"}]))
    extra = (
        "maximum_retry_attempts = 1\nreport_batch_item_failures = true\n"
        'on_failure = { type = "file", path = "dlq.jsonl" }'
    )
    d: Daemon = daemon_factory(config(tmp_path, url, moto_server, report=True, extra=extra))
    d.start()
    dlq = tmp_path / "dlq.jsonl"
    wait_for(lambda: dlq.exists() and len(read_jsonl(dlq)) == 1, 40, "the poison in the DLQ file")
    wait_for(lambda: run(_depth(moto_server, url)) == 0, 60, "every message deleted")
    assert d.terminate() == 0
    [record] = read_jsonl(dlq)
    assert record["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert [json.loads(r["body"])["id"] for r in record["payload"]["Records"]] == ["poison"]
    assert {f"m{i:02}" for i in range(6)} <= set(bodies(tmp_path))
