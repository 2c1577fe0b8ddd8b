"""Webhook requests/s and latency in sync mode: the daemon (started in-process) serving a
payload 2.0 route that invokes the no-op hello handler on the local backend, against a bare
aiohttp server returning the same response, in the same run. Both are driven by the same
in-repo load generator: an aiohttp client on loopback, a bounded number of requests in flight.

Both servers run side by side and are measured in alternating rounds (triggerd, bare,
triggerd, bare, ...), because these machines are noisy: a burst of other load hits both of a
round's figures instead of one whole side. Latency: sequential requests (one in flight) in each
round, pooled, p50 / p99; the added latency is the difference of the p50s. Throughput:
`concurrency` requests in flight; the figure of each side is its median over the rounds.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import web

from bench import HELLO_DIR, BenchError, Row, percentile, run_async, triggerd_logs_at
from triggerd.config.load import validate_data
from triggerd.config.plugins import Registry
from triggerd.daemon.app import Daemon

NAME = "webhook"
PATH = "/hello"
BODY = b'{"hello": "world"}'  # as the runtime serialises the handler's dict
JSON = {"Content-Type": "application/json"}


@dataclass(frozen=True, slots=True)
class Settings:
    #: Sequential requests per round for the latency percentiles.
    latency_requests: int = 400
    #: Seconds of each round's throughput run (the same for both servers, so that both are
    #: exposed to the machine's noise alike).
    throughput_s: float = 2.0
    #: Alternating rounds of each server.
    rounds: int = 5
    #: Requests in flight for the throughput figure.
    concurrency: int = 16
    #: Warm workers of the hello function.
    workers: int = 4
    warmup: int = 200


QUICK = Settings(latency_requests=200, throughput_s=1.0, rounds=3, warmup=50)
SMOKE = Settings(latency_requests=10, throughput_s=0.05, rounds=2, concurrency=4, warmup=5)


def daemon_config(tmp: Path, workers: int) -> dict[str, object]:
    return {
        "daemon": {
            "state": f"sqlite:///{tmp / 'state.db'}",
            "listen": "127.0.0.1:0",
            "control_listen": "",
            "log_level": "warning",
        },
        "functions": {
            "hello": {
                "handler": "app.handler",
                "code": str(HELLO_DIR),
                "timeout_s": 30,
                "reserved_concurrency": workers,
            }
        },
        "triggers": [
            {
                "name": "hook",
                "function": "hello",
                "source": {"type": "webhook", "path": PATH, "method": "POST"},
            }
        ],
    }


@asynccontextmanager
async def triggerd_server(settings: Settings) -> AsyncIterator[str]:
    with (
        triggerd_logs_at(logging.WARNING),  # the function's START/END/REPORT lines are INFO
        tempfile.TemporaryDirectory(prefix="triggerd-bench-") as tmp,
    ):
        registry = Registry.discover()
        cfg = validate_data(daemon_config(Path(tmp), settings.workers), registry, Path(tmp))
        async with Daemon(cfg, registry).running(start_timeout_s=60, stop_timeout_s=60) as daemon:
            yield f"http://{daemon.listen_address}{PATH}"


@asynccontextmanager
async def bare_server() -> AsyncIterator[str]:
    """A bare aiohttp server answering what the hello handler's 2.0 mapping answers."""

    async def hello(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=BODY, content_type="application/json")

    app = web.Application()
    app.router.add_post(PATH, hello)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        yield f"http://127.0.0.1:{port}{PATH}"
    finally:
        await runner.cleanup()


async def one(session: aiohttp.ClientSession, url: str) -> None:
    async with session.post(url, data=b'{"n":1}', headers=JSON) as r:
        body = await r.read()
        if r.status != 200 or body != BODY:
            raise BenchError(f"unexpected answer {r.status} {body[:200]!r}")


async def latencies_ms(session: aiohttp.ClientSession, url: str, count: int) -> list[float]:
    out: list[float] = []
    clock = time.perf_counter_ns
    for _ in range(count):
        t0 = clock()
        await one(session, url)
        out.append((clock() - t0) / 1e6)
    return out


async def rate(session: aiohttp.ClientSession, url: str, total: int, concurrency: int) -> float:
    per = max(1, total // concurrency)

    async def loop() -> None:
        for _ in range(per):
            await one(session, url)

    t0 = time.perf_counter()
    async with asyncio.TaskGroup() as tg:
        for _ in range(concurrency):
            tg.create_task(loop())
    return per * concurrency / (time.perf_counter() - t0)


async def rate_for(
    session: aiohttp.ClientSession, url: str, seconds: float, concurrency: int
) -> float:
    """Requests/s of `concurrency` loops sending requests for `seconds`."""
    done = 0
    t0 = time.perf_counter()
    deadline = t0 + seconds

    async def loop() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await one(session, url)
            done += 1

    async with asyncio.TaskGroup() as tg:
        for _ in range(concurrency):
            tg.create_task(loop())
    return done / (time.perf_counter() - t0)


@dataclass(slots=True)
class Figures:
    lat: list[float]
    rps: list[float]

    @property
    def median_rps(self) -> float:
        return statistics.median(self.rps)


async def round_of(
    session: aiohttp.ClientSession, url: str, settings: Settings, out: Figures
) -> None:
    out.lat.extend(await latencies_ms(session, url, settings.latency_requests))
    out.rps.append(await rate_for(session, url, settings.throughput_s, settings.concurrency))


async def measure(settings: Settings) -> list[Row]:
    ours, bare = Figures([], []), Figures([], [])
    connector = aiohttp.TCPConnector(limit=2 * settings.concurrency)
    async with (
        triggerd_server(settings) as ours_url,
        bare_server() as bare_url,
        aiohttp.ClientSession(connector=connector) as session,
    ):
        for url in (ours_url, bare_url):
            warmup = max(settings.warmup, settings.concurrency)
            await rate(session, url, warmup, settings.concurrency)
        for _ in range(settings.rounds):
            await round_of(session, ours_url, settings, ours)
            await round_of(session, bare_url, settings, bare)
    desc = "a bare aiohttp server returning the same response, same load generator"
    p50, b50 = percentile(ours.lat, 50), percentile(bare.lat, 50)
    return [
        Row(NAME, "latency p50 (ms)", p50, b50, baseline_desc=desc, digits=3),
        Row(
            NAME,
            "latency p99 (ms)",
            percentile(ours.lat, 99),
            percentile(bare.lat, 99),
            baseline_desc=desc,
            digits=3,
        ),
        Row(NAME, "added latency p50 (ms)", p50 - b50, target=2.0, digits=3),
        Row(
            NAME,
            f"requests/s, {settings.concurrency} in flight (median of {settings.rounds} rounds)",
            ours.median_rps,
            bare.median_rps,
            baseline_desc=desc,
            digits=0,
        ),
        Row(
            NAME,
            "requests/s as a share of the bare server's",
            ours.median_rps / bare.median_rps,
            target=0.4,
            op=">=",
            digits=2,
        ),
    ]


def run(settings: Settings) -> list[Row]:
    return run_async(measure(settings))
