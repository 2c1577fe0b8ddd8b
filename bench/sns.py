"""SNS Publish to invocation, against the Invoke API's Event mode on the same daemon in the same
run: a daemon started in-process with a topic whose one subscriber is the no-op hello function.

- Throughput: `connections` aiohttp clients post Publish (a form body, as boto3 sends it) for
  `seconds`; each 200 means the `aws:sns` event is committed to the function's durable queue;
  the figure is the accepted publishes over the time from the first request to the last of
  them invoked. The baseline is the same load of `X-Amz-Invocation-Type: Event` invocations of
  the same function on the same daemon (202 = committed). Alternating rounds, medians.
- Latency: one request at a time, from sending it to the function's invocation counter moving
  (p50 / p99 over `samples`), Publish against Event.
- Memory: the process's RSS before and after all rounds.
"""

from __future__ import annotations

import asyncio
import functools
import statistics
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import psutil

from bench import BenchError, Row, run_async
from bench.hello_daemon import FUNCTION, INVOKE_PATH, hello_config, hello_target
from bench.hello_daemon import Target as HelloTarget

NAME = "sns"
TOPIC_ARN = "arn:aws:sns:us-east-1:123456789012:bench"
FORM = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}
EVENT = {"Content-Type": "application/json", "X-Amz-Invocation-Type": "Event"}


@dataclass(frozen=True, slots=True)
class Settings:
    seconds: float = 3.0
    connections: int = 16
    rounds: int = 3
    workers: int = 4
    samples: int = 300
    log_level: str = "warning"


QUICK = Settings(seconds=2.0, rounds=2, samples=150)
SMOKE = Settings(seconds=0.3, rounds=1, connections=4, workers=1, samples=10)


def daemon_config(tmp: Path, settings: Settings) -> dict[str, Any]:
    return {
        **hello_config(tmp, workers=settings.workers, log_level=settings.log_level),
        "sns": {"topics": [{"name": "bench", "subscriptions": [{"function": FUNCTION}]}]},
    }


class Target(HelloTarget):
    async def publish(self, n: int) -> bool:
        body = urlencode(
            {
                "Action": "Publish",
                "Version": "2010-03-31",
                "TopicArn": TOPIC_ARN,
                "Message": f'{{"n": {n}}}',
            }
        )
        async with self.http.post(self.base + "/", data=body, headers=FORM) as resp:
            await resp.read()
            return resp.status == 200

    async def event(self, n: int) -> bool:
        async with self.http.post(
            self.base + INVOKE_PATH, data=f'{{"n": {n}}}', headers=EVENT
        ) as resp:
            await resp.read()
            return resp.status == 202


@asynccontextmanager
async def daemon(settings: Settings) -> AsyncIterator[Target]:
    config = functools.partial(daemon_config, settings=settings)
    async with hello_target(Target, config, settings.log_level, settings.connections) as target:
        yield target


async def throughput_round(target: Target, settings: Settings, publish: bool) -> float:
    """Accepted requests per second, from the first request to the last of them invoked."""
    call = target.publish if publish else target.event
    before = target.invoked
    accepted = 0
    started = time.perf_counter()
    stop_at = started + settings.seconds

    async def client(k: int) -> None:
        nonlocal accepted
        n = 0
        while time.perf_counter() < stop_at:
            n += 1
            if await call(k * 1_000_000 + n):
                accepted += 1

    async with asyncio.TaskGroup() as tg:
        for k in range(settings.connections):
            tg.create_task(client(k))
    await target.wait_invoked(before + accepted, poll_s=0.002)
    return accepted / (time.perf_counter() - started)


async def latencies(target: Target, settings: Settings, publish: bool) -> list[float]:
    """Milliseconds from sending one request to its invocation, one at a time."""
    call = target.publish if publish else target.event
    out = []
    for n in range(settings.samples):
        before = target.invoked
        started = time.perf_counter()
        if not await call(n):
            raise BenchError("a request was refused")
        await target.wait_invoked(before + 1)
        out.append((time.perf_counter() - started) * 1000)
    return out


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(settings: Settings) -> list[Row]:
    proc = psutil.Process()
    sns_rates: list[float] = []
    event_rates: list[float] = []
    async with daemon(settings) as target:
        await latencies(target, Settings(samples=5), True)  # warm both paths
        rss_before = proc.memory_info().rss
        for _ in range(settings.rounds):
            sns_rates.append(await throughput_round(target, settings, True))
            event_rates.append(await throughput_round(target, settings, False))
        sns_lat = await latencies(target, settings, True)
        event_lat = await latencies(target, settings, False)
        rss_after = proc.memory_info().rss
    desc = "the Invoke API's Event mode on the same daemon and function, alternating rounds"
    load = f"{settings.connections} connections, {settings.workers} workers"
    return [
        Row(
            NAME,
            f"Publish-to-invoke publishes/s ({load}), median of {settings.rounds}",
            statistics.median(sns_rates),
            statistics.median(event_rates),
            baseline_desc=desc + ", medians",
            digits=0,
        ),
        Row(
            NAME,
            f"Publish-to-invoke latency p50, ms (one at a time, {settings.samples} samples)",
            statistics.median(sns_lat),
            statistics.median(event_lat),
            baseline_desc="Event invocation to invoke, same daemon",
        ),
        Row(
            NAME,
            "Publish-to-invoke latency p99, ms",
            _pct(sns_lat, 0.99),
            _pct(event_lat, 0.99),
            baseline_desc="Event invocation to invoke, same daemon",
        ),
        Row(
            NAME,
            "process RSS after all rounds, MB (daemon in-process)",
            rss_after / 1e6,
            rss_before / 1e6,
            baseline_desc="the same process's RSS after the warm-up, before the rounds",
            digits=1,
        ),
    ]


def run(settings: Settings) -> list[Row]:
    return run_async(measure(settings))
