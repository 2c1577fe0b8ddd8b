"""Request bodies read with a cap and a deadline, through aiohttp's public stream API
(`request.content`).

Every handler on a listener reads its body with `read_body` and its own limit (the Invoke
API's 6 MB, a webhook's `max_body_bytes`), never above MAX_BODY, and answers 413 on
BodyTooLarge in its own API's shape. (A handler that calls `request.read()` instead gets
aiohttp's default `client_max_size` of 1 MiB, which aiohttp answers with a 413 too.)

`read_body` is also where `Expect: 100-continue` is answered: only when the handler asks for
the body, so everything it checked on the headers first (size, authentication) is refused
with its final status instead of a 100. The body must arrive within the listener's
`body_timeout_s` plus one second for every `body_min_bytes_per_s` bytes received (as
Apache's mod_reqtimeout counts), else 408 and the connection is closed; a body the parser
refuses (a broken chunk) is 400."""

from __future__ import annotations

import asyncio

from aiohttp import HttpVersion11, web

from triggerd.http.limits import AWS_TIMEOUT_BODY, AWS_TIMEOUT_TYPE, ListenerLimits, guard_of
from triggerd.http.refusals import mark_refused

__all__ = ["MAX_BODY", "BadBody", "BodyTimeout", "BodyTooLarge", "read_body"]

#: The largest request body the server reads (the Invoke API's 6 MB payload plus slack).
MAX_BODY = 6 * 1024 * 1024 + 1024
_READ_CHUNK = 64 * 1024
_DEFAULT_LIMITS = ListenerLimits()


class BodyTooLarge(Exception):
    """The body is over the limit (raised as soon as that is known; the rest is not read)."""


class BodyTimeout(web.HTTPRequestTimeout):
    """408: the body did not arrive in time. aiohttp sends it; the connection is closed."""

    def __init__(self, *, aws: bool = False) -> None:
        if aws:  # the control listener: AWS's error shape
            super().__init__(
                text=AWS_TIMEOUT_BODY.decode(),
                content_type="application/json",
                headers={"x-amzn-ErrorType": AWS_TIMEOUT_TYPE},
            )
        else:
            super().__init__(text='{"message":"Request Timeout"}', content_type="application/json")
        self.force_close()


class BadBody(web.HTTPBadRequest):
    """400: the body is malformed (a broken chunk, shorter than its Content-Length)."""

    def __init__(self) -> None:
        super().__init__(text='{"message":"Bad Request"}', content_type="application/json")
        self.force_close()


async def read_body(request: web.BaseRequest, limit: int) -> bytes:
    """The body, or BodyTooLarge as soon as more than `limit` bytes are declared or arrive
    (chunked bodies included), so an oversized body is never held whole. The limit is capped
    at MAX_BODY. Answers `Expect: 100-continue` first; raises BodyTimeout or BadBody."""
    limit = min(limit, MAX_BODY)
    if request.content_length is not None and request.content_length > limit:
        raise BodyTooLarge
    content = request.content
    if content.is_eof():  # the whole body came with the headers: take it in one call
        body = content.read_nowait()
        if len(body) > limit:
            raise BodyTooLarge
        return body
    await _send_continue(request)
    guard = guard_of(request)
    limits = guard.limits if guard is not None else _DEFAULT_LIMITS
    start = asyncio.get_running_loop().time() + limits.body_timeout_s
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout_at(start) as deadline:
            while chunk := await content.read(_READ_CHUNK):
                size += len(chunk)
                if size > limit:
                    raise BodyTooLarge
                chunks.append(chunk)
                deadline.reschedule(start + size / limits.body_min_bytes_per_s)
    except TimeoutError:
        mark_refused(request, "body_timeout")
        raise BodyTimeout(aws=guard is not None and guard.aws_errors) from None
    except web.RequestPayloadError:
        mark_refused(request, "bad_body")
        raise BadBody from None
    return b"".join(chunks)


async def _send_continue(request: web.BaseRequest) -> None:
    """`100 Continue` when the client waits for it (HTTP/1.1 only: 1.0 clients must not)."""
    if request.version != HttpVersion11:
        return
    if request.headers.get("Expect", "").lower() != "100-continue":
        return
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    request.writer.output_size = 0  # the interim answer is not part of the response
