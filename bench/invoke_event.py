"""Invoke API `Event` calls end to end: wrk (Debian's package, its own process) posts
`X-Amz-Invocation-Type: Event` invocations of the no-op hello function to a daemon started
in-process for `seconds`; each 202 means the event is committed to the SQLite queue (WAL,
synchronous=FULL, group commit); the figure is the accepted events over the time from the
first request to the last of them invoked by a local worker. The baseline is a bare aiohttp
server answering 202 to the same wrk load (HTTP alone, nothing stored or invoked), in
alternating rounds; medians.
"""

from __future__ import annotations

import asyncio
import functools
import re
import shutil
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from bench import BenchError, Row, run_async
from bench.hello_daemon import INVOKE_PATH as PATH
from bench.hello_daemon import hello_config, hello_daemon
from triggerd.functions.backends.local import LocalBackend

NAME = "invoke_event"
WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = '{"n": 1}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-Amz-Invocation-Type"] = "Event"
"""


@dataclass(frozen=True, slots=True)
class Settings:
    seconds: float = 3.0
    connections: int = 16
    rounds: int = 3
    workers: int = 4
    #: The daemon's log level ("info" is the default: START/END/REPORT lines per invoke).
    log_level: str = "warning"


QUICK = Settings(seconds=2.0, rounds=2)
SMOKE = Settings(seconds=0.3, rounds=1, connections=4, workers=1)


def daemon_config(tmp: Path, settings: Settings) -> dict[str, Any]:
    # The control listener serves the Invoke API.
    return hello_config(tmp, workers=settings.workers, log_level=settings.log_level)


@asynccontextmanager
async def triggerd_server(settings: Settings) -> AsyncIterator[tuple[str, LocalBackend]]:
    config = functools.partial(daemon_config, settings=settings)
    async with hello_daemon(config, settings.log_level) as (daemon, local):
        yield f"http://{daemon.control_address}{PATH}", local


@asynccontextmanager
async def bare_server() -> AsyncIterator[str]:
    async def accepted(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=202)

    app = web.Application()
    app.router.add_post(PATH, accepted)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}{PATH}"
    finally:
        await runner.cleanup()


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise BenchError("wrk is not installed (apt-get install wrk)")
    return found


async def run_wrk(url: str, settings: Settings, script: Path) -> int:
    """Requests answered 2xx during `seconds`."""
    proc = await asyncio.create_subprocess_exec(
        wrk_binary(),
        "-t1",
        f"-c{settings.connections}",
        f"-d{max(1, round(settings.seconds))}s",
        "-s",
        str(script),
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    text = out.decode(errors="replace")
    total = re.search(r"(\d+) requests in", text)
    if proc.returncode != 0 or total is None:
        raise BenchError(f"wrk failed:\n{text}")
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return int(total.group(1)) - (int(bad.group(1)) if bad else 0)


async def triggerd_round(
    url: str, backend: LocalBackend, settings: Settings, script: Path
) -> float:
    before = backend.stats["invocations"]
    started = time.perf_counter()
    accepted = await run_wrk(url, settings, script)
    async with asyncio.timeout(300):
        while backend.stats["invocations"] - before < accepted:
            await asyncio.sleep(0.005)
    return accepted / (time.perf_counter() - started)


async def bare_round(url: str, settings: Settings, script: Path) -> float:
    started = time.perf_counter()
    accepted = await run_wrk(url, settings, script)
    return accepted / (time.perf_counter() - started)


async def measure(settings: Settings) -> list[Row]:
    ours: list[float] = []
    bare: list[float] = []
    with tempfile.TemporaryDirectory(prefix="triggerd-bench-") as tmp:
        script = Path(tmp) / "event.lua"
        script.write_text(WRK_SCRIPT)
        async with triggerd_server(settings) as (url, backend), bare_server() as bare_url:
            for _ in range(settings.rounds):
                ours.append(await triggerd_round(url, backend, settings, script))
                bare.append(await bare_round(bare_url, settings, script))
    return [
        Row(
            NAME,
            f"Event invocations/s end to end (202 to invoked), {settings.connections} "
            f"connections, {settings.workers} workers, log level {settings.log_level}",
            statistics.median(ours),
            statistics.median(bare),
            target=5000,
            op=">=",
            baseline_desc="bare aiohttp server answering 202 to the same wrk load, "
            "alternating rounds, medians",
            digits=0,
        )
    ]


def run(settings: Settings) -> list[Row]:
    return run_async(measure(settings))
