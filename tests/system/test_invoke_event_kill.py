"""kill -9 during a burst of Invoke API `Event` calls: with group commit many 202s share one
transaction, and each is sent only after its commit, so every event that got a 202 is
invoked after the restart."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.system.conftest import (
    Daemon,
    control_daemon_table,
    free_port,
    invoke_api_function_table,
    kill9_during_burst,
    recorded_ids,
    wait_for,
)

pytestmark = pytest.mark.system

BURST = 400
CALLERS = 16
KILL_AFTER = 120


def config(port: int) -> str:
    return control_daemon_table(port) + invoke_api_function_table("recorder", 2)


def invoke_event(port: int, doc: dict[str, Any]) -> int:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/2015-03-31/functions/recorder/invocations",
        data=json.dumps(doc).encode(),
        method="POST",
        headers={"X-Amz-Invocation-Type": "Event"},
    )
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0  # the daemon died under this request: not acknowledged


def test_kill9_during_a_burst_of_event_calls_invokes_every_202d_event(
    tmp_path: Path, daemon_factory: Any
) -> None:
    port = free_port()
    record = tmp_path / "calls.jsonl"
    d: Daemon = daemon_factory(config(port))
    d.start()

    def call(i: int) -> int | None:
        # A small sleep per event keeps a backlog queued when the daemon dies.
        status = invoke_event(port, {"id": i, "record": str(record), "sleep": 0.01})
        return i if status == 202 else None

    # Callers are still sending when it dies: some requests die with the daemon.
    acked = kill9_during_burst(d, call, burst=BURST, callers=CALLERS, kill_after=KILL_AFTER)
    assert KILL_AFTER <= len(acked) < BURST, "killed in the middle of the burst"
    assert not acked <= recorded_ids(record), "killed while accepted events were still queued"

    d.start()
    wait_for(lambda: acked <= recorded_ids(record), 60, "every 202'd event to be invoked")
    assert d.terminate() == 0
