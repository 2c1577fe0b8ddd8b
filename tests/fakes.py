"""Fakes shared by the tests: clocks, and for the pipeline a scripted source, backend and
destination."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import orjson

from triggerd.config.load import validate_data
from triggerd.config.model import TriggerBase
from triggerd.config.plugins import Registry
from triggerd.state.base import NewEvent
from triggerd.types import (
    BackendPlugin,
    BaseSource,
    DestinationConfig,
    DestinationPlugin,
    FunctionConfig,
    InvokeResult,
    JSONDict,
    Outcome,
    Record,
    SourceConfig,
    SourcePlugin,
    SystemClock,
)


def new_event(
    request_id: str,
    *,
    trigger: str = "t1",
    function: str = "f1",
    at: float = 100.0,
    payload: bytes | None = None,
) -> NewEvent:
    """An event for a state store's queue, enqueued and available at `at`; its payload is
    its request id unless given."""
    return NewEvent(
        trigger=trigger,
        function=function,
        payload=payload if payload is not None else request_id.encode(),
        request_id=request_id,
        enqueued_at=at,
        available_at=at,
    )


class FakeClock:
    """Time stands still until someone sleeps: sleeping moves both clocks on at once."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


class StillClock(FakeClock):
    """Time stands still even while someone sleeps (sleeping only yields): the test moves it."""

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(0)


class SteppedClock(SystemClock):
    """Real time, with a monotonic clock the test can move forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def monotonic(self) -> float:
        return time.monotonic() + self.offset


class FakeSyncConfig(SourceConfig):
    type: Literal["fake"] = "fake"
    invocation: ClassVar[Literal["sync", "async"]] = "sync"
    retry_owner: ClassVar[Literal["source", "pipeline"]] = "pipeline"


class FakeStreamConfig(SourceConfig):
    """Kafka-like: batches per key, retries in place, infinite retries capped at 10 with an
    on-failure destination."""

    type: Literal["fakestream"] = "fakestream"
    invocation: ClassVar[Literal["sync", "async"]] = "sync"
    retry_owner: ClassVar[Literal["source", "pipeline"]] = "pipeline"
    batch_per_key: ClassVar[bool] = True
    retry_cap_with_on_failure: ClassVar[int | None] = 10


class FakeQueueConfig(SourceConfig):
    type: Literal["fakequeue"] = "fakequeue"
    invocation: ClassVar[Literal["sync", "async"]] = "sync"
    retry_owner: ClassVar[Literal["source", "pipeline"]] = "source"
    window_required_above_batch_size: ClassVar[int | None] = 10


class FakeAsyncConfig(SourceConfig):
    type: Literal["fakepush"] = "fakepush"


class FakeFunctionConfig(FunctionConfig):
    backend: Literal["fake"] = "fake"


class MemDestConfig(DestinationConfig):
    type: Literal["mem"] = "mem"


def make_record(
    body: Any, item_id: str | None = None, key: str | None = None, created_at: float = 0.0
) -> Record:
    item_id = item_id or str(uuid.uuid4())
    payload = {
        "messageId": item_id,
        "body": body if isinstance(body, str) else orjson.dumps(body).decode(),
    }
    return Record(
        payload=payload,
        item_id=item_id,
        size=len(orjson.dumps(payload)),
        created_at=created_at,
        key=key,
    )


class FakeSource(BaseSource):
    """Hands out queued records; records what was acked and nacked. Nacked records come back
    (at the end of the queue) when `redeliver` is set, like a queue would."""

    def __init__(self, records: Sequence[Record] = (), redeliver: bool = False) -> None:
        self.queue: list[Record] = list(records)
        self.acked: list[Record] = []
        self.nacked: list[Record] = []
        self.redeliver = redeliver
        self.arrived = asyncio.Event()

    def push(self, *records: Record) -> None:
        self.queue.extend(records)
        self.arrived.set()

    async def receive(self, max_records: int, timeout_s: float) -> list[Record]:
        if not self.queue:
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), timeout_s)
            except TimeoutError:
                return []
        out, self.queue = self.queue[:max_records], self.queue[max_records:]
        return out

    async def ack(self, records: Sequence[Record]) -> None:
        self.acked.extend(records)

    async def nack(self, records: Sequence[Record]) -> None:
        self.nacked.extend(records)
        if self.redeliver:
            for rec in records:
                rec.attempts += 1
            self.push(*records)

    def filter_view(self, record: Record) -> JSONDict:
        from triggerd.events.filters import view_with_data

        return view_with_data(record.payload, "body", "json-text")

    def batch_info(self, records: Sequence[Record]) -> JSONDict:
        return {"FakeBatchInfo": {"batchSize": len(records)}}


class AckFailsFirst(FakeSource):
    """A FakeSource whose first `failures` acks raise (a plugin source's ack that is a
    request, and fails) without settling anything."""

    def __init__(
        self, records: Sequence[Record] = (), redeliver: bool = False, failures: int = 1
    ) -> None:
        super().__init__(records, redeliver)
        self.failures = failures
        self.failed_acks: list[list[Record]] = []

    async def ack(self, records: Sequence[Record]) -> None:
        if self.failures:
            self.failures -= 1
            self.failed_acks.append(list(records))
            raise ConnectionError("ack refused")
        await super().ack(records)


Responder = Callable[[JSONDict], InvokeResult | Any]


@dataclass
class FakeBackend:
    """Calls `respond(event)` per invocation: an InvokeResult is returned as is; any other
    value becomes an OK result with that value as JSON; an exception becomes a function error."""

    respond: Responder = field(default=lambda event: None)
    calls: list[JSONDict] = field(default_factory=list)
    trace_ids: list[str | None] = field(default_factory=list)
    delay_s: float = 0.0
    concurrent: int = 0
    max_concurrent: int = 0

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def invoke(
        self,
        payload: bytes,
        *,
        request_id: str | None = None,
        invocation_type: str = "RequestResponse",
        client_context: str | None = None,
        want_log_tail: bool = False,
        trace_id: str | None = None,
    ) -> InvokeResult:
        event = orjson.loads(payload)
        self.calls.append(event)
        self.trace_ids.append(trace_id)
        rid = request_id or str(uuid.uuid4())
        self.concurrent += 1
        self.max_concurrent = max(self.max_concurrent, self.concurrent)
        try:
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            try:
                out = self.respond(event)
            except Exception as exc:  # the "function" raised
                body = {"errorMessage": str(exc), "errorType": type(exc).__name__, "stackTrace": []}
                return InvokeResult(
                    Outcome.FUNCTION_ERROR, orjson.dumps(body), rid, function_error="Unhandled"
                )
        finally:
            self.concurrent -= 1
        if isinstance(out, InvokeResult):
            out.request_id = rid
            return out
        return InvokeResult(Outcome.OK, orjson.dumps(out), rid)


@dataclass
class MemDestination:
    records: list[JSONDict] = field(default_factory=list)
    fail_times: int = 0

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def send(self, record: JSONDict) -> None:
        if self.fail_times > 0:
            self.fail_times -= 1
            raise OSError("destination down")
        self.records.append(record)


class HeldDestination(MemDestination):
    """Takes a record once `accept` is set (a destination slow to accept)."""

    def __init__(self) -> None:
        super().__init__()
        self.sending = asyncio.Event()
        self.accept = asyncio.Event()

    async def send(self, record: JSONDict) -> None:
        self.sending.set()
        await self.accept.wait()
        await super().send(record)


def connector_registry(
    sources: Mapping[str, SourcePlugin], destinations: Mapping[str, DestinationPlugin]
) -> Registry:
    """A registry of just these connector plugins and the fake backend (no entry points)."""
    reg = Registry(entry_points={})
    for name, source in sources.items():
        reg.register("source", name, source)
    for name, destination in destinations.items():
        reg.register("destination", name, destination)
    reg.register("backend", "fake", BackendPlugin(FakeFunctionConfig, lambda c, ctx: FakeBackend()))
    return reg


def one_trigger(
    registry: Registry, source: JSONDict, base_dir: Path = Path("."), **trigger: Any
) -> TriggerBase:
    """The validated config of one trigger of `source` for function "f" on the fake backend."""
    data = {
        "functions": {"f": {"backend": "fake"}},
        "triggers": [{"function": "f", "source": source, **trigger}],
    }
    return validate_data(data, registry, base_dir=base_dir).trigger_list[0]


def fake_registry() -> Registry:
    reg = Registry(entry_points={})
    reg.register("source", "fake", SourcePlugin(FakeSyncConfig, lambda c, ctx: FakeSource()))
    reg.register("source", "fakequeue", SourcePlugin(FakeQueueConfig, lambda c, ctx: FakeSource()))
    reg.register(
        "source", "fakestream", SourcePlugin(FakeStreamConfig, lambda c, ctx: FakeSource())
    )
    reg.register("source", "fakepush", SourcePlugin(FakeAsyncConfig, lambda c, ctx: FakeSource()))
    reg.register("backend", "fake", BackendPlugin(FakeFunctionConfig, lambda c, ctx: FakeBackend()))
    reg.register(
        "destination", "mem", DestinationPlugin(MemDestConfig, lambda c, ctx: MemDestination())
    )
    return reg


def trigger_runtime(
    store: Any,
    source: Any,
    backend: Any,
    dest: MemDestination | None = None,
    source_type: str = "fake",
    **trigger: Any,
) -> Any:
    """A TriggerRuntime named "t" for function "f", built from a validated trigger config."""
    import logging

    from triggerd.delivery.pipeline import TriggerRuntime
    from triggerd.telemetry.metrics import Metrics

    tcfg = one_trigger(fake_registry(), {"type": source_type}, **trigger)
    log = logging.getLogger("test")
    metrics, clock = Metrics(), SystemClock()
    return TriggerRuntime.assemble(
        name="t",
        config=tcfg,
        function="f",
        function_arn="arn:aws:lambda:us-east-1:123456789012:function:f",
        source=source,
        backend=backend,
        state=store,
        clock=clock,
        metrics=metrics,
        log=log,
        destination=dest,
        destination_name="mem",
        poll_timeout_s=0.05,
    )


async def run_until(trigger: Any, done: Callable[[], bool], timeout: float = 10) -> None:
    """Run a trigger until `done()` holds, then stop it and wait for it to drain."""
    task = asyncio.create_task(trigger.run())
    try:
        async with asyncio.timeout(timeout):
            while not done():
                await asyncio.sleep(0.01)
    finally:
        trigger.stop()
        await asyncio.wait_for(task, 5)
