"""One trigger of a connector's poll source, for the connectors' integration tests: its source
and on-failure destination from a registry, on a SQLite store, run by the real pipeline
against a scripted FakeBackend until a condition holds."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.fakes import FakeBackend, one_trigger
from triggerd.config.plugins import Registry
from triggerd.daemon.app import PAYLOAD_DESTINATIONS
from triggerd.delivery.onfailure import OnFailure
from triggerd.delivery.pipeline import SyncTrigger, TriggerRuntime
from triggerd.state.sqlite import SQLiteStateStore
from triggerd.telemetry.metrics import Metrics
from triggerd.types import DestinationContext, JSONDict, Source, SourceContext, SystemClock


@dataclass
class Harness:
    """One trigger: its source, pipeline and on-failure destination."""

    trigger: SyncTrigger
    source: Source
    on_failure: OnFailure
    metrics: Metrics
    log: logging.Logger
    #: How long `run_until` waits for its condition, and then for the trigger to stop.
    run_timeout_s: float = 60.0
    stop_timeout_s: float = 10.0

    @property
    def succeeded(self) -> float:
        return float(self.metrics.records_succeeded.labels(self.trigger.rt.name)._value.get())

    async def run_until(self, done: Callable[[], bool], timeout: float | None = None) -> None:
        task = asyncio.create_task(self.trigger.run())
        try:
            async with asyncio.timeout(timeout or self.run_timeout_s):
                while not done():
                    if task.done():
                        task.result()
                    await asyncio.sleep(0.02)
        finally:
            self.trigger.stop()
            await asyncio.wait_for(task, self.stop_timeout_s)

    async def close(self) -> None:
        await self.source.stop()
        await self.on_failure.stop()


@contextlib.asynccontextmanager
async def trigger_harness(
    tmp_path: Path,
    registry: Registry,
    source: JSONDict,
    backend: FakeBackend,
    *,
    on_failure: JSONDict | None = None,
    name: str = "t",
    run_timeout_s: float = 60.0,
    stop_timeout_s: float = 10.0,
    **trigger: Any,
) -> AsyncIterator[Harness]:
    """Trigger `name` of `source` (its config, with `type`) for function "f", with the
    on-failure destination and trigger settings given, built and started as the daemon does."""
    if on_failure is not None:
        trigger["on_failure"] = on_failure
    tcfg = one_trigger(registry, source, base_dir=tmp_path, name=name, **trigger)
    log = logging.getLogger(f"test.{source['type']}")
    clock, metrics = SystemClock(), Metrics()
    store = SQLiteStateStore(str(tmp_path / f"state-{name}.db"))
    await store.open()
    dest, dest_type = None, "none"
    if tcfg.on_failure_config is not None:
        dest_type = getattr(tcfg.on_failure_config, "type")  # noqa: B009
        dest = registry.destination(dest_type).create(
            tcfg.on_failure_config, DestinationContext(trigger=name, clock=clock, log=log)
        )
    src = registry.source(source["type"]).create(
        tcfg.source_config, SourceContext(trigger=name, state=store, clock=clock, log=log)
    )
    rt = TriggerRuntime.assemble(
        name=name,
        config=tcfg,
        function="f",
        function_arn="arn:aws:lambda:us-east-1:123456789012:function:f",
        source=src,
        backend=backend,
        state=store,
        clock=clock,
        metrics=metrics,
        log=log,
        destination=dest,
        destination_name=dest_type,
        include_payload=dest_type in PAYLOAD_DESTINATIONS,
        poll_timeout_s=0.2,
    )
    await rt.on_failure.start()
    await src.start()
    h = Harness(SyncTrigger(rt), src, rt.on_failure, metrics, log, run_timeout_s, stop_timeout_s)
    try:
        yield h
    finally:
        await h.close()
        await store.close()
