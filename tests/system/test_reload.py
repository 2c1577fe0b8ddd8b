"""Live reload (SIGHUP and `triggerd reload`), pause/resume and sd_notify, against the daemon
as a subprocess with directory and webhook triggers."""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.system.conftest import FUNCTIONS, Daemon, free_port, wait_for

pytestmark = pytest.mark.system


def config(
    tmp: Path, port: int, triggers: str, *, sleep_s: float = 0, record: str = "calls.jsonl"
) -> str:
    return f"""
[daemon]
state = "sqlite:///state/state.db"
listen = "127.0.0.1:{port}"
shutdown_timeout_s = 10
log_format = "json"
control_listen = ""
control_on_public = true

[functions.recorder]
handler = "app.handler"
code = "{FUNCTIONS / "recorder"}"
timeout_s = 10
environment = {{ RECORD_FILE = "{tmp / record}", SLEEP_S = "{sleep_s}" }}
{triggers}
"""


def directory(name: str, bucket: str | None = None) -> str:
    return f"""
[[triggers]]
name = "{name}"
function = "recorder"
source = {{ type = "directory", path = "{name}", bucket = "{bucket or name}", stable_s = 0.1 }}
"""


def webhook(name: str, path: str, extra: str = "") -> str:
    return f"""
[[triggers]]
name = "{name}"
function = "recorder"
source = {{ type = "webhook", path = "{path}"{extra} }}
"""


def delivered(tmp: Path) -> list[tuple[str, str]]:
    """(bucket, key) of every S3-shaped record the function received, in order."""
    path = tmp / "calls.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        if not line.endswith("}"):
            continue
        for record in json.loads(line)["event"].get("Records", []):
            if "s3" in record:
                out.append((record["s3"]["bucket"]["name"], record["s3"]["object"]["key"]))
    return out


def keys(tmp: Path, bucket: str) -> list[str]:
    return [k for b, k in delivered(tmp) if b == bucket]


def has_event(d: Daemon, name: str) -> bool:
    return any(e.get("event") == name for e in d.events())


def cli(
    d: Daemon, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "triggerd", *args, "-c", str(d.config)],
        capture_output=True,
        text=True,
        cwd=d.workdir,
        timeout=60,
        check=False,
        env=None if env is None else {**os.environ, **env},
    )


def readyz(port: int) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as resp:
            body: dict[str, Any] = json.load(resp)
    except urllib.error.HTTPError as exc:
        body = json.load(exc)
    return body


class Poster:
    """POSTs to a webhook in a loop (a thread) and keeps every status it got."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.statuses: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.statuses.append(post(self.url, b'{"n": 1}'))

    def __enter__(self) -> Poster:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


def post(url: str, body: bytes) -> int:
    request = urllib.request.Request(url, data=body, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def write(directory: Path, *names: str) -> None:
    for name in names:
        (directory / name).write_text(name)


@pytest.mark.parametrize("how", ["sighup", "cli"])
def test_reload_restarts_only_what_changed_while_events_flow(
    tmp_path: Path, daemon_factory: Callable[[str], Daemon], how: str
) -> None:
    for name in ("steady", "changed", "removed", "added"):
        (tmp_path / name).mkdir()
    port = free_port()
    before = directory("steady") + directory("changed", "changed-v1") + directory("removed")
    d = daemon_factory(config(tmp_path, port, before + webhook("hook", "/hook")))
    d.start(ready_timeout=90)
    write(tmp_path / "steady", *(f"s{i:02}" for i in range(20)))
    write(tmp_path / "changed", "c0")
    write(tmp_path / "removed", "r0")
    wait_for(
        lambda: "c0" in keys(tmp_path, "changed-v1") and "r0" in keys(tmp_path, "removed"),
        60,
        "the first files of the changed and removed triggers",
    )
    after = directory("steady") + directory("changed", "changed-v2") + directory("added")
    d.config.write_text(
        config(tmp_path, port, after + webhook("hook", "/hook", ", max_body_bytes = 100"))
    )

    with Poster(f"http://127.0.0.1:{port}/hook") as poster:
        if how == "sighup":
            assert d.proc is not None
            d.proc.send_signal(signal.SIGHUP)
        else:
            # Through the control listener: the command returns the daemon's verdict.
            result = cli(d, "reload")
            assert result.returncode == 0, result.stderr
            assert f"{d.config}: reloaded; " in result.stdout
            assert "triggers added: added" in result.stdout
            assert "triggers removed: removed" in result.stdout
        wait_for(lambda: has_event(d, "daemon.reloaded"), 30, "the reload")
        write(tmp_path / "steady", *(f"s{i:02}" for i in range(20, 40)))
        write(tmp_path / "removed", "r1")
        write(tmp_path / "changed", "c1")
        write(tmp_path / "added", "a0")
        wait_for(lambda: len(set(keys(tmp_path, "steady"))) == 40, 30, "every steady file")
        wait_for(lambda: "c1" in keys(tmp_path, "changed-v2"), 60, "the changed trigger")
        wait_for(lambda: "a0" in keys(tmp_path, "added"), 60, "the added trigger")

    # The unchanged trigger: every file once, through the reload.
    assert Counter(keys(tmp_path, "steady")) == {f"s{i:02}": 1 for i in range(40)}
    # The changed trigger runs with its new settings and delivered nothing twice.
    assert keys(tmp_path, "changed-v1") == ["c0"]
    assert keys(tmp_path, "changed-v2") == ["c1"]
    # The removed trigger stopped (r1 was written before c1 and a0, which were delivered).
    assert keys(tmp_path, "removed") == ["r0"]
    # The webhook's route was swapped without a gap, and runs with its new limit.
    assert poster.statuses and set(poster.statuses) == {200}, Counter(poster.statuses)
    assert post(f"http://127.0.0.1:{port}/hook", b"x" * 200) == 413
    reloaded = next(e for e in d.events() if e.get("event") == "daemon.reloaded")
    assert reloaded["triggers_added"] == ["added"]
    assert reloaded["triggers_removed"] == ["removed"]
    assert reloaded["triggers_restarted"] == ["changed", "hook"]
    stopped = {e.get("trigger") for e in d.events() if e.get("event") == "trigger.stopped"}
    assert stopped == {"changed", "hook", "removed"}, "the steady trigger was not touched"
    ready = readyz(port)
    assert set(ready["triggers"]) == {"steady", "changed", "added", "hook"}
    assert ready["status"] == "ready", ready

    # A broken file changes nothing: the running config goes on.
    d.config.write_text(config(tmp_path, port, after.replace("stable_s", "stabel_s", 1)))
    if how == "sighup":
        assert d.proc is not None
        d.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: has_event(d, "daemon.reload_rejected"), 30, "the rejected reload")
        [rejected] = [e for e in d.events() if e.get("event") == "daemon.reload_rejected"]
        assert "stabel_s" in rejected["error"] and "keeping the running config" in rejected["error"]
        assert "\n" not in rejected["error"]
        assert "Traceback" not in d.stderr()
    else:
        result = cli(d, "reload")
        assert result.returncode == 2
        assert "stabel_s" in result.stderr and "Traceback" not in result.stderr
    write(tmp_path / "steady", "s40")
    wait_for(lambda: "s40" in keys(tmp_path, "steady"), 60, "a file after the broken reload")
    assert readyz(port)["status"] == "ready"
    assert d.terminate() == 0


def test_reload_needs_restart_settings_keep_their_values(
    tmp_path: Path, daemon_factory: Callable[[str], Daemon]
) -> None:
    (tmp_path / "steady").mkdir()
    port = free_port()
    d = daemon_factory(config(tmp_path, port, directory("steady")))
    d.start(ready_timeout=90)
    d.config.write_text(config(tmp_path, free_port(), directory("steady")))
    assert d.proc is not None
    d.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: has_event(d, "daemon.reloaded"), 30, "the reload")
    [line] = [e for e in d.events() if e.get("event") == "daemon.reload_needs_restart"]
    assert line["settings"] == ["daemon.listen"]
    assert "needs a restart" in line["error"]
    assert readyz(port)["status"] == "ready", "still on the old address"
    assert d.terminate() == 0


def test_a_changed_function_gets_new_workers_after_its_invocation_in_flight(
    tmp_path: Path, daemon_factory: Callable[[str], Daemon]
) -> None:
    port = free_port()
    hook = webhook("hook", "/hook")
    d = daemon_factory(config(tmp_path, port, hook, sleep_s=1))
    d.start(ready_timeout=90)
    url = f"http://127.0.0.1:{port}/hook"
    statuses: list[int] = []
    in_flight = threading.Thread(target=lambda: statuses.append(post(url, b"{}")))
    in_flight.start()
    wait_for(
        lambda: any("START RequestId" in str(e.get("event")) for e in d.events()),
        60,
        "the invocation in flight",
    )
    # Requests keep arriving through the reload: the route kept for the swap must not call
    # the old backend once it is stopped.
    with Poster(url) as poster:
        d.config.write_text(config(tmp_path, port, hook, sleep_s=1, record="calls-v2.jsonl"))
        assert d.proc is not None
        d.proc.send_signal(signal.SIGHUP)
        in_flight.join(30)
        assert statuses == [200], "the old worker finished its invocation"
        wait_for(lambda: has_event(d, "daemon.reloaded"), 30, "the reload")
        served = len(poster.statuses)
        wait_for(lambda: len(poster.statuses) >= served + 2, 30, "requests after the reload")
    assert Counter(poster.statuses) == {200: len(poster.statuses)}, "no request failed"
    [reloaded] = [e for e in d.events() if e.get("event") == "daemon.reloaded"]
    assert reloaded["functions_changed"] == ["recorder"]
    v2 = tmp_path / "calls-v2.jsonl"
    before = len(v2.read_text().splitlines())
    assert before >= 1, "the new workers serve the requests after the reload"
    assert post(url, b"{}") == 200
    assert len(v2.read_text().splitlines()) == before + 1
    assert (tmp_path / "calls.jsonl").read_text().splitlines(), "the old worker's invocation"
    assert d.terminate() == 0


def test_a_resume_while_the_daemon_stops_is_refused_and_the_daemon_exits(
    tmp_path: Path, daemon_factory: Callable[[str], Daemon]
) -> None:
    for name in ("inbox", "hold"):
        (tmp_path / name).mkdir()
    port = free_port()
    d = daemon_factory(config(tmp_path, port, directory("inbox") + directory("hold"), sleep_s=8))
    d.start(ready_timeout=90)
    assert cli(d, "pause", "hold").returncode == 0
    write(tmp_path / "inbox", "busy")
    wait_for(
        lambda: any("START RequestId" in str(e.get("event")) for e in d.events()),
        60,
        "an invocation in flight",
    )
    assert d.proc is not None
    d.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: has_event(d, "daemon.stopping"), 60, "the drain")
    d.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: has_event(d, "daemon.reload_ignored"), 60, "the SIGHUP ignored")
    resumed = cli(d, "resume", "hold")
    assert resumed.returncode != 0
    assert "the daemon is stopping" in resumed.stderr
    # The drain waits for the invocation in flight (8 s) and never for the refused resume:
    # without the fix the daemon never exits.
    assert d.proc.wait(10 + 20) == 0
    assert not has_event(d, "trigger.resumed")
    assert not has_event(d, "daemon.reloaded")
    assert keys(tmp_path, "inbox") == ["busy"]


def _ignores_sighup(pid: int) -> bool:
    """Whether the process ignores SIGHUP (bit 0 of SigIgn in /proc/PID/status)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    [line] = [x for x in status.splitlines() if x.startswith("SigIgn:")]
    return bool(int(line.split()[1], 16) & 1)


def test_a_sighup_before_the_reload_handler_is_installed_does_not_kill_the_daemon(
    tmp_path: Path, daemon_factory: Callable[[str], Daemon]
) -> None:
    (tmp_path / "inbox").mkdir()
    port = free_port()
    d = daemon_factory(config(tmp_path, port, directory("inbox")))
    d.proc = subprocess.Popen(
        [sys.executable, "-m", "triggerd", "run", str(d.config)],
        cwd=d.workdir,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        # SIGHUP's default action (exit 129), whatever this test process inherited.
        preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL),
    )
    # `run` ignores SIGHUP first thing; the event loop's handler (a reload) replaces that
    # once the daemon starts. A SIGHUP in between (systemd's ExecReload right after the
    # start) must not end it.
    proc = d.proc
    wait_for(lambda: _ignores_sighup(proc.pid) or proc.poll() is not None, 60, "`run` entered")
    proc.send_signal(signal.SIGHUP)
    assert proc.poll() is None, "`run` never ignored SIGHUP"
    wait_for(lambda: _answers(port) or proc.poll() is not None, 90, "the daemon listening")
    assert proc.poll() is None, "the SIGHUP did not end the daemon"
    assert readyz(port)["status"] == "ready"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0


def _answers(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_pause_and_resume_survive_a_restart(
    tmp_path: Path, daemon_factory: Callable[[str], Daemon]
) -> None:
    inbox, other = tmp_path / "inbox", tmp_path / "other"
    inbox.mkdir()
    other.mkdir()
    port = free_port()
    d = daemon_factory(config(tmp_path, port, directory("inbox") + directory("other"), sleep_s=0.5))
    d.start(ready_timeout=90)
    write(inbox, "busy")
    wait_for(
        lambda: any("START RequestId" in str(e.get("event")) for e in d.events()),
        60,
        "an invocation in flight",
    )
    paused = cli(d, "pause", "inbox")
    assert paused.returncode == 0, paused.stderr
    assert "paused" in paused.stdout
    # The pause returned after the in-flight invocation finished.
    assert keys(tmp_path, "inbox") == ["busy"]
    ready = readyz(port)
    assert ready["triggers"]["inbox"]["status"] == "paused"
    assert ready["status"] == "ready", "a paused trigger is not a failure"
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/statusz", timeout=5) as resp:
        assert json.load(resp)["paused"] == ["inbox"]

    write(inbox, "p0")
    write(other, "o0")
    wait_for(lambda: "o0" in keys(tmp_path, "other"), 60, "the other trigger")
    assert keys(tmp_path, "inbox") == ["busy"], "nothing delivered while paused"
    status = cli(d, "status")
    assert status.returncode == 0, status.stderr
    [row] = [line for line in status.stdout.splitlines() if line.startswith("inbox")]
    assert "paused" in row.split()

    assert d.terminate() == 0
    d.start(ready_timeout=90)
    assert readyz(port)["triggers"]["inbox"]["status"] == "paused"
    write(other, "o1")
    wait_for(lambda: "o1" in keys(tmp_path, "other"), 60, "the other trigger after a restart")
    assert keys(tmp_path, "inbox") == ["busy"], "still paused after the restart"

    resumed = cli(d, "resume", "inbox")
    assert resumed.returncode == 0, resumed.stderr
    wait_for(lambda: "p0" in keys(tmp_path, "inbox"), 60, "the file written while paused")
    assert Counter(keys(tmp_path, "inbox")) == {"busy": 1, "p0": 1}
    assert readyz(port)["triggers"]["inbox"]["status"] == "running"
    assert cli(d, "resume", "inbox").stdout.strip().endswith("was not paused")
    unknown = cli(d, "pause", "nope")
    assert unknown.returncode == 2 and "no enabled trigger 'nope'" in unknown.stderr

    # With the daemon down, the pause goes to the store and applies at the next start.
    assert d.terminate() == 0
    offline = cli(d, "pause", "inbox")
    assert offline.returncode == 0, offline.stderr
    assert "not running" in offline.stdout
    status = cli(d, "status")
    [row] = [line for line in status.stdout.splitlines() if line.startswith("inbox")]
    assert "paused" in row.split(), "read from the store while the daemon is down"
    d.start(ready_timeout=90)
    assert readyz(port)["triggers"]["inbox"]["status"] == "paused"
    assert d.terminate() == 0


class NotifySocket:
    """An AF_UNIX datagram socket standing in for systemd's NOTIFY_SOCKET."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        #: (message, time.monotonic() at receipt)
        self.messages: list[tuple[str, float]] = []

    def collect_until(self, done: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}: {self.texts()}")
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            self.messages.append((data.decode(), time.monotonic()))

    def texts(self) -> list[str]:
        return [m for m, _ in self.messages if m != "WATCHDOG=1"]

    def close(self) -> None:
        self.sock.close()


def test_sd_notify_ready_reloading_status_watchdog_stopping(
    tmp_path: Path, daemon_factory: Callable[[str], Daemon]
) -> None:
    for name in ("inbox", "other"):
        (tmp_path / name).mkdir()
    port = free_port()
    notify = NotifySocket(tmp_path / "notify.sock")
    # Pings every 0.5 s: a loaded machine's scheduling delays are absolute, and 0.5 s of slack
    # below the interval absorbs them where 0.2 s did not always.
    watchdog_usec = 1_000_000
    try:
        d = daemon_factory(config(tmp_path, port, directory("inbox")))
        d.start(env={"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": str(watchdog_usec)})
        notify.collect_until(lambda: bool(notify.texts()), 90, "READY")
        assert notify.texts()[0] == "READY=1\nSTATUS=1 trigger running, 0 paused, 0 failing"
        notify.collect_until(
            lambda: sum(m == "WATCHDOG=1" for m, _ in notify.messages) >= 6, 60, "watchdog pings"
        )
        pings = [t for m, t in notify.messages if m == "WATCHDOG=1"]
        gaps = sorted(b - a for a, b in itertools.pairwise(pings))
        assert gaps[len(gaps) // 2] < watchdog_usec / 1e6, "pinged well within the interval"

        d.config.write_text(config(tmp_path, port, directory("inbox") + directory("other")))
        sent_at = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        assert d.proc is not None
        d.proc.send_signal(signal.SIGHUP)
        notify.collect_until(lambda: len(notify.texts()) >= 3, 30, "RELOADING then READY")
        reloading, ready = notify.texts()[1:3]
        head, usec = reloading.split("\n")
        assert head == "RELOADING=1"
        assert usec.startswith("MONOTONIC_USEC=")
        stamp = int(usec.removeprefix("MONOTONIC_USEC="))
        assert sent_at <= stamp <= time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        assert ready == "READY=1\nSTATUS=2 triggers running, 0 paused, 0 failing"

        assert cli(d, "pause", "other").returncode == 0
        notify.collect_until(lambda: len(notify.texts()) >= 4, 20, "STATUS after the pause")
        assert notify.texts()[3] == "STATUS=1 trigger running, 1 paused, 0 failing"

        assert d.terminate() == 0
        notify.collect_until(lambda: "STOPPING=1" in notify.texts(), 10, "STOPPING")
        assert notify.texts()[-1] == "STOPPING=1"
    finally:
        notify.close()


def test_pause_and_resume_reach_a_daemon_that_serves_https(
    tmp_path: Path, daemon_factory: Callable[[str], Daemon]
) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=triggerd.example", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    (tmp_path / "inbox").mkdir()
    port = free_port()
    text = config(tmp_path, port, directory("inbox")).replace(
        'log_format = "json"',
        f'log_format = "json"\ntls_cert_file = "{cert}"\ntls_key_file = "{key}"',
    )
    d = daemon_factory(text)
    d.start(ready_timeout=90)
    paused = cli(d, "pause", "inbox")
    assert paused.returncode == 0, paused.stderr
    assert "paused (in-flight batches finished)" in paused.stdout
    resumed = cli(d, "resume", "inbox")
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.strip() == "trigger inbox resumed"
    assert d.terminate() == 0


KEYS = """
[[daemon.access_keys]]
access_key_id = "OPERATOR"
secret_access_key = "operator-secret-0123456789"
actions = ["triggerd:*"]

[[daemon.access_keys]]
access_key_id = "READER"
secret_access_key = "reader-secret-0123456789"
actions = ["lambda:InvokeFunction"]

[functions.recorder]"""


def aws_env(key_id: str | None, secret: str | None) -> dict[str, str]:
    """Only these credentials (none: no credentials at all) for the AWS credential chain."""
    env = {
        "AWS_CONFIG_FILE": "/nonexistent",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_ACCESS_KEY_ID": key_id or "",
        "AWS_SECRET_ACCESS_KEY": secret or "",
    }
    return env


def test_with_access_keys_pause_needs_a_signed_request_from_an_allowed_key(
    tmp_path: Path, daemon_factory: Callable[[str], Daemon]
) -> None:
    (tmp_path / "inbox").mkdir()
    port = free_port()
    text = config(tmp_path, port, directory("inbox")).replace("[functions.recorder]", KEYS, 1)
    d = daemon_factory(text)
    d.start(ready_timeout=90)
    unsigned = post(f"http://127.0.0.1:{port}/control/triggers/inbox/pause", b"")
    assert unsigned == 403
    nobody = cli(d, "pause", "inbox", env=aws_env(None, None))
    assert nobody.returncode == 1
    assert "requires AWS Signature Version 4" in nobody.stderr
    reader = cli(d, "pause", "inbox", env=aws_env("READER", "reader-secret-0123456789"))
    assert reader.returncode == 1
    assert "is not authorized to perform: triggerd:PauseTrigger" in reader.stderr
    wrong = cli(d, "pause", "inbox", env=aws_env("OPERATOR", "not-the-secret"))
    assert wrong.returncode == 1 and "signature" in wrong.stderr.lower()
    assert readyz(port)["triggers"]["inbox"]["status"] == "running"
    operator = cli(d, "pause", "inbox", env=aws_env("OPERATOR", "operator-secret-0123456789"))
    assert operator.returncode == 0, operator.stderr
    assert readyz(port)["triggers"]["inbox"]["status"] == "paused"
    assert "operator-secret-0123456789" not in d.stderr() + operator.stdout + operator.stderr
    # `triggerd reload` signs its request (its JSON body too) with the same keys.
    assert post(f"http://127.0.0.1:{port}/control/reload", b"") == 403
    denied = cli(d, "reload", env=aws_env("READER", "reader-secret-0123456789"))
    assert denied.returncode == 1
    assert "is not authorized to perform: triggerd:Reload" in denied.stderr
    reloaded = cli(d, "reload", env=aws_env("OPERATOR", "operator-secret-0123456789"))
    assert reloaded.returncode == 0, reloaded.stderr
    assert "reloaded; nothing changed" in reloaded.stdout
    assert d.terminate() == 0


def test_reload_command_refuses_another_file_and_reports_a_webhook_needing_a_restart(
    tmp_path: Path, daemon_factory: Callable[[str], Daemon]
) -> None:
    (tmp_path / "inbox").mkdir()
    control = free_port()

    def text(triggers: str, listen: str) -> str:
        return (
            config(tmp_path, control, triggers)
            .replace(f'listen = "127.0.0.1:{control}"\n', f'listen = "{listen}"\n')
            .replace('control_listen = ""', f'control_listen = "127.0.0.1:{control}"')
            .replace("control_on_public = true", "control_on_public = false")
        )

    d = daemon_factory(text(directory("inbox"), ""))
    d.start(ready_timeout=90)
    public = free_port()
    edited = text(directory("inbox") + webhook("hook", "/hook"), f"127.0.0.1:{public}")
    # `triggerd reload` naming a file the daemon does not run is refused, and changes nothing.
    other = tmp_path / "other.toml"
    other.write_text(edited)
    refused = subprocess.run(
        [sys.executable, "-m", "triggerd", "reload", str(other)],
        capture_output=True,
        text=True,
        cwd=d.workdir,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 2, refused.stderr
    assert f"triggerd runs {d.config}, not {other}" in refused.stderr
    assert not has_event(d, "daemon.reloaded")
    # The daemon's own file: the reload runs, and the command reports the trigger it could
    # not start (exit 1) and the setting that needs a restart.
    d.config.write_text(edited)
    result = cli(d, "reload")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "triggers added: hook" in result.stdout
    assert "needs a restart (running values kept): daemon.listen" in result.stdout
    assert "trigger hook failed to start" in result.stderr and "no listen address" in result.stderr
    assert has_event(d, "daemon.reloaded")
    hook = readyz(control)["triggers"]["hook"]
    assert hook["status"] == "degraded"
    assert any("needs a restart" in r and "listen" in r for r in hook["reasons"]), hook
    assert d.terminate() == 0


def _answer(url: str) -> tuple[int, str | None, dict[str, Any]]:
    """Status, Retry-After and JSON body of a POST."""
    request = urllib.request.Request(url, data=b"{}", method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return int(resp.status), resp.headers.get("Retry-After"), {}
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.headers.get("Retry-After"), json.load(exc)


def test_a_paused_webhook_answers_503_with_retry_after_not_404(
    tmp_path: Path, daemon_factory: Callable[[str], Daemon]
) -> None:
    port = free_port()
    d = daemon_factory(config(tmp_path, port, webhook("hook", "/hook")))
    d.start(ready_timeout=90)
    url = f"http://127.0.0.1:{port}/hook"
    assert post(url, b"{}") == 200
    assert cli(d, "pause", "hook").returncode == 0
    paused = (503, "1", {"message": "trigger hook is paused"})
    assert _answer(url) == paused, "senders retry a 503; a 404 is permanent"
    assert d.terminate() == 0
    d.start(ready_timeout=90)
    assert _answer(url) == paused, "paused since the start"
    assert cli(d, "resume", "hook").returncode == 0
    assert post(url, b"{}") == 200
    assert d.terminate() == 0
