"""Refusals on a listener: counted by reason, logged at most once per interval and reason
with the number left out, at WARNING only for what an operator must act on; aiohttp's parse
errors become refusals instead of tracebacks."""

from __future__ import annotations

import logging

import pytest
from aiohttp import http_exceptions
from prometheus_client import CollectorRegistry, Counter

from triggerd.http.refusals import Refusals, ServerLog, parse_error_reason


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make(clock: Clock) -> tuple[Refusals, CollectorRegistry, logging.Logger]:
    registry = CollectorRegistry()
    counter = Counter("t_refused", "t", ["listener", "reason"], registry=registry)
    log = logging.getLogger("tests.refusals")
    return Refusals(counter, log, "public", interval_s=10, clock=clock), registry, log


def count(registry: CollectorRegistry, reason: str) -> float:
    return (
        registry.get_sample_value("t_refused_total", {"listener": "public", "reason": reason})
        or 0.0
    )


def lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == "http.refused"]


def test_a_burst_is_counted_whole_and_logged_once_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="tests.refusals")
    clock = Clock()
    refusals, counter, _ = make(clock)
    for _ in range(200):
        refusals.refuse("bad_url", remote="203.0.113.9")
    assert count(counter, "bad_url") == 200
    [first] = lines(caplog)
    assert (first.reason, first.not_logged, first.listener) == ("bad_url", 0, "public")  # type: ignore[attr-defined]
    clock.now += 10
    refusals.refuse("bad_url")
    second = lines(caplog)[-1]
    assert len(lines(caplog)) == 2 and second.not_logged == 199  # type: ignore[attr-defined]


def test_reasons_are_rate_limited_separately(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="tests.refusals")
    refusals, _, _ = make(Clock())
    for reason in ("bad_url", "auth_failed", "bad_url", "auth_failed"):
        refusals.refuse(reason)
    assert [r.reason for r in lines(caplog)] == ["bad_url", "auth_failed"]  # type: ignore[attr-defined]


def test_the_connection_cap_is_a_warning_and_client_mistakes_are_info(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="tests.refusals")
    refusals, _, _ = make(Clock())
    refusals.refuse("connection_limit", max_connections=5)
    refusals.refuse("auth_failed")
    assert [r.levelno for r in lines(caplog)] == [logging.WARNING, logging.INFO]


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (http_exceptions.BadHttpMethod("\xff"), "bad_method"),
        (http_exceptions.BadStatusLine("GET"), "bad_request_line"),
        (http_exceptions.InvalidURLError("x"), "bad_url"),
        (http_exceptions.LineTooLong("line", 8190), "line_too_long"),
        (http_exceptions.InvalidHeader("X"), "bad_header"),
        (http_exceptions.TransferEncodingError("x"), "bad_transfer_encoding"),
        (http_exceptions.BadHttpMessage("x"), "bad_request"),
    ],
)
def test_parse_errors_have_a_reason(exc: BaseException, reason: str) -> None:
    assert parse_error_reason(exc) == reason


def test_the_server_log_turns_parse_errors_into_refusals_and_keeps_other_errors(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    refusals, counter, log = make(Clock())
    server_log = ServerLog(log, refusals)
    server_log.exception(
        "Error handling request from %s", "1.2.3.4", exc_info=http_exceptions.BadStatusLine("x")
    )
    assert count(counter, "bad_request_line") == 1
    assert [r for r in caplog.records if r.exc_info] == []
    try:
        raise RuntimeError("a handler bug")
    except RuntimeError as exc:
        server_log.exception("Error handling request", exc_info=exc)
    [bug] = [r for r in caplog.records if r.exc_info]
    assert bug.levelno == logging.ERROR
