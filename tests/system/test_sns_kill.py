"""kill -9 during a burst of SNS Publish calls: every message that got its 200 is delivered to
both subscribed functions after the restart (the fan-out is committed before the answer)."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from botocore.config import Config

from tests.system.conftest import (
    Daemon,
    aws_client,
    control_daemon_table,
    free_port,
    kill9_during_burst,
    wait_for,
)

pytestmark = pytest.mark.system

FUNCTION = Path(__file__).resolve().parents[1] / "integration" / "functions" / "sns_recorder"
BURST = 200
CALLERS = 8
KILL_AFTER = 25


def config(port: int, record: Path) -> str:
    fn = f"""handler = "app.handler"
code = "{FUNCTION}"
timeout_s = 10
reserved_concurrency = 1
environment = {{ RECORD_FILE = "{record}", SLEEP_S = "0.01" }}
"""
    return (
        control_daemon_table(port)
        + f"""
[functions.one]
{fn}
[functions.two]
{fn}
[[sns.topics]]
name = "burst"
subscriptions = [{{ function = "one" }}, {{ function = "two" }}]

[[sns.topics]]
name = "burst.fifo"
fifo = true
content_based_deduplication = true
subscriptions = [{{ function = "one" }}]
"""
    )


def messages(path: Path) -> list[tuple[str, str]]:
    """(function, message) in the order they were handled."""
    out = []
    if path.exists():
        for line in path.read_text().splitlines():
            if line.endswith("}"):
                doc = json.loads(line)
                out.append((doc["function"], doc["event"]["Records"][0]["Sns"]["Message"]))
    return out


def delivered(path: Path) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {"one": set(), "two": set()}
    for function, message in messages(path):
        out[function].add(message)
    return out


def test_kill9_after_publish_answers_delivers_every_published_message(
    tmp_path: Path, daemon_factory: Any
) -> None:
    port = free_port()
    record = tmp_path / "calls.jsonl"
    d: Daemon = daemon_factory(config(port, record))
    d.start()
    sns = aws_client(
        "sns", port, Config(retries={"max_attempts": 1}, read_timeout=15, connect_timeout=2)
    )
    topic = "arn:aws:sns:us-east-1:123456789012:burst"
    sequence: dict[str, int] = {}
    lock = threading.Lock()

    def publish(i: int) -> str | None:
        fifo = i % 2 == 1
        message = f"fifo-{i % 3}-{i}" if fifo else f"msg-{i}"
        try:
            if fifo:
                resp = sns.publish(
                    TopicArn=topic + ".fifo", Message=message, MessageGroupId=str(i % 3)
                )
                with lock:
                    sequence[message] = int(resp["SequenceNumber"])
            else:
                sns.publish(TopicArn=topic, Message=message)
        except Exception:
            return None  # the daemon died under this request: not acknowledged
        return message

    acked = kill9_during_burst(d, publish, burst=BURST, callers=CALLERS, kill_after=KILL_AFTER)
    assert KILL_AFTER <= len(acked) < BURST, "killed in the middle of the burst"
    before = delivered(record)
    assert not (acked <= before["one"] and acked <= before["two"]), "nothing was left queued"

    d.start()
    plain = {m for m in acked if m.startswith("msg-")}
    wait_for(
        lambda: plain <= delivered(record)["two"] and acked <= delivered(record)["one"],
        60,
        "every published message to reach its functions",
    )
    assert d.terminate() == 0
    # FIFO: each group's acknowledged messages first arrived in the order SNS sequenced them
    # (a message may come twice after the crash: at least once).
    for group in range(3):
        first: list[int] = []
        for function, message in messages(record):
            if function == "one" and message.startswith(f"fifo-{group}-"):
                seq = sequence.get(message)
                if seq is not None and seq not in first:
                    first.append(seq)
        assert first and first == sorted(first), (group, first)
