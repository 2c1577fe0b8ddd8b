"""SIGTERM while an exhausted event's on-failure record is being delivered: the drain times out,
the record still arrives once, the event is completed, and a restart does not invoke the
function again (Lambda never re-runs an event whose retries are exhausted); a second signal
still forces the exit while the record is held."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.integration.sqs_harness import depth, make_queue, sqs_client
from tests.system.conftest import FUNCTIONS, Daemon, free_port, wait_for

pytestmark = [pytest.mark.system, pytest.mark.usefixtures("aws_env")]

#: The longest the proxy holds a SendMessage (the test lets it go sooner).
HOLD_S = 30.0


class SlowSendProxy:
    """A TCP proxy in front of moto_server that holds each request naming SendMessage until
    `passing` is set (a destination slow to accept); other bytes pass at once."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.port = free_port()
        self.sends = threading.Event()  # a SendMessage reached the proxy
        self.passing = threading.Event()
        self._server = socket.create_server(("127.0.0.1", self.port))
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []

    def __enter__(self) -> SlowSendProxy:
        self._spawn(self._accept)
        return self

    def __exit__(self, *exc: object) -> None:
        self.passing.set()
        for s in [self._server, *self._sockets]:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)  # wakes the threads blocked on it
            s.close()
        for t in self._threads:
            t.join(5)

    def _spawn(self, target: Any, *args: Any) -> None:
        t = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(t)
        t.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.upstream)
            self._sockets += [client, upstream]
            self._spawn(self._pump, client, upstream, True)
            self._spawn(self._pump, upstream, client, False)

    def _pump(self, src: socket.socket, dst: socket.socket, requests: bool) -> None:
        with contextlib.suppress(OSError):
            while chunk := src.recv(65536):
                if requests and b"SendMessage" in chunk:
                    self.sends.set()
                    self.passing.wait(HOLD_S)
                dst.sendall(chunk)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


@pytest.fixture
def dlq_url(moto_server: str) -> str:
    async def make() -> str:
        async with sqs_client(moto_server) as c:
            return await make_queue(c, "dlq")

    return asyncio.run(make())


@pytest.fixture
def proxy(moto_server: str) -> Iterator[SlowSendProxy]:
    with SlowSendProxy(moto_server) as p:
        yield p


def messages(endpoint: str, url: str) -> int:
    async def count() -> int:
        async with sqs_client(endpoint) as c:
            return await depth(c, url)

    return asyncio.run(count())


def queued(db: Path) -> int:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return int(conn.execute("select count(*) from queue").fetchone()[0])


def invocations(d: Daemon) -> int:
    return sum("START RequestId" in str(e.get("event")) for e in d.events())


def config(tmp: Path, dlq_url: str, endpoint: str) -> str:
    return f"""
[daemon]
state = "sqlite:///state/state.db"
listen = "127.0.0.1:{free_port()}"
control_listen = "127.0.0.1:{free_port()}"
shutdown_timeout_s = 1
log_format = "json"

[functions.recorder]
handler = "app.handler"
code = "{FUNCTIONS / "recorder"}"
timeout_s = 10
environment = {{ RECORD_FILE = "{tmp / "calls.jsonl"}" }}

[[triggers]]
name = "inbox"
function = "recorder"
source = {{ type = "directory", path = "inbox", bucket = "inbox", stable_s = 0.1 }}
maximum_retry_attempts = 0
on_failure = {{ type = "sqs", queue_url = "{dlq_url}", endpoint_url = "{endpoint}" }}
"""


def test_sigterm_during_the_on_failure_delivery_neither_reinvokes_nor_writes_it_twice(
    tmp_path: Path,
    moto_server: str,
    dlq_url: str,
    proxy: SlowSendProxy,
    daemon_factory: Any,
) -> None:
    (tmp_path / "inbox").mkdir()
    endpoint = f"http://127.0.0.1:{proxy.port}"
    d: Daemon = daemon_factory(config(tmp_path, dlq_url, endpoint))
    d.start()
    (tmp_path / "inbox" / "poison.txt").write_text("p")  # the function fails on it
    assert proxy.sends.wait(60), "the on-failure record was not sent"
    assert d.proc is not None
    d.proc.send_signal(signal.SIGTERM)  # while the proxy holds the record
    wait_for(
        lambda: any(e.get("event") == "daemon.drain_timeout" for e in d.events()),
        30,
        "the drain to time out",
    )
    proxy.passing.set()  # the destination takes the record now
    assert d.proc.wait(30) == 0
    first_run = invocations(d)
    left_queued = queued(tmp_path / "state" / "state.db")
    d.start()
    wait_for(lambda: queued(tmp_path / "state" / "state.db") == 0, 60, "an empty queue")
    assert d.terminate() == 0
    assert first_run == 1
    assert (left_queued, invocations(d), messages(moto_server, dlq_url)) == (0, 0, 1), (
        "(events queued after the SIGTERM, invocations after the restart, failure records)"
    )


def test_a_second_sigterm_exits_while_the_on_failure_record_is_still_held(
    tmp_path: Path, dlq_url: str, proxy: SlowSendProxy, daemon_factory: Any
) -> None:
    (tmp_path / "inbox").mkdir()
    d: Daemon = daemon_factory(config(tmp_path, dlq_url, f"http://127.0.0.1:{proxy.port}"))
    d.start()
    (tmp_path / "inbox" / "poison.txt").write_text("p")
    assert proxy.sends.wait(60), "the on-failure record was not sent"
    assert d.proc is not None
    d.proc.send_signal(signal.SIGTERM)
    wait_for(
        lambda: any(e.get("event") == "daemon.drain_timeout" for e in d.events()),
        30,
        "the drain to time out",
    )
    d.proc.send_signal(signal.SIGTERM)  # during the delivery's grace: forced
    # Exits (status 1: forced) while the proxy still holds the record, for HOLD_S.
    assert d.proc.wait(HOLD_S / 2) == 1
    events = [e.get("event") for e in d.events()]
    assert "event.dead_letter_interrupted" not in events, "it waited out the delivery's grace"
    assert queued(tmp_path / "state" / "state.db") == 1, "the event is kept for the next start"
