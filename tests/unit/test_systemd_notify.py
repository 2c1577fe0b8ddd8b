"""sd_notify messages on a real AF_UNIX datagram socket: their exact text."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from triggerd.daemon.systemd import Notifier


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.setblocking(False)
    yield sock
    sock.close()


def received(sock: socket.socket) -> list[str]:
    out = []
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except BlockingIOError:
            return out


def test_ready_reloading_status_and_stopping(listener: socket.socket) -> None:
    notifier = Notifier(listener.getsockname(), None)
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    notifier.ready("2 triggers running, 0 paused, 0 failing")
    notifier.status("2 triggers running, 0 paused, 0 failing")  # unchanged: not sent
    notifier.reloading()
    notifier.status("1 trigger running, 1 paused, 0 failing")
    notifier.stopping()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    ready, reloading, status, stopping = received(listener)
    assert ready == "READY=1\nSTATUS=2 triggers running, 0 paused, 0 failing"
    head, stamp = reloading.split("\n")
    assert head == "RELOADING=1"
    assert before <= int(stamp.removeprefix("MONOTONIC_USEC=")) <= after
    assert status == "STATUS=1 trigger running, 1 paused, 0 failing"
    assert stopping == "STOPPING=1"


def test_without_a_socket_nothing_is_sent_and_nothing_fails() -> None:
    notifier = Notifier(None, None)
    assert notifier.notify("READY=1") is False
    notifier.reloading()
    notifier.ready("x")


def test_watchdog_usec_zero_or_for_another_pid_means_no_watchdog(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "0")
    assert Notifier.from_env().watchdog_s is None
    monkeypatch.setenv("WATCHDOG_USEC", "4000000")
    monkeypatch.setenv("WATCHDOG_PID", "1")
    assert Notifier.from_env().watchdog_s is None
    monkeypatch.delenv("WATCHDOG_PID")
    assert Notifier.from_env().watchdog_s == 4.0


async def test_follow_status_sends_each_change_once(listener: socket.socket) -> None:
    notifier = Notifier(listener.getsockname(), None)
    summaries = iter(["a", "a", "b"])
    stop = asyncio.Event()
    seen: list[str] = []

    def summary() -> str:
        value = next(summaries, "b")
        seen.append(value)
        if len(seen) == 4:
            stop.set()
        return value

    await notifier.follow_status(summary, stop, every_s=0)
    assert received(listener) == ["STATUS=a", "STATUS=b"]
