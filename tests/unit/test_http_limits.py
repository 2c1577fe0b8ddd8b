"""The connection guard with a fake transport: the cap answers 503 before aiohttp sees the
connection, a late head gets 408, an idle connection is closed quietly, a slow reader keeps
its connection while it takes its response and is cut off when it stops."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter

from triggerd.http import limits
from triggerd.http.limits import BUSY, REQUEST_TIMEOUT, ConnectionGuard, Listener, ListenerLimits
from triggerd.http.refusals import Refusals

LIMITS = ListenerLimits(header_timeout_s=0.05, idle_timeout_s=0.05, max_connections=1)


class FakeTransport:
    """What the guard and aiohttp's protocol use of a stream transport."""

    def __init__(self, half_close: bool = False) -> None:
        self.written = b""
        self.unsent = 0
        #: Whether it can send a FIN (TCP; a TLS transport cannot).
        self.half_close = half_close
        self.eof_written = False
        self.closed = asyncio.get_running_loop().create_future()
        self.protocol: Any = None

    def write(self, data: bytes) -> None:
        self.written += data

    def get_write_buffer_size(self) -> int:
        return self.unsent

    def close(self) -> None:
        if not self.closed.done():
            self.closed.set_result("close")

    def abort(self) -> None:
        if not self.closed.done():
            self.closed.set_result("abort")

    def can_write_eof(self) -> bool:
        return self.half_close

    def write_eof(self) -> None:
        assert self.half_close
        self.eof_written = True

    def is_closing(self) -> bool:
        return self.closed.done()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def get_protocol(self) -> Any:
        return self.protocol

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


async def _never(request: web.BaseRequest) -> web.StreamResponse:
    raise AssertionError("no request reaches the handler in these tests")


def listener() -> tuple[Listener, CollectorRegistry]:
    registry = CollectorRegistry()
    counter = Counter("t_refused", "t", ["listener", "reason"], registry=registry)
    refusals = Refusals(counter, logging.getLogger("tests.limits"), "public")
    return Listener(web.Server(_never), LIMITS, refusals), registry


def refused(registry: CollectorRegistry, reason: str) -> float:
    return (
        registry.get_sample_value("t_refused_total", {"listener": "public", "reason": reason})
        or 0.0
    )


def open_connection(lst: Listener) -> tuple[ConnectionGuard, FakeTransport]:
    guard = lst.guard()
    transport = FakeTransport()
    transport.protocol = guard
    guard.connection_made(transport)  # type: ignore[arg-type]
    return guard, transport


async def closed(transport: FakeTransport) -> str:
    return await asyncio.wait_for(transport.closed, 5)


async def test_a_connection_over_the_cap_is_answered_503_and_closed_at_once() -> None:
    lst, registry = listener()
    first, _ = open_connection(lst)
    _, second = open_connection(lst)
    assert second.closed.done() and second.written == BUSY
    assert lst.open == 1 and refused(registry, "connection_limit") == 1
    first.connection_lost(None)
    assert lst.open == 0
    _, third = open_connection(lst)
    assert not third.closed.done(), "a freed slot admits the next connection"


async def test_a_503_over_the_cap_lingers_half_closed_so_the_client_reads_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(limits, "BUSY_LINGER_S", 0.01)
    lst, _ = listener()
    open_connection(lst)
    busy = [FakeTransport(half_close=True) for _ in range(limits.BUSY_LINGERING + 1)]
    guards = []
    for transport in busy:
        guard = lst.guard()
        transport.protocol = guard
        guard.connection_made(transport)  # type: ignore[arg-type]
        guards.append(guard)
    lingering, last = busy[:-1], busy[-1]
    assert all(t.written == BUSY and t.eof_written for t in lingering)
    assert not any(t.closed.done() for t in lingering), "the request is read and dropped"
    guards[0].data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert lst.lingering == limits.BUSY_LINGERING
    assert last.written == BUSY and not last.eof_written and last.closed.done(), (
        "over the bound: closed at once"
    )
    assert await lingering[0].closed == "close"  # after BUSY_LINGER_S
    for guard in guards:
        guard.connection_lost(None)
    assert lst.lingering == 0 and lst.open == 1


async def test_a_late_head_gets_408_and_a_silent_connection_nothing() -> None:
    lst, registry = listener()
    guard, transport = open_connection(lst)
    guard.data_received(b"GET / HTTP/1.1\r\n")
    assert await closed(transport) == "close"
    assert transport.written == REQUEST_TIMEOUT
    guard.connection_lost(None)
    guard, silent = open_connection(lst)
    assert await closed(silent) == "close" and silent.written == b""
    assert refused(registry, "header_timeout") == 2


async def test_an_idle_connection_is_closed_without_counting_a_refusal() -> None:
    lst, registry = listener()
    guard, transport = open_connection(lst)
    guard.request_started()
    guard.request_finished(body_read=True)
    assert await closed(transport) == "close"
    assert transport.written == b"" and refused(registry, "header_timeout") == 0


async def test_a_slow_reader_keeps_its_connection_while_it_reads_and_is_cut_off_when_it_stops() -> (
    None
):
    lst, registry = listener()
    guard, transport = open_connection(lst)
    # What is left of the response at each idle deadline: it shrinks three times, then stalls.
    seen = iter([1000, 800, 500, 100, 100])
    checks: list[int] = []

    def unsent() -> int:
        checks.append(next(seen))
        return checks[-1]

    transport.get_write_buffer_size = unsent  # type: ignore[method-assign]
    guard.request_started()
    guard.request_finished(body_read=True)
    assert await closed(transport) == "abort"
    assert checks == [1000, 800, 500, 100, 100]
    assert refused(registry, "send_timeout") == 1


async def test_no_deadline_runs_while_a_handler_works() -> None:
    lst, _ = listener()
    lst.limits = ListenerLimits(header_timeout_s=0.05, max_connections=2)
    guard, busy = open_connection(lst)
    guard.data_received(b"POST / HTTP/1.1\r\n")
    guard.request_started()
    # A connection opened later, with the same header timeout, is closed first.
    _, later = open_connection(lst)
    await closed(later)
    assert not busy.closed.done()
