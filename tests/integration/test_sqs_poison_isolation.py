"""Poison isolation on an SQS trigger (moto_server, the daemon with a local function): with
triggerd's retry limit and an on-failure destination, a batch of ten with one poison message
sends exactly the poison there, once; the nine good messages each succeed once and are deleted.
Switched off, the whole batch fails together and every message ends in the destination."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.integration.sqs_harness import (
    calls,
    depth,
    make_queue,
    running_daemon,
    send_json,
    sqs_client,
    wait_until_async,
)
from triggerd.delivery.destinations import read_jsonl

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("aws_env")]

GOOD = [f"g{i}" for i in range(9)]
BATCH = (
    [{"id": g} for g in GOOD[:4]]
    + [{"id": "poison", "fail": "always"}]
    + [{"id": g} for g in GOOD[4:]]
)


def src(url: str, endpoint: str) -> dict[str, Any]:
    return {"type": "sqs", "queue_url": url, "endpoint_url": endpoint, "wait_time_s": 1}


def call_ids(call: dict[str, Any]) -> list[str]:
    return [json.loads(r["body"])["id"] for r in call["event"]["Records"]]


def payload_ids(record: dict[str, Any]) -> list[str]:
    return [json.loads(r["body"])["id"] for r in record["payload"]["Records"]]


async def run_batch_of_ten(tmp_path: Path, endpoint: str, **trigger: Any) -> list[Any]:
    """Send the batch, run the daemon until the queue is empty; the destination's records."""
    dlq = tmp_path / "dlq.jsonl"
    async with sqs_client(endpoint) as c:
        url = await make_queue(c, VisibilityTimeout="1")
        await send_json(c, url, BATCH)
        async with running_daemon(
            tmp_path,
            src(url, endpoint),
            batch_size=10,
            batching_window_s=1,
            maximum_concurrency=1,
            maximum_retry_attempts=1,
            on_failure={"type": "file", "path": str(dlq)},
            **trigger,
        ):

            async def empty() -> bool:
                return await depth(c, url) == 0

            await wait_until_async(empty, 45, "every message deleted")
    return read_jsonl(dlq)


async def test_only_the_poison_message_reaches_the_destination(
    tmp_path: Path, moto_server: str
) -> None:
    records = await run_batch_of_ten(tmp_path, moto_server)
    [record] = records
    assert payload_ids(record) == ["poison"], "exactly the poison message, exactly once"
    assert record["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 2
    invocations = [call_ids(c) for c in calls(tmp_path / "calls.jsonl")]
    succeeded = [i for ids in invocations if "poison" not in ids for i in ids]
    assert sorted(succeeded) == GOOD, "each good message succeeded exactly once"
    assert ["poison"] in invocations, "the poison failed on its own before the destination"


async def test_switched_off_the_good_messages_fail_with_the_poison(
    tmp_path: Path, moto_server: str
) -> None:
    records = await run_batch_of_ten(tmp_path, moto_server, bisect_batch_on_function_error=False)
    sent = sorted(i for r in records for i in payload_ids(r))
    assert sent == sorted([*GOOD, "poison"]), "the whole batch reached the destination"
    invocations = [call_ids(c) for c in calls(tmp_path / "calls.jsonl")]
    assert all("poison" in ids for ids in invocations), "no good message ever succeeded"


async def test_fifo_group_keeps_its_order_around_the_isolated_poison(
    tmp_path: Path, moto_server: str
) -> None:
    dlq = tmp_path / "dlq.jsonl"
    async with sqs_client(moto_server) as c:
        url = await make_queue(c, fifo=True, VisibilityTimeout="1")
        for body in [{"id": "a1"}, {"id": "poison", "fail": "always"}, {"id": "a2"}, {"id": "a3"}]:
            await send_json(c, url, [body], MessageGroupId="A")
        for body in [{"id": "b1"}, {"id": "b2"}]:
            await send_json(c, url, [body], MessageGroupId="B")
        async with running_daemon(
            tmp_path,
            {**src(url, moto_server), "nack_visibility_timeout_s": 0},
            batch_size=10,
            maximum_concurrency=1,
            maximum_retry_attempts=1,
            on_failure={"type": "file", "path": str(dlq)},
        ):

            async def empty() -> bool:
                return await depth(c, url) == 0

            await wait_until_async(empty, 45, "every message deleted")
    [record] = read_jsonl(dlq)
    assert payload_ids(record) == ["poison"]
    invocations = [call_ids(c) for c in calls(tmp_path / "calls.jsonl")]
    ok = [i for ids in invocations if "poison" not in ids for i in ids]
    assert sorted(ok) == ["a1", "a2", "a3", "b1", "b2"], invocations
    group_a = [i for i in ok if i.startswith("a")]
    assert group_a == ["a1", "a2", "a3"], invocations
    last_poison = max(n for n, ids in enumerate(invocations) if "poison" in ids)
    first_a2 = min(n for n, ids in enumerate(invocations) if "a2" in ids and "poison" not in ids)
    assert first_a2 > last_poison, "a2 ran only after the poison had left group A"
