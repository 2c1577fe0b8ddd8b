"""Directory events/s: M small files created in a temp dir, counted as they come out of
triggerd's directory source, against a bare `watchfiles.awatch` loop (the same watch settings
the source uses) counting the added files of the same workload in the same run.

The end-to-end variant runs the daemon's accept loop (`AsyncTrigger`) on the source, so an
event counts once it is committed to the durable queue in a SQLite state file (WAL,
synchronous=FULL), with its checkpoint: the loop acks the source only then.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import watchfiles

from bench import HELLO_DIR, BenchError, Row, run_async
from triggerd.config.load import validate_data
from triggerd.config.plugins import Registry
from triggerd.delivery.asyncpath import AsyncTrigger
from triggerd.delivery.pipeline import TriggerRuntime
from triggerd.state.sqlite import MEMORY_PATH, SQLiteStateStore
from triggerd.telemetry.metrics import Metrics
from triggerd.types import (
    BaseSource,
    InvocationType,
    InvokeResult,
    JSONDict,
    Outcome,
    Record,
    Source,
    SourceContext,
    SystemClock,
)
from triggerd_directory import plugin as directory_plugin

NAME = "directory"
TRIGGER = "bench"
log = logging.getLogger("bench.directory")


@dataclass(frozen=True, slots=True)
class Settings:
    files: int = 2000
    file_bytes: int = 64
    stable_s: float = 0.05
    #: Give up on a run when not all events arrived by then.
    timeout_s: float = 60.0
    end_to_end: bool = True


QUICK = Settings(files=500)
SMOKE = Settings(files=20, timeout_s=20.0)


def write_files(root: Path, count: int, size: int) -> None:
    data = b"x" * size
    for i in range(count):
        (root / f"file-{i:05d}.txt").write_bytes(data)


@dataclass(frozen=True, slots=True)
class Run:
    #: Events/s from the first file written to the last event counted.
    rate: float
    #: From the last file written to the last event counted, ms.
    tail_ms: float


async def timed_workload(
    root: Path, settings: Settings, until_done: Callable[[], Awaitable[int]]
) -> Run:
    """Write the files (in a thread) while `until_done` counts events; it returns the count
    once all arrived."""

    async def write() -> float:
        await asyncio.to_thread(write_files, root, settings.files, settings.file_bytes)
        return time.perf_counter()

    async def count() -> tuple[int, float]:
        n = await until_done()
        return n, time.perf_counter()

    t0 = time.perf_counter()
    async with asyncio.timeout(settings.timeout_s):
        async with asyncio.TaskGroup() as tg:
            written = tg.create_task(write())
            counted = tg.create_task(count())
    n, t_end = counted.result()
    return Run(n / (t_end - t0), max(0.0, t_end - written.result()) * 1000)


async def baseline_rate(root: Path, settings: Settings) -> Run:
    """A bare awatch loop counting distinct added files."""
    stop = asyncio.Event()
    seen: set[str] = set()
    done = asyncio.Event()

    async def watch() -> None:
        async for changes in watchfiles.awatch(
            root,
            watch_filter=None,
            debounce=100,
            step=20,
            stop_event=stop,
            recursive=True,
            force_polling=False,
            ignore_permission_denied=True,
        ):
            seen.update(path for change, path in changes if change == watchfiles.Change.added)
            if len(seen) >= settings.files:
                done.set()

    async def until_done() -> int:
        await done.wait()
        return len(seen)

    async with asyncio.TaskGroup() as tg:
        tg.create_task(watch())
        await asyncio.sleep(0.1)  # the watch is registered on the task's first step
        try:
            return await timed_workload(root, settings, until_done)
        except TimeoutError:
            raise BenchError(f"awatch saw {len(seen)} of {settings.files} files") from None
        finally:
            stop.set()


def make_source(root: Path, state: SQLiteStateStore, settings: Settings) -> Source:
    config = directory_plugin.config_model.model_validate(
        {"type": "directory", "path": str(root), "stable_s": settings.stable_s}
    )
    ctx = SourceContext(trigger=TRIGGER, state=state, clock=SystemClock(), log=log)
    return directory_plugin.create(config, ctx)


async def count_created(
    source: Source,
    settings: Settings,
    deliver: Callable[[list[Record]], Awaitable[None]],
    batch: int = 64,
) -> int:
    keys: set[str] = set()
    while len(keys) < settings.files:
        records = await source.receive(batch, 1.0)
        if records:
            await deliver(records)
        for rec in records:
            if rec.payload["eventName"].startswith("ObjectCreated"):
                keys.add(rec.payload["s3"]["object"]["key"])
    return len(keys)


async def source_rate(root: Path, settings: Settings) -> Run:
    """Records/s out of the directory source, acked as they arrive."""
    state = SQLiteStateStore(MEMORY_PATH)
    await state.open()
    try:
        source = make_source(root, state, settings)
        await source.start()
        try:
            return await timed_workload(
                root, settings, lambda: count_created(source, settings, source.ack)
            )
        except TimeoutError:
            raise BenchError("the directory source did not deliver every file in time") from None
        finally:
            await source.stop()
    finally:
        await state.close()


class NoBackend:
    """accept() never invokes; a backend is needed only to build the trigger runtime."""

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def invoke(
        self,
        payload: bytes,
        *,
        request_id: str | None = None,
        invocation_type: InvocationType = "RequestResponse",
        client_context: str | None = None,
        want_log_tail: bool = False,
        trace_id: str | None = None,
    ) -> InvokeResult:
        return InvokeResult(Outcome.INVOKE_ERROR, b"", request_id or "", retry_after_s=1.0)


class CountingAcks(BaseSource):
    """The directory source as the accept loop sees it, counting the created files whose
    records were acked: the loop acks a record only once its event is committed."""

    def __init__(self, inner: Source, files: int) -> None:
        self.inner = inner
        self.files = files
        self.keys: set[str] = set()
        self.done = asyncio.Event()

    async def start(self) -> None:
        await self.inner.start()

    async def stop(self) -> None:
        await self.inner.stop()

    async def receive(self, max_records: int, timeout_s: float) -> list[Record]:
        return await self.inner.receive(max_records, timeout_s)

    async def ack(self, records: Sequence[Record]) -> None:
        await self.inner.ack(records)
        for rec in records:
            if rec.payload["eventName"].startswith("ObjectCreated"):
                self.keys.add(rec.payload["s3"]["object"]["key"])
        if len(self.keys) >= self.files:
            self.done.set()

    async def nack(self, records: Sequence[Record]) -> None:
        await self.inner.nack(records)

    def envelope(self, records: Sequence[Record]) -> JSONDict:
        return self.inner.envelope(records)

    async def until_done(self) -> int:
        await self.done.wait()
        return len(self.keys)


def async_trigger(root: Path, state: SQLiteStateStore, settings: Settings) -> AsyncTrigger:
    data: dict[str, Any] = {
        "functions": {"hello": {"backend": "local", "handler": "app.handler", "code": "."}},
        "triggers": [
            {
                "name": TRIGGER,
                "function": "hello",
                "source": {"type": "directory", "path": str(root), "stable_s": settings.stable_s},
            }
        ],
    }
    tcfg = validate_data(data, Registry.discover(), base_dir=HELLO_DIR).trigger_list[0]
    clock, metrics = SystemClock(), Metrics()
    source = CountingAcks(
        directory_plugin.create(
            tcfg.source_config, SourceContext(trigger=TRIGGER, state=state, clock=clock, log=log)
        ),
        settings.files,
    )
    rt = TriggerRuntime.assemble(
        name=TRIGGER,
        config=tcfg,
        function="hello",
        function_arn="arn:aws:lambda:us-east-1:123456789012:function:hello",
        source=source,
        backend=NoBackend(),
        state=state,
        clock=clock,
        metrics=metrics,
        log=log,
    )
    return AsyncTrigger(rt, state, lease_s=60)


async def end_to_end_rate(root: Path, db: Path, settings: Settings) -> Run:
    """Events/s committed to the durable queue by the daemon's accept loop."""
    state = SQLiteStateStore(str(db))
    await state.open()
    try:
        trigger = async_trigger(root, state, settings)
        source = trigger.rt.source
        assert isinstance(source, CountingAcks)
        await source.start()
        accepting = asyncio.create_task(trigger._accept_loop())
        try:
            run = await timed_workload(root, settings, source.until_done)
        except TimeoutError:
            raise BenchError("not every event was committed in time") from None
        finally:
            trigger.stop()
            await accepting
            await source.stop()
        depth = await state.queue_depth(TRIGGER)
        if depth != settings.files:
            raise BenchError(f"{depth} events on the queue, expected {settings.files}")
        return run
    finally:
        await state.close()


def watch_parent() -> str | None:
    """tmpfs when there is one, so that writing the files is not what is measured (on a VM's
    ext4 creating 2,000 files can take seconds)."""
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


async def measure(settings: Settings) -> list[Row]:
    with (
        tempfile.TemporaryDirectory(prefix="triggerd-bench-", dir=watch_parent()) as watched,
        tempfile.TemporaryDirectory(prefix="triggerd-bench-") as state_dir,
    ):
        base = Path(watched)

        def fresh(name: str) -> Path:
            path = base / name
            os.mkdir(path)
            return path

        write_files(fresh("warmup"), settings.files, settings.file_bytes)
        baseline = await baseline_rate(fresh("awatch"), settings)
        source = await source_rate(fresh("source"), settings)
        e2e = None
        if settings.end_to_end:
            e2e = await end_to_end_rate(fresh("e2e"), Path(state_dir) / "state.db", settings)
    desc = f"bare watchfiles.awatch loop counting added files (same {settings.files}-file workload)"
    runs = [("out of the source", source)]
    if e2e is not None:
        runs.append(("committed to SQLite", e2e))
    rows: list[Row] = []
    for what, r in runs:
        rows.append(
            Row(NAME, f"events/s {what}", r.rate, baseline.rate, baseline_desc=desc, digits=0)
        )
    for what, r in runs:
        # #21's target is on the ratio: the source at half a bare watchfiles loop's rate.
        rows.append(Row(NAME, f"{what} / bare loop", r.rate / baseline.rate, target=0.5, op=">="))
    for what, r in runs:
        rows.append(
            Row(
                NAME,
                f"last write to last event {what} (ms)",
                r.tail_ms,
                baseline.tail_ms,
                baseline_desc=desc,
                digits=0,
            )
        )
    return rows


def run(settings: Settings) -> list[Row]:
    return run_async(measure(settings))
