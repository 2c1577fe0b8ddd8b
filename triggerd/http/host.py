"""What the listen address needs from the process that serves it: the functions it may invoke,
their queues of Event invocations, the route table and a few read-only facts. The daemon
provides it; the HTTP side never sees the daemon itself, so tests and other hosts can serve it
with anything of this shape."""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping
from typing import Any, Protocol

from triggerd.config.model import DaemonSettings
from triggerd.http.routes import Routes
from triggerd.state.base import StateStore
from triggerd.telemetry.metrics import Metrics
from triggerd.types import Backend, FunctionConfig, SourceStats


class InvokeTarget(Protocol):
    """A configured function, as the Invoke API calls it."""

    @property
    def name(self) -> str: ...

    @property
    def config(self) -> FunctionConfig: ...

    @property
    def backend(self) -> Backend: ...


class EventQueue(Protocol):
    """A function's durable queue of `Event` invocations."""

    @property
    def name(self) -> str: ...

    async def enqueue(self, payload: bytes, request_id: str, trace_id: str | None = None) -> None:
        """Commit the event to the state store (the 202 is sent after this returns)."""

    def wake(self) -> None:
        """Look for new events at once (an event bus committed them)."""

    async def discard_throttled(self, payload: bytes, request_id: str) -> None:
        """Dead-letter an event for a function whose reserved concurrency is 0."""


class HttpHost(Protocol):
    @property
    def settings(self) -> DaemonSettings: ...

    @property
    def functions(self) -> Mapping[str, InvokeTarget]: ...

    @property
    def invoke_queues(self) -> Mapping[str, EventQueue]: ...

    @property
    def trigger_names(self) -> Collection[str]: ...

    @property
    def async_trigger_names(self) -> Collection[str]:
        """The triggers with a durable async queue (push sources, webhooks in event mode)."""
        ...

    @property
    def routes(self) -> Routes: ...

    @property
    def ready(self) -> asyncio.Event: ...

    @property
    def state(self) -> StateStore | None: ...

    @property
    def metrics(self) -> Metrics: ...

    def readiness(self) -> dict[str, Any]:
        """`/readyz`: "status" (ready, degraded, starting), "state_store" and, per trigger,
        its "status" (running, degraded) and "reasons"."""
        ...

    async def pause_trigger(self, name: str) -> bool:
        """Drain and stop a trigger, kept paused across restarts; False if it was paused
        already. `triggerd.http.pausing.TriggerNotFoundError` for an unknown trigger."""
        ...

    async def resume_trigger(self, name: str) -> bool:
        """Start a paused trigger again; False if it was not paused."""
        ...

    async def reload_config(self, path: str | None) -> dict[str, Any]:
        """Reload the config file (as SIGHUP) and return the summary: "status" (reloaded,
        failed, rejected), "config" (the daemon's file) and what changed. `path`: the file
        the caller means; `triggerd.http.pausing.ConfigMismatchError` if it is another."""
        ...

    def source_stats(self) -> Mapping[str, SourceStats]:
        """Per trigger: the lag of its source's partitions (sources that report it)."""
        ...
