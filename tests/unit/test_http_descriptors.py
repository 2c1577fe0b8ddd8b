"""The descriptor reservation of the listeners (one for all of them, and the workers) and the
loop's exception handler that turns accept() failures for want of descriptors into one
rate-limited line."""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
from typing import Any

import pytest

from triggerd.http import limits
from triggerd.http.limits import (
    BUSY_LINGERING,
    DESCRIPTOR_HEADROOM,
    WORKER_DESCRIPTORS,
    AcceptErrors,
    ensure_descriptors,
)

OPEN_NOW = 20


class FakeRlimit:
    def __init__(self, soft: int, hard: int) -> None:
        self.soft, self.hard = soft, hard

    def get(self, which: int) -> tuple[int, int]:
        return self.soft, self.hard

    def set(self, which: int, value: tuple[int, int]) -> None:
        self.soft, self.hard = value


@pytest.fixture
def rlimit(monkeypatch: pytest.MonkeyPatch) -> FakeRlimit:
    fake = FakeRlimit(64, 4096)
    monkeypatch.setattr(limits.os, "listdir", lambda path: ["fd"] * OPEN_NOW)
    monkeypatch.setattr(limits.resource, "getrlimit", fake.get)
    monkeypatch.setattr(limits.resource, "setrlimit", fake.set)
    return fake


def test_the_limit_is_raised_for_every_listeners_cap_at_once(rlimit: FakeRlimit) -> None:
    assert ensure_descriptors(60, listeners=2) is None
    assert rlimit.soft == OPEN_NOW + 2 * (60 + BUSY_LINGERING) + DESCRIPTOR_HEADROOM
    assert rlimit.hard == 4096


def test_workers_that_may_still_start_get_their_descriptors(rlimit: FakeRlimit) -> None:
    assert ensure_descriptors(60, listeners=2, workers=10) is None
    assert (
        rlimit.soft
        == OPEN_NOW + 2 * (60 + BUSY_LINGERING) + 10 * WORKER_DESCRIPTORS + DESCRIPTOR_HEADROOM
    )


def test_the_backends_connection_pools_get_their_descriptors(rlimit: FakeRlimit) -> None:
    assert ensure_descriptors(60, listeners=1, outbound=110) is None
    assert rlimit.soft == OPEN_NOW + (60 + BUSY_LINGERING) + 110 + DESCRIPTOR_HEADROOM


def test_a_soft_limit_that_fits_is_left_alone(rlimit: FakeRlimit) -> None:
    rlimit.soft = 1000
    assert ensure_descriptors(60, listeners=2) is None
    assert rlimit.soft == 1000


def test_caps_that_do_not_fit_under_the_hard_limit_name_the_listeners(
    rlimit: FakeRlimit,
) -> None:
    rlimit.hard = 128
    problem = ensure_descriptors(60, listeners=2)
    needed = OPEN_NOW + 2 * (60 + BUSY_LINGERING) + DESCRIPTOR_HEADROOM
    assert problem == (
        f"daemon.http_max_connections = 60 on each of 2 listeners needs about {needed} "
        "open files, but the limit is 128 "
        "(LimitNOFILE= in the unit, ulimit -n): raise the limit or lower http_max_connections"
    )
    assert rlimit.soft == 64


def test_an_infinite_soft_limit_needs_nothing(rlimit: FakeRlimit) -> None:
    rlimit.soft = resource.RLIM_INFINITY
    assert ensure_descriptors(1_000_000, listeners=2) is None


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def out_of_descriptors() -> dict[str, object]:
    # What asyncio's selector loop hands its exception handler when accept() fails.
    return {
        "message": "socket.accept() out of system resource",
        "exception": OSError(errno.EMFILE, "Too many open files"),
    }


async def test_accept_failures_are_one_rate_limited_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="tests.accept")
    clock = Clock()
    loop = asyncio.get_running_loop()
    restore = AcceptErrors(logging.getLogger("tests.accept"), interval_s=10, clock=clock).install(
        loop
    )
    try:
        for _ in range(5):
            loop.call_exception_handler(out_of_descriptors())
        clock.now += 10
        loop.call_exception_handler(out_of_descriptors())
    finally:
        restore()
    lines = [r for r in caplog.records if r.getMessage() == "http.accept_failed"]
    assert [(r.levelno, r.__dict__["not_logged"]) for r in lines] == [
        (logging.ERROR, 0),
        (logging.ERROR, 4),
    ]
    assert lines[0].__dict__["error"] == "Too many open files"
    assert all(r.exc_info is None for r in caplog.records)


async def test_other_loop_errors_go_to_the_previous_handler() -> None:
    loop = asyncio.get_running_loop()
    seen: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda loop, context: seen.append(context))
    try:
        restore = AcceptErrors(logging.getLogger("tests.accept")).install(loop)
        other = {"message": "Task exception was never retrieved", "exception": ValueError("x")}
        refused = {"message": "socket.accept() failed", "exception": ConnectionAbortedError()}
        loop.call_exception_handler(other)
        loop.call_exception_handler(refused)
        restore()
        assert loop.get_exception_handler() is not None
        loop.call_exception_handler(out_of_descriptors())
    finally:
        loop.set_exception_handler(None)
    # The last one came after `restore`: the previous handler has it again.
    assert [c["message"] for c in seen] == [
        "Task exception was never retrieved",
        "socket.accept() failed",
        "socket.accept() out of system resource",
    ]
