"""Overhead of the `http` backend over a bare aiohttp client, against the same server.

A tiny aiohttp function server runs in a child process (so that the server's CPU is not
shared with the caller's event loop). Latency: N sequential invokes through the http backend
and N sequential POSTs with a bare aiohttp ClientSession. Throughput: `callers` concurrent loops
of each making `throughput_invokes` calls between them. Both clients run in the same process,
on the same event loop, one after the other, in the same run.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp
import orjson

from bench import BenchError, Row, percentile, run_async
from triggerd.functions.backends.http import HttpBackend, HttpFunctionConfig, plugin
from triggerd.types import BackendContext, Outcome, SystemClock

NAME = "http_backend"
#: Throughput rounds per client, alternating; the best of each counts.
ROUNDS = 3

PAYLOAD = orjson.dumps({"hello": "bench"})
_SERVER = """
import sys
from aiohttp import web

async def handle(request):
    body = await request.read()
    return web.Response(body=body, content_type="application/json")

async def main():
    app = web.Application()
    app.router.add_post("/fn", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(runner.addresses[0][1], flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await runner.cleanup()

import asyncio
asyncio.run(main())
"""


@dataclass(frozen=True, slots=True)
class Settings:
    #: Sequential calls measured for the latency percentiles (each client).
    invokes: int = 3000
    #: Calls before measuring (each client).
    warmup: int = 300
    #: Calls per throughput measurement (each client).
    throughput_invokes: int = 6000
    #: Concurrent callers in the throughput measurement.
    callers: int = 16


QUICK = Settings(invokes=800, warmup=100, throughput_invokes=2000)
SMOKE = Settings(invokes=20, warmup=5, throughput_invokes=40, callers=4)


async def start_server() -> tuple[asyncio.subprocess.Process, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _SERVER,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 30)
    if not line.strip().isdigit():
        raise BenchError("the function server did not start")
    return proc, f"http://127.0.0.1:{int(line)}/fn"


async def stop_server(proc: asyncio.subprocess.Process) -> None:
    assert proc.stdin is not None
    proc.stdin.close()
    try:
        await asyncio.wait_for(proc.wait(), 10)
    except TimeoutError:
        proc.kill()
        await proc.wait()


Call = Callable[[], Awaitable[None]]


async def paired_latencies_ms(a: Call, b: Call, settings: Settings) -> tuple[list[float], ...]:
    """Latencies of `a` and `b`, interleaved call by call (alternating which goes first) so
    that both see the same noise from the rest of the machine."""
    for _ in range(settings.warmup):
        await a()
        await b()
    out_a: list[float] = []
    out_b: list[float] = []
    clock = time.perf_counter_ns
    for i in range(settings.invokes):
        order = ((a, out_a), (b, out_b)) if i % 2 == 0 else ((b, out_b), (a, out_a))
        for call, out in order:
            t0 = clock()
            await call()
            out.append((clock() - t0) / 1e6)
    return out_a, out_b


async def rate(call: Call, settings: Settings) -> float:
    per_caller = max(1, settings.throughput_invokes // settings.callers)

    async def loop() -> None:
        for _ in range(per_caller):
            await call()

    t0 = time.perf_counter()
    async with asyncio.TaskGroup() as tg:
        for _ in range(settings.callers):
            tg.create_task(loop())
    return per_caller * settings.callers / (time.perf_counter() - t0)


def new_backend(url: str, settings: Settings) -> HttpBackend:
    config = HttpFunctionConfig(url=url, timeout_s=30, max_connections=settings.callers)
    ctx = BackendContext("bench", SystemClock(), logging.getLogger("bench.http_backend"))
    backend = plugin.create(config, ctx)
    assert isinstance(backend, HttpBackend)
    return backend


async def measure(settings: Settings) -> list[Row]:
    proc, url = await start_server()
    try:
        backend = new_backend(url, settings)
        await backend.start()

        async def via_backend() -> None:
            result = await backend.invoke(PAYLOAD)
            if result.outcome is not Outcome.OK:
                raise BenchError(f"invoke failed: {result.outcome.value}")

        connector = aiohttp.TCPConnector(limit=settings.callers)
        headers = {"Content-Type": "application/json"}
        async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

            async def bare() -> None:
                async with session.post(url, data=PAYLOAD) as resp:
                    if resp.status != 200 or await resp.read() != PAYLOAD:
                        raise BenchError("bare aiohttp call failed")

            try:
                lat, base_lat = await paired_latencies_ms(via_backend, bare, settings)
                rates: dict[str, list[float]] = {"backend": [], "bare": []}
                for _ in range(ROUNDS):  # alternate, keep each client's best round
                    rates["bare"].append(await rate(bare, settings))
                    rates["backend"].append(await rate(via_backend, settings))
                base_rate, tput = max(rates["bare"]), max(rates["backend"])
            finally:
                await backend.stop()
    finally:
        await stop_server(proc)
    desc = "a bare aiohttp ClientSession POSTing to the same server"
    return [
        Row(NAME, "invoke latency p50 (ms)", percentile(lat, 50), percentile(base_lat, 50),
            baseline_desc=desc, digits=3),
        Row(NAME, "invoke latency p99 (ms)", percentile(lat, 99), percentile(base_lat, 99),
            baseline_desc=desc, digits=3),
        Row(NAME, f"invocations/s, {settings.callers} callers", tput, base_rate,
            baseline_desc=desc, digits=0),
    ]  # fmt: skip


def run(settings: Settings) -> list[Row]:
    return run_async(measure(settings))
