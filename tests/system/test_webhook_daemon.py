"""The webhook source in `triggerd run` as a subprocess: event mode survives kill -9 right after
the 202s, and secrets from the environment never reach the daemon's logs."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.system.conftest import Daemon, free_port, public_daemon_table, wait_for

pytestmark = pytest.mark.system

FUNCTIONS = Path(__file__).resolve().parents[1] / "integration" / "functions"
TOKEN = "sys-test-t0ken-31337"


def config(tmp: Path, port: int, sleep_s: float) -> str:
    return (
        public_daemon_table(port)
        + f"""log_level = "debug"

[functions.recorder]
handler = "app.handler"
code = "{FUNCTIONS / "webhook_recorder"}"
timeout_s = 10
reserved_concurrency = 1
environment = {{ RECORD_FILE = "{tmp / "calls.jsonl"}", SLEEP_S = "{sleep_s}" }}

[[triggers]]
name = "events"
function = "recorder"
maximum_concurrency = 1
source = {{ type = "webhook", path = "/events/{{kind}}", invocation = "event" }}

[[triggers]]
name = "guarded"
function = "recorder"
[triggers.source]
type = "webhook"
path = "/guarded"
method = "POST"
auth = {{ type = "bearer", token = "${{HOOK_TOKEN}}" }}
"""
    )


def post(url: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    req = urllib.request.Request(url, data=body, method="POST", headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:
            return resp.status, resp.headers
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers


def recorded(tmp: Path) -> list[dict[str, Any]]:
    path = tmp / "calls.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def test_kill9_right_after_202_still_delivers_every_event(
    tmp_path: Path, daemon_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    monkeypatch.setenv("HOOK_TOKEN", TOKEN)
    d: Daemon = daemon_factory(config(tmp_path, port, sleep_s=0.3))
    d.start()
    ids = []
    for i in range(8):
        status, headers = post(f"http://127.0.0.1:{port}/events/k{i}", f'{{"i":{i}}}'.encode())
        assert status == 202
        ids.append(headers["Apigw-Requestid"])
    d.kill9()
    assert len(recorded(tmp_path)) < len(ids), "killed while events were still queued"
    d.start()

    def delivered() -> set[str]:
        return {c["event"]["requestContext"]["requestId"] for c in recorded(tmp_path)}

    wait_for(lambda: set(ids) <= delivered(), 40, "every accepted event")
    kinds = {c["event"]["pathParameters"]["kind"] for c in recorded(tmp_path)}
    assert kinds == {f"k{i}" for i in range(8)}
    assert d.terminate() == 0


def test_secret_from_the_environment_never_reaches_the_logs(
    tmp_path: Path, daemon_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOOK_TOKEN", TOKEN)
    port = free_port()
    d: Daemon = daemon_factory(config(tmp_path, port, sleep_s=0))
    d.start()
    url = f"http://127.0.0.1:{port}/guarded"
    assert post(url, b"x")[0] == 401
    assert post(url, b"x", {"Authorization": "Bearer wrong-guess-42"})[0] == 403
    assert post(url, b"x", {"Authorization": f"Bearer {TOKEN}"})[0] == 200
    assert d.terminate() == 0
    logs = d.stdout() + d.stderr()
    assert "webhook.refused" in logs
    assert TOKEN not in logs and "wrong-guess-42" not in logs
