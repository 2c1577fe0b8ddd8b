"""Request bodies read with a cap, through aiohttp's public stream API (`request.content`).

Every handler on the listen address reads its body with `read_body` and its own limit (the
Invoke API's 6 MB, a webhook's `max_body_bytes`), never above MAX_BODY, and answers 413 on
BodyTooLarge in its own API's shape. (A handler that calls `request.read()` instead gets
aiohttp's default `client_max_size` of 1 MiB, which aiohttp answers with a 413 too.)"""

from __future__ import annotations

from aiohttp import web

__all__ = ["MAX_BODY", "BodyTooLarge", "read_body"]

#: The largest request body the server reads (the Invoke API's 6 MB payload plus slack).
MAX_BODY = 6 * 1024 * 1024 + 1024
_READ_CHUNK = 64 * 1024


class BodyTooLarge(Exception):
    """The body is over the limit (raised as soon as that is known; the rest is not read)."""


async def read_body(request: web.BaseRequest, limit: int) -> bytes:
    """The body, or BodyTooLarge as soon as more than `limit` bytes are declared or arrive
    (chunked bodies included), so an oversized body is never held whole. The limit is capped
    at MAX_BODY."""
    limit = min(limit, MAX_BODY)
    if request.content_length is not None and request.content_length > limit:
        raise BodyTooLarge
    content = request.content
    if content.is_eof():  # the whole body came with the headers: take it in one call
        body = content.read_nowait()
        if len(body) > limit:
            raise BodyTooLarge
        return body
    chunks: list[bytes] = []
    size = 0
    while chunk := await content.read(_READ_CHUNK):
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)
