"""Request bodies on the listen address: read with a cap through aiohttp's public stream API,
413 (never 500) when a body is over it, declared or chunked."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from triggerd.http.body import MAX_BODY, BodyTooLarge, read_body
from triggerd.http.routes import Routes
from triggerd.http.server import make_dispatch

LIMIT = 100_000


async def _capped(request: web.BaseRequest) -> web.StreamResponse:
    try:
        body = await read_body(request, LIMIT)
    except BodyTooLarge:
        return web.json_response({"message": "too large"}, status=413)
    return web.json_response({"size": len(body)})


async def _uncapped(request: web.BaseRequest) -> web.StreamResponse:
    # Asks for more than MAX_BODY: read_body still stops there.
    try:
        body = await read_body(request, 10 * MAX_BODY)
    except BodyTooLarge:
        return web.json_response({"message": "too large"}, status=413)
    return web.json_response({"size": len(body)})


async def _aiohttp_read(request: web.BaseRequest) -> web.StreamResponse:
    return web.json_response({"size": len(await request.read())})


@pytest.fixture
async def base_url() -> AsyncIterator[str]:
    routes = Routes()
    routes.add_route("POST", "/capped", _capped, owner="t")
    routes.add_route("POST", "/uncapped", _uncapped, owner="t")
    routes.add_route("POST", "/read", _aiohttp_read, owner="t")
    runner = web.ServerRunner(web.Server(make_dispatch(routes)), handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def _chunks(total: int, size: int = 32 * 1024) -> AsyncIterator[bytes]:
    sent = 0
    while sent < total:
        n = min(size, total - sent)
        sent += n
        yield b"x" * n


async def _post(url: str, data: object) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as session, session.post(url, data=data) as resp:
        return resp.status, await resp.read()


@pytest.mark.parametrize("size", [0, 1, LIMIT])
async def test_a_body_up_to_the_limit_is_read_whole(base_url: str, size: int) -> None:
    status, body = await _post(f"{base_url}/capped", b"y" * size)
    assert (status, body) == (200, b'{"size": %d}' % size)


async def test_a_chunked_body_up_to_the_limit_is_read_whole(base_url: str) -> None:
    status, body = await _post(f"{base_url}/capped", _chunks(LIMIT))
    assert (status, body) == (200, b'{"size": %d}' % LIMIT)


async def test_a_declared_length_over_the_limit_is_413(base_url: str) -> None:
    status, _ = await _post(f"{base_url}/capped", b"y" * (LIMIT + 1))
    assert status == 413


async def test_a_chunked_body_over_the_limit_is_413(base_url: str) -> None:
    # No Content-Length: the cap is found while reading.
    status, _ = await _post(f"{base_url}/capped", _chunks(3 * LIMIT))
    assert status == 413


async def test_no_handler_reads_more_than_max_body(base_url: str) -> None:
    status, _ = await _post(f"{base_url}/uncapped", _chunks(MAX_BODY + 1))
    assert status == 413
    status, body = await _post(f"{base_url}/uncapped", _chunks(MAX_BODY))
    assert (status, body) == (200, b'{"size": %d}' % MAX_BODY)


async def test_request_read_over_aiohttps_default_is_413_not_500(base_url: str) -> None:
    # A third-party handler that reads with request.read() is capped by aiohttp (1 MiB).
    status, _ = await _post(f"{base_url}/read", _chunks(2 * 1024 * 1024))
    assert status == 413
