"""A reload while RabbitMQ messages flow: the unchanged queue trigger delivers every message
once, and a removed one finishes and acknowledges its batches in flight before it stops."""

from __future__ import annotations

import asyncio
import base64
import json
import signal
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.rabbitmq_support import broker, unique
from tests.system.conftest import FUNCTIONS, Daemon, free_port, wait_for

pytestmark = [pytest.mark.system, pytest.mark.integration]


def rabbitmq(name: str, url: str, queue: str) -> str:
    return f"""
[[triggers]]
name = "{name}"
function = "recorder"
source = {{ type = "rabbitmq", url = "{url}", queue = "{queue}" }}
batch_size = 5
batching_window_s = 0
maximum_concurrency = 2
"""


def config(tmp: Path, triggers: str) -> str:
    return f"""
[daemon]
state = "sqlite:///state/state.db"
listen = "127.0.0.1:{free_port()}"
shutdown_timeout_s = 10
log_format = "json"
control_listen = ""
control_on_public = true

[functions.recorder]
handler = "app.handler"
code = "{FUNCTIONS / "recorder"}"
timeout_s = 10
environment = {{ RECORD_FILE = "{tmp / "calls.jsonl"}", SLEEP_S = "0.2" }}
{triggers}
"""


def delivered(tmp: Path, queue: str) -> list[str]:
    path = tmp / "calls.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        if not line.endswith("}"):
            continue
        by_queue = json.loads(line)["event"].get("rmqMessagesByQueue", {})
        for key, messages in by_queue.items():
            if key.split("::")[0] == queue:
                out += [base64.b64decode(m["data"]).decode() for m in messages]
    return out


def test_reload_keeps_an_unchanged_queue_trigger_and_drains_a_removed_one(
    tmp_path: Path, daemon_factory: Callable[[str], Daemon], rabbitmq_url: str
) -> None:
    steady_q, removed_q = unique("reload-steady"), unique("reload-removed")
    steady = [f"s-{i:03}" for i in range(60)]
    removed = [f"r-{i:03}" for i in range(30)]

    async def publish(queue: str, bodies: list[str]) -> None:
        async with broker(rabbitmq_url) as b:
            await b.channel.declare_queue(queue, durable=True)
            for body in bodies:
                await b.publish(queue, body.encode())

    async def leftovers(queue: str) -> list[str]:
        async with broker(rabbitmq_url) as b:
            b.owns(queue)
            return [m.body.decode() for m in await b.drain(queue)]

    asyncio.run(publish(steady_q, steady[:30]))
    asyncio.run(publish(removed_q, removed))
    (tmp_path / "inbox").mkdir()
    both = rabbitmq("steady", rabbitmq_url, steady_q) + rabbitmq("gone", rabbitmq_url, removed_q)
    d = daemon_factory(config(tmp_path, both))
    left: list[str] = []
    try:
        d.start(ready_timeout=90)
        wait_for(
            lambda: (
                len(delivered(tmp_path, removed_q)) >= 5 and len(delivered(tmp_path, steady_q)) >= 5
            ),
            30,
            "batches of both queues",
        )
        d.config.write_text(config(tmp_path, rabbitmq("steady", rabbitmq_url, steady_q)))
        assert d.proc is not None
        d.proc.send_signal(signal.SIGHUP)
        asyncio.run(publish(steady_q, steady[30:]))
        wait_for(lambda: any(e.get("event") == "daemon.reloaded" for e in d.events()), 30, "reload")
        wait_for(lambda: set(delivered(tmp_path, steady_q)) == set(steady), 60, "every message")
        assert d.terminate() == 0
    finally:
        left = asyncio.run(leftovers(removed_q))
        asyncio.run(leftovers(steady_q))
    assert Counter(delivered(tmp_path, steady_q)) == dict.fromkeys(steady, 1)
    gone = delivered(tmp_path, removed_q)
    assert len(gone) < len(removed), "the removed trigger stopped before the queue was empty"
    assert Counter(gone) == dict.fromkeys(gone, 1)
    # Its batches in flight were acknowledged before it stopped: nothing delivered is back in
    # the queue (to be delivered again), and nothing is lost.
    assert not set(gone) & set(left)
    assert sorted(gone + left) == removed
    stopped = {e.get("trigger") for e in d.events() if e.get("event") == "trigger.stopped"}
    assert "steady" not in stopped
