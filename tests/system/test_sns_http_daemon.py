"""The `sns_http` source in `triggerd run` as a subprocess, killed with SIGKILL during a burst of
signed SNS deliveries: every notification SNS got its 200 for is invoked after the restart (a
200 means the event was committed to the durable queue; the others SNS would deliver again)."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.integration.sns_support import (
    CERT_PATH,
    SUB,
    TOPIC,
    Pki,
    make_pki,
    sign_message,
    sns_message,
)
from tests.system.conftest import (
    Daemon,
    free_port,
    kill9_during_burst,
    public_daemon_table,
    wait_for,
)

pytestmark = pytest.mark.system

FUNCTION = Path(__file__).resolve().parents[1] / "integration" / "functions" / "sns_recorder"
BURST = 200
CALLERS = 8
KILL_AFTER = 25


class CertServer:
    """The pinned host serving SNS's signing certificate over HTTPS, in a thread."""

    def __init__(self, pki: Pki) -> None:
        pem = pki.signing_pem

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                found = self.path == CERT_PATH
                self.send_response(200 if found else 404)
                self.send_header("Content-Length", str(len(pem) if found else 0))
                self.end_headers()
                if found:
                    self.wfile.write(pem)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.socket = pki.server_ctx.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.host = f"127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("sns_pki"))


@pytest.fixture(scope="module")
def cert_server(pki: Pki) -> Iterator[CertServer]:
    server = CertServer(pki)
    try:
        yield server
    finally:
        server.close()


def config(port: int, record: Path, pki: Pki, cert_host: str) -> str:
    return (
        public_daemon_table(port)
        + f"""
[functions.receiver]
handler = "app.handler"
code = "{FUNCTION}"
timeout_s = 10
reserved_concurrency = 1
environment = {{ RECORD_FILE = "{record}", SLEEP_S = "0.01" }}

[[triggers]]
name = "sns"
function = "receiver"
[triggers.source]
type = "sns_http"
path = "/sns/in"
topics = ["{TOPIC}"]
cert_hosts = ["{cert_host}"]
ca_file = "{pki.ca_file}"
"""
    )


def delivered(record: Path) -> set[str]:
    if not record.exists():
        return set()
    return {
        json.loads(line)["event"]["Records"][0]["Sns"]["MessageId"]
        for line in record.read_text().splitlines()
        if line.endswith("}")
    }


def test_kill9_during_a_burst_of_deliveries_invokes_every_one_that_got_its_200(
    tmp_path: Path, daemon_factory: Any, pki: Pki, cert_server: CertServer
) -> None:
    port = free_port()
    record = tmp_path / "calls.jsonl"
    d: Daemon = daemon_factory(config(port, record, pki, cert_server.host))
    d.start()
    cert_base = f"https://{cert_server.host}"
    url = f"http://127.0.0.1:{port}/sns/in"

    def deliver(i: int) -> str | None:
        doc = sign_message(sns_message(cert_base, Message=f"m-{i}"), pki.signing_key)
        req = urllib.request.Request(
            url,
            data=json.dumps(doc).encode(),
            method="POST",
            headers={
                "Content-Type": "text/plain; charset=UTF-8",
                "x-amz-sns-message-type": "Notification",
                "x-amz-sns-subscription-arn": SUB,
            },
        )
        try:
            with urllib.request.urlopen(req, timeout=15) as resp:
                ok = resp.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return None  # the daemon died under this delivery: SNS would retry it
        return str(doc["MessageId"]) if ok else None

    acked = kill9_during_burst(d, deliver, burst=BURST, callers=CALLERS, kill_after=KILL_AFTER)
    assert KILL_AFTER <= len(acked) < BURST, "killed in the middle of the burst"
    assert not acked <= delivered(record), "killed while notifications were still queued"

    d.start()
    wait_for(lambda: acked <= delivered(record), 60, "every acknowledged notification")
    assert d.terminate() == 0
