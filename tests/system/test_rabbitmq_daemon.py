"""`triggerd run` with a rabbitmq trigger, killed with SIGKILL mid-batch and restarted: every
message is delivered at least once, none is lost, and the queue ends empty."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

import pytest

from tests.integration.rabbitmq_support import broker, unique
from tests.system.conftest import FUNCTIONS, Daemon, free_port, wait_for

pytestmark = [pytest.mark.system, pytest.mark.integration]


def config(tmp: Path, url: str, queue: str) -> str:
    return f"""
[daemon]
state = "sqlite:///state/state.db"
listen = "127.0.0.1:{free_port()}"
control_listen = ""
shutdown_timeout_s = 5
log_format = "json"

[functions.recorder]
handler = "app.handler"
code = "{FUNCTIONS / "recorder"}"
timeout_s = 10
reserved_concurrency = 2
environment = {{ RECORD_FILE = "{tmp / "calls.jsonl"}", SLEEP_S = "0.2" }}

[[triggers]]
name = "orders"
function = "recorder"
source = {{ type = "rabbitmq", url = "{url}", queue = "{queue}", reconnect_base_delay_s = 0.2 }}
batch_size = 5
batching_window_s = 0
maximum_concurrency = 2
"""


def delivered(tmp: Path) -> list[str]:
    path = tmp / "calls.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        if not line.endswith("}"):
            continue
        event: dict[str, Any] = json.loads(line)["event"]
        for msgs in event["rmqMessagesByQueue"].values():
            out += [base64.b64decode(m["data"]).decode() for m in msgs]
    return out


def test_kill9_mid_batch_then_restart_delivers_every_message(
    tmp_path: Path, daemon_factory: Any, rabbitmq_url: str
) -> None:
    queue = unique("kill9")
    sent = [f"msg-{i:03}" for i in range(60)]

    async def publish() -> None:
        async with broker(rabbitmq_url) as b:
            await b.channel.declare_queue(queue, durable=True)
            for body in sent:
                await b.publish(queue, body.encode())

    async def leftovers() -> list[bytes]:
        async with broker(rabbitmq_url) as b:
            b.owns(queue)
            return [m.body for m in await b.drain(queue)]

    asyncio.run(publish())
    try:
        d: Daemon = daemon_factory(config(tmp_path, rabbitmq_url, queue))
        d.start()
        wait_for(lambda: len(delivered(tmp_path)) >= 10, 30, "some batches")
        d.kill9()
        assert len(set(delivered(tmp_path))) < len(sent), "killed while work was pending"
        d.start()
        wait_for(lambda: set(delivered(tmp_path)) >= set(sent), 60, "every message")
        assert d.terminate() == 0
        assert "guest:guest" not in d.stderr() + d.stdout(), "the password is never logged"
    finally:
        left = asyncio.run(leftovers())
    assert left == [], "everything was acked"


def test_wrong_password_exits_2_with_a_clear_message_without_the_password(
    tmp_path: Path, rabbitmq_url: str
) -> None:
    import subprocess
    import sys

    url = rabbitmq_url.replace("guest:guest", "guest:Wr0ngPassw0rd")
    cfg = tmp_path / "triggerd.toml"
    cfg.write_text(config(tmp_path, url, "any-queue"))
    proc = subprocess.run(
        [sys.executable, "-m", "triggerd", "run", str(cfg)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "login refused for user 'guest'" in proc.stderr
    assert "amqp://guest:***@" in proc.stderr
    assert "Wr0ngPassw0rd" not in proc.stderr + proc.stdout
