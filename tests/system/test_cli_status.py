"""`triggerd status` against a running daemon: over HTTPS when the listen address has a
certificate (verified against it), every trigger running (exit 0), and a trigger whose
source cannot start (exit 10, with the reason)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.system.conftest import FUNCTIONS, Daemon, free_port, wait_for
from triggerd.types import ExitCode

pytestmark = pytest.mark.system


def config(tmp: Path, port: int, daemon_extra: str = "", trigger_extra: str = "") -> str:
    return f"""
[daemon]
state = "sqlite:///state/state.db"
listen = "127.0.0.1:{port}"
control_listen = ""
control_on_public = true
shutdown_timeout_s = 5
log_format = "json"
{daemon_extra}

[functions.recorder]
handler = "app.handler"
code = "{FUNCTIONS / "recorder"}"
environment = {{ RECORD_FILE = "{tmp / "calls.jsonl"}" }}

[[triggers]]
name = "inbox"
function = "recorder"
source = {{ type = "directory", path = "inbox", stable_s = 0.1 }}
{trigger_extra}
"""


def status(d: Daemon) -> tuple[int, dict[str, Any]]:
    out = subprocess.run(
        [sys.executable, "-m", "triggerd", "status", "-c", str(d.config), "-o", "json"],
        cwd=d.workdir,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Traceback" not in out.stderr, out.stderr
    return out.returncode, json.loads(out.stdout)


def self_signed(tmp: Path, san: str = "IP:127.0.0.1", stem: str = "cert") -> tuple[Path, Path]:
    cert, key = tmp / f"{stem}.pem", tmp / f"{stem}-key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=" + san.partition(":")[2], "-addext", f"subjectAltName={san}",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    return cert, key


def test_status_follows_tls_and_exits_0_when_every_trigger_runs(
    tmp_path: Path, daemon_factory: Any
) -> None:
    (tmp_path / "inbox").mkdir()
    cert, key = self_signed(tmp_path)
    port = free_port()
    tls = f'tls_cert_file = "{cert}"\ntls_key_file = "{key}"'
    d: Daemon = daemon_factory(config(tmp_path, port, daemon_extra=tls))
    d.start()
    code, doc = status(d)
    assert code == 0, doc
    assert doc["daemon"] == {"url": f"https://127.0.0.1:{port}", "status": "ready", "error": None}
    assert f"listening on https://127.0.0.1:{port}" in d.stdout_path.read_text()
    rows = {r["trigger"]: r for r in doc["triggers"]}
    assert rows["inbox"]["state"] == "running"
    assert rows["invoke-api:recorder"]["queued"] == 0

    # A store status cannot read: the daemon is still asked; queued and dlq are unknown.
    elsewhere = tmp_path / "elsewhere.toml"
    elsewhere.write_text(
        d.config.read_text().replace("sqlite:///state/state.db", "sqlite:///gone/state.db")
    )
    out = subprocess.run(
        [sys.executable, "-m", "triggerd", "status", "-c", str(elsewhere), "-o", "json"],
        cwd=d.workdir,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == ExitCode.STATE_MISSING, out.stderr
    doc = json.loads(out.stdout)
    assert doc["daemon"]["status"] == "ready"
    rows = {r["trigger"]: r for r in doc["triggers"]}
    assert (rows["inbox"]["state"], rows["inbox"]["queued"], rows["inbox"]["dlq"]) == (
        "running",
        None,
        None,
    )
    assert d.terminate() == 0


def test_status_exits_10_naming_a_trigger_that_cannot_start(
    tmp_path: Path, daemon_factory: Any
) -> None:
    (tmp_path / "inbox").mkdir()
    broker = f"127.0.0.1:{free_port()}"  # nothing listens there
    kafka = f"""
[[triggers]]
name = "orders"
function = "recorder"
source = {{ type = "kafka", bootstrap_servers = "{broker}", topics = ["t"], group_id = "g" }}
"""
    d: Daemon = daemon_factory(config(tmp_path, free_port(), trigger_extra=kafka))
    d.start()
    wait_for(
        lambda: any(e.get("event") == "source.start_deferred" for e in d.events()),
        30,
        "the deferred start",
    )
    code, doc = status(d)
    assert code == ExitCode.TRIGGER_FAILING, doc
    rows = {r["trigger"]: r for r in doc["triggers"]}
    assert rows["inbox"]["state"] == "running"
    assert rows["orders"]["state"] == "degraded" and broker in rows["orders"]["reasons"]
    assert d.terminate() == 0


def test_status_and_pause_reach_a_control_listener_whose_certificate_names_a_host_only(
    tmp_path: Path, daemon_factory: Any
) -> None:
    """A production certificate names the host (DNS:triggerd.example.test), not 127.0.0.1
    where the CLI reaches the daemon: the configured certificate identifies it; another
    certificate on that port does not."""
    (tmp_path / "inbox").mkdir()
    cert, key = self_signed(tmp_path, "DNS:triggerd.example.test")
    control = free_port()
    tls = f'tls_cert_file = "{cert}"\ntls_key_file = "{key}"'
    text = config(tmp_path, free_port(), daemon_extra=tls).replace(
        'control_listen = ""\ncontrol_on_public = true', f'control_listen = "127.0.0.1:{control}"'
    )
    d: Daemon = daemon_factory(text)
    d.start()
    code, doc = status(d)
    assert code == 0, doc
    assert doc["daemon"]["url"] == f"https://127.0.0.1:{control}"
    paused = subprocess.run(
        [sys.executable, "-m", "triggerd", "pause", "inbox", "-c", str(d.config)],
        cwd=d.workdir,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert paused.returncode == 0, paused.stderr

    other, _ = self_signed(tmp_path, "DNS:triggerd.example.test", stem="other")
    impostor = tmp_path / "impostor.toml"
    impostor.write_text(d.config.read_text().replace(str(cert), str(other)))
    out = subprocess.run(
        [sys.executable, "-m", "triggerd", "status", "-c", str(impostor), "-o", "json"],
        cwd=d.workdir,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == ExitCode.DAEMON_UNREACHABLE, out.stderr
    assert "is not the one in daemon.tls_cert_file" in json.loads(out.stdout)["daemon"]["error"]
    assert d.terminate() == 0
