"""PutEvents to invoke through an event bus, against the Invoke API's `Event` mode on the same
daemon in the same run (the raw baseline: one durable enqueue per call, no bus).

One in-process daemon (SQLite queue, WAL, group commit) with the no-op hello function and a
bus whose rule (a prefix pattern and an input transformer) targets it. Throughput: `callers`
concurrent aiohttp clients each send `calls` requests (PutEvents with one entry, or with ten;
Invoke Event with one event), and the figure is the events invoked over the time from the
first request to the last invocation. Latency: one request at a time, from the request to
the function's invocation (the worker's invocation counter, polled every 0.2 ms, the same
way for both). Alternating rounds, medians. The RSS growth of this process (daemon and
clients) over the rounds is the memory figure."""

from __future__ import annotations

import asyncio
import functools
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from bench import BenchError, Row, percentile, run_async
from bench.hello_daemon import FUNCTION, INVOKE_PATH, hello_config, hello_target
from bench.hello_daemon import Target as HelloTarget

NAME = "eventbridge"
TEMPLATE = '{"n": <n>, "rule": "<aws.events.rule-name>"}'


@dataclass(frozen=True, slots=True)
class Settings:
    callers: int = 16
    calls: int = 150
    latency_samples: int = 200
    rounds: int = 3
    workers: int = 4
    log_level: str = "warning"


QUICK = Settings(calls=60, latency_samples=80, rounds=2)
SMOKE = Settings(callers=2, calls=3, latency_samples=3, rounds=1, workers=1)


def daemon_config(tmp: Path, settings: Settings) -> dict[str, Any]:
    return {
        **hello_config(tmp, workers=settings.workers, log_level=settings.log_level),
        "event_buses": [
            {
                "rules": [
                    {
                        "name": "bench",
                        "event_pattern": {"source": [{"prefix": "bench."}]},
                        "targets": [
                            {
                                "function": FUNCTION,
                                "input_transformer": {
                                    "input_paths_map": {"n": "$.detail.n"},
                                    "input_template": TEMPLATE,
                                },
                            }
                        ],
                    }
                ]
            }
        ],
    }


class Target(HelloTarget):
    async def put_events(self, entries: int) -> int:
        body = orjson.dumps(
            {
                "Entries": [{"Source": "bench.app", "DetailType": "Tick", "Detail": '{"n": 1}'}]
                * entries
            }
        )
        headers = {
            "X-Amz-Target": "AWSEvents.PutEvents",
            "Content-Type": "application/x-amz-json-1.1",
        }
        async with self.http.post(self.base + "/", data=body, headers=headers) as resp:
            doc = orjson.loads(await resp.read())
            if resp.status != 200 or doc.get("FailedEntryCount"):
                raise BenchError(f"PutEvents answered {resp.status}: {doc}")
        return entries

    async def invoke_event(self, entries: int) -> int:
        headers = {"X-Amz-Invocation-Type": "Event"}
        async with self.http.post(
            self.base + INVOKE_PATH, data=b'{"n": 1}', headers=headers
        ) as resp:
            await resp.read()
            if resp.status != 202:
                raise BenchError(f"Invoke Event answered {resp.status}")
        return 1


Send = Callable[[int], Awaitable[int]]


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Target]:
    config = functools.partial(daemon_config, settings=settings)
    async with hello_target(Target, config, settings.log_level, settings.callers) as target:
        yield target


async def throughput(target: Target, send: Send, entries: int, settings: Settings) -> float:
    """Events invoked per second with `callers` concurrent senders."""
    before = target.invoked
    started = time.perf_counter()

    async def caller() -> int:
        return sum([await send(entries) for _ in range(settings.calls)])

    sent = sum(await asyncio.gather(*(caller() for _ in range(settings.callers))))
    await target.wait_invoked(before + sent)
    return sent / (time.perf_counter() - started)


async def latencies(target: Target, send: Send, settings: Settings) -> list[float]:
    """Milliseconds from the request to the invocation, one event at a time."""
    out = []
    for _ in range(settings.latency_samples):
        before = target.invoked
        started = time.perf_counter()
        await send(1)
        await target.wait_invoked(before + 1)
        out.append((time.perf_counter() - started) * 1000)
    return out


async def measure(settings: Settings) -> list[Row]:
    import psutil

    rates: dict[str, list[float]] = {"put1": [], "put10": [], "invoke": []}
    lat: dict[str, list[float]] = {"put": [], "invoke": []}
    async with running(settings) as target:
        await latencies(target, target.put_events, Settings(latency_samples=5))  # warm up
        rss_before = psutil.Process().memory_info().rss / 1024 / 1024
        for _ in range(settings.rounds):
            rates["put1"].append(await throughput(target, target.put_events, 1, settings))
            rates["invoke"].append(await throughput(target, target.invoke_event, 1, settings))
            rates["put10"].append(await throughput(target, target.put_events, 10, settings))
            lat["put"] += await latencies(target, target.put_events, settings)
            lat["invoke"] += await latencies(target, target.invoke_event, settings)
        rss_growth = psutil.Process().memory_info().rss / 1024 / 1024 - rss_before
    invoke_rate = statistics.median(rates["invoke"])
    baseline = "Invoke API Event mode, same daemon, same clients, alternating rounds, medians"
    conc = f"{settings.callers} concurrent callers, {settings.workers} workers"
    return [
        Row(
            NAME,
            f"events/s PutEvents (1 entry) to invoke, {conc}",
            statistics.median(rates["put1"]),
            invoke_rate,
            baseline_desc=baseline,
            digits=0,
        ),
        Row(
            NAME,
            f"events/s PutEvents (10 entries) to invoke, {conc}",
            statistics.median(rates["put10"]),
            invoke_rate,
            baseline_desc=baseline,
            digits=0,
        ),
        Row(
            NAME,
            "PutEvents to invoke latency p50 (ms), one at a time",
            percentile(lat["put"], 50),
            percentile(lat["invoke"], 50),
            baseline_desc=baseline,
        ),
        Row(
            NAME,
            "PutEvents to invoke latency p99 (ms), one at a time",
            percentile(lat["put"], 99),
            percentile(lat["invoke"], 99),
            baseline_desc=baseline,
        ),
        Row(NAME, f"RSS growth over {settings.rounds} rounds (MB)", rss_growth, digits=1),
    ]


def run(settings: Settings) -> list[Row]:
    return run_async(measure(settings))
