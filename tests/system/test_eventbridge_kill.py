"""kill -9 right after PutEvents answered: the matched events were committed before the
answer, so after a restart every one of them is delivered."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from botocore.config import Config

from tests.system.conftest import (
    Daemon,
    aws_client,
    control_daemon_table,
    free_port,
    invoke_api_function_table,
    recorded_ids,
    wait_for,
)

pytestmark = pytest.mark.system

EVENTS = 10


def config(port: int) -> str:
    tables = control_daemon_table(port) + invoke_api_function_table("recorder", 1)
    return (
        tables
        + """
[[event_buses]]
name = "default"

[[event_buses.rules]]
name = "jobs"
event_pattern = { source = ["jobs"] }
targets = [{ function = "recorder", input_path = "$.detail" }]
"""
    )


def test_kill9_right_after_put_events_answered_still_delivers_every_event(
    tmp_path: Path, daemon_factory: Any
) -> None:
    port = free_port()
    record = tmp_path / "calls.jsonl"
    d: Daemon = daemon_factory(config(port))
    d.start()
    client = aws_client("events", port, Config(retries={"max_attempts": 0, "mode": "standard"}))
    entries = [
        {
            "Source": "jobs",
            "DetailType": "Job",
            # One at a time, 0.3 s each: most are still queued when the daemon dies.
            "Detail": json.dumps({"id": i, "record": str(record), "sleep": 0.3}),
        }
        for i in range(EVENTS)
    ]
    resp = client.put_events(Entries=entries)
    d.kill9()
    assert resp["FailedEntryCount"] == 0
    assert len(recorded_ids(record)) < EVENTS, "killed after every event was delivered"

    d.start()
    wait_for(lambda: recorded_ids(record) == set(range(EVENTS)), 60, "every event delivered")
    assert d.terminate() == 0
