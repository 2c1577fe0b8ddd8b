"""`triggerd run` with a rabbitmq trigger, killed with SIGKILL while it bisects a batch that
failed because of one poison message: after a restart every good message succeeded and was
acked, and only the poison reached the on-failure file."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import pytest

from tests.integration.rabbitmq_support import broker, unique
from tests.system.conftest import Daemon, wait_for
from tests.system.test_rabbitmq_daemon import config, delivered
from triggerd.delivery.destinations import read_jsonl

pytestmark = [pytest.mark.system, pytest.mark.integration]

GOOD = [f"good-{i}" for i in range(9)]


def test_kill9_mid_bisect_redelivers_and_only_the_poison_reaches_the_file(
    tmp_path: Path, daemon_factory: Any, rabbitmq_url: str
) -> None:
    queue = unique("poison")

    async def publish() -> None:
        async with broker(rabbitmq_url) as b:
            await b.channel.declare_queue(queue, durable=True)
            for body in [*GOOD[:4], "poison", *GOOD[4:]]:
                await b.publish(queue, body.encode())

    async def leftovers() -> list[bytes]:
        async with broker(rabbitmq_url) as b:
            b.owns(queue)
            return [m.body for m in await b.drain(queue)]

    text = config(tmp_path, rabbitmq_url, queue)
    text = text.replace('SLEEP_S = "0.2"', 'SLEEP_S = "0.5"')
    text = text.replace("batch_size = 5", "batch_size = 10")
    text = text.replace("batching_window_s = 0", "batching_window_s = 1")
    text = text.replace("maximum_concurrency = 2", "maximum_concurrency = 1")
    text += 'maximum_retry_attempts = 1\non_failure = { type = "file", path = "dlq.jsonl" }\n'
    dlq = tmp_path / "dlq.jsonl"
    asyncio.run(publish())
    try:
        d: Daemon = daemon_factory(text)
        d.start()
        # The whole batch failed (not recorded), then a first half succeeded: mid-split.
        wait_for(lambda: len(delivered(tmp_path)) >= 1, 40, "the first half to succeed")
        d.kill9()
        assert set(delivered(tmp_path)) != set(GOOD), "killed before every good one succeeded"
        assert not dlq.exists() or read_jsonl(dlq) == []
        d.start()
        wait_for(lambda: dlq.exists() and len(read_jsonl(dlq)) == 1, 60, "the poison's record")
        wait_for(lambda: set(delivered(tmp_path)) == set(GOOD), 30, "every good message")
        assert d.terminate() == 0
    finally:
        left = asyncio.run(leftovers())
    assert left == [], "everything was acked"
    [record] = read_jsonl(dlq)
    bodies = [
        base64.b64decode(m["data"])
        for ms in record["payload"]["rmqMessagesByQueue"].values()
        for m in ms
    ]
    assert bodies == [b"poison"]
