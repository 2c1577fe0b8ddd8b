"""Refused requests and connections on a listener: counted by reason in
`triggerd_http_refused_total{listener,reason}`, and logged as one structured line (`http.refused`)
at most once per interval and reason, with how many were not logged since the previous line.
A flood of bad requests therefore costs a few lines a minute, never a line (or a traceback)
per request.

Reasons come from three places: the connection guard (`connection_limit`, `header_timeout`,
`send_timeout`), aiohttp's parser (`ServerLog`: `bad_request_line`, `bad_header`, ...) and the
handlers, which mark a request they refused with `mark_refused` (`body_timeout`,
`auth_failed`, ...); the dispatcher reports those."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import http_exceptions, web
from prometheus_client import Counter

__all__ = ["REFUSAL_KEY", "Refusals", "ServerLog", "mark_refused", "parse_error_reason"]

#: Where a handler leaves the reason it refused a request, for the dispatcher to report.
REFUSAL_KEY: web.RequestKey[str] = web.RequestKey("refusal", str)

#: Seconds between two log lines of one reason.
LOG_INTERVAL_S = 10.0

#: Reasons an operator has to act on, logged at WARNING (the rest are clients' mistakes or
#: attacks, at INFO): the connection cap, and a webhook's queue that is full or stuck.
_OPERATOR_REASONS = frozenset({"connection_limit", "queue_full", "not_queued_in_time"})

#: aiohttp's parse errors, most specific first.
_PARSE_ERRORS: tuple[tuple[type[http_exceptions.HttpProcessingError], str], ...] = (
    (http_exceptions.BadHttpMethod, "bad_method"),
    (http_exceptions.BadStatusLine, "bad_request_line"),
    (http_exceptions.InvalidURLError, "bad_url"),
    (http_exceptions.LineTooLong, "line_too_long"),
    (http_exceptions.InvalidHeader, "bad_header"),
    (http_exceptions.TransferEncodingError, "bad_transfer_encoding"),
    (http_exceptions.ContentLengthError, "bad_content_length"),
    (http_exceptions.PayloadEncodingError, "bad_body"),
)


def mark_refused(request: web.BaseRequest, reason: str) -> None:
    """Note that the handler refused `request` (a short snake_case reason, never a value
    taken from the request): the dispatcher counts and logs it."""
    request[REFUSAL_KEY] = reason


def parse_error_reason(exc: BaseException) -> str:
    for kind, reason in _PARSE_ERRORS:
        if isinstance(exc, kind):
            return reason
    return "bad_request"


class Refusals:
    """One listener's refusals: the counter and the rate-limited log line."""

    def __init__(
        self,
        counter: Counter,
        log: logging.Logger,
        listener: str,
        *,
        interval_s: float = LOG_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._counter = counter
        self._log = log
        self._listener = listener
        self._interval_s = interval_s
        self._clock = clock
        self._logged_at: dict[str, float] = {}
        self._unlogged: dict[str, int] = {}

    def refuse(self, reason: str, **fields: object) -> None:
        """Count one refusal; log it unless this reason was logged less than an interval ago
        (then the next line says how many were left out)."""
        self._counter.labels(self._listener, reason).inc()
        now = self._clock()
        last = self._logged_at.get(reason)
        if last is not None and now - last < self._interval_s:
            self._unlogged[reason] = self._unlogged.get(reason, 0) + 1
            return
        self._logged_at[reason] = now
        level = logging.WARNING if reason in _OPERATOR_REASONS else logging.INFO
        extra: dict[str, object] = {
            "listener": self._listener,
            "reason": reason,
            "not_logged": self._unlogged.pop(reason, 0),
            **fields,
        }
        self._log.log(level, "http.refused", extra=extra)


class ServerLog(logging.LoggerAdapter[logging.Logger]):
    """The logger aiohttp's server writes to (its `logger` argument). A request aiohttp's
    parser refused (a non-UTF-8 request line, a bad header, a broken chunk) becomes a refusal
    with its reason instead of an ERROR with a traceback; everything else (a handler's
    unexpected exception) is logged as aiohttp logs it."""

    def __init__(self, logger: logging.Logger, refusals: Refusals) -> None:
        super().__init__(logger, {})
        self.refusals = refusals

    def log(
        self,
        level: int,
        msg: object,
        *args: object,
        exc_info: Any = None,
        stack_info: bool = False,
        stacklevel: int = 1,
        extra: Mapping[str, object] | None = None,
        **kwargs: object,
    ) -> None:
        if isinstance(exc_info, http_exceptions.HttpProcessingError):
            self.refusals.refuse(parse_error_reason(exc_info))
            return
        super().log(
            level,
            msg,
            *args,
            exc_info=exc_info,
            stack_info=stack_info,
            stacklevel=stacklevel,
            extra=extra,
            **kwargs,
        )
