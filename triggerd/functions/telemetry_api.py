"""The Lambda Telemetry API (2022-07-01) of one execution environment.

An extension subscribes with `PUT /2022-07-01/telemetry` (its `Lambda-Extension-Identifier`,
a destination URI on the sandbox, the event types it wants and how events are buffered), and
from then on receives JSON arrays of events, POSTed to that URI, in AWS's shapes:
`{"time": ..., "type": "platform.start", "record": {...}}` for platform events,
`{"time": ..., "type": "function", "record": "<log line>"}` for the function's output and
`"type": "extension"` for the extensions' own output.

Events emitted before a subscription (the init phase: `platform.initStart` comes before any
extension could subscribe) are kept, up to `BACKLOG_ITEMS`, and handed to each subscriber when
it subscribes during init, as Lambda does. Each subscription has a bounded buffer flushed by
`maxItems`, `maxBytes` or `timeoutMs`, whichever comes first, by one delivery task; a listener
that does not keep up loses the oldest events (counted in a `platform.logsDropped` event), the
environment never waits for it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import orjson

from triggerd.events.timestamps import iso_ms
from triggerd.functions.runtime_http import error_reply, http_reply

if TYPE_CHECKING:  # imported when an extension subscribes: workers without one never need it
    import aiohttp

__all__ = ["EVENT_TYPES", "SCHEMA_VERSIONS", "TelemetryAPI"]

#: The subscription types: platform events, function output, extension output.
EVENT_TYPES = frozenset({"platform", "function", "extension"})
SCHEMA_VERSIONS = frozenset({"2022-07-01", "2022-12-13", "2025-01-29"})
#: Lambda's buffering bounds and defaults (maxItems, maxBytes, timeoutMs).
_BOUNDS = {"maxItems": (25, 10000, 1000), "maxBytes": (262144, 1048576, 262144)}
_TIMEOUT_BOUNDS = (25, 30000, 1000)
#: Events kept from before the first subscription (the init phase).
BACKLOG_ITEMS = 1000
#: Hosts a destination may name: the sandbox itself (Lambda's `sandbox.localdomain`).
_SANDBOX_HOSTS = {"sandbox.localdomain": "127.0.0.1", "localhost": "127.0.0.1"}
_LOOPBACK = {"127.0.0.1", "::1", "[::1]", "0.0.0.0"}
#: Most events held for one subscription before the oldest are dropped.
MAX_HELD = 10000
#: How long one POST to a listener may take, and how often it is tried.
POST_TIMEOUT_S = 5.0
POST_ATTEMPTS = 3
_OK = http_reply(200, b"OK", content_type="text/plain; charset=utf-8")


def _validation(message: str) -> bytes:
    return error_reply(400, "ValidationError", message)


@dataclass(slots=True, eq=False)
class _Subscription:
    name: str
    url: str
    types: frozenset[str]
    max_items: int
    max_bytes: int
    timeout_s: float
    held: collections.deque[bytes] = field(default_factory=collections.deque)
    held_bytes: int = 0
    dropped: int = 0
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    #: One delivery at a time: `flush` (before SHUTDOWN) waits for a POST already under way,
    #: so the listener has every event before the extension hears SHUTDOWN.
    sending: asyncio.Lock = field(default_factory=asyncio.Lock)


def _bounded(value: Any, key: str, bounds: tuple[int, int, int]) -> int:
    low, high, default = bounds
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ValueError(f"buffering.{key} must be an integer from {low} to {high}")
    return value


def _destination(body: dict[str, Any]) -> str:
    dest = body.get("destination")
    if not isinstance(dest, dict):
        raise ValueError("destination is required")
    if dest.get("protocol") != "HTTP":
        raise ValueError("destination.protocol must be HTTP")
    uri = dest.get("URI")
    if not isinstance(uri, str):
        raise ValueError("destination.URI is required")
    parts = urlsplit(uri)
    host = (parts.hostname or "").lower()
    if parts.scheme != "http" or parts.port is None:
        raise ValueError("destination.URI must be http://sandbox.localdomain:PORT/...")
    if host in _SANDBOX_HOSTS:
        host = _SANDBOX_HOSTS[host]
    elif host not in _LOOPBACK:
        raise ValueError("destination.URI must name the sandbox (sandbox.localdomain)")
    if host == "0.0.0.0":
        host = "127.0.0.1"
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{parts.port}{parts.path or '/'}"


class TelemetryAPI:
    """Subscriptions of one environment's extensions and the delivery of its events."""

    def __init__(
        self,
        log: logging.Logger | None = None,
        *,
        function_name: str = "",
        version: str = "$LATEST",
        memory_mb: int = 128,
        initialization_type: str = "on-demand",
        runtime: str = "",
    ) -> None:
        self._log = log or logging.getLogger("triggerd.functions.telemetry")
        self.function_name = function_name
        self.version = version
        self.memory_mb = memory_mb
        self.initialization_type = initialization_type
        self.runtime = runtime
        #: Peak memory of the environment in MB, when its owner can tell.
        self.max_memory_mb: Callable[[], int] | None = None
        self._init_ms: float | None = None
        self._subs: list[_Subscription] = []
        self._backlog: collections.deque[tuple[str, bytes]] = collections.deque(
            maxlen=BACKLOG_ITEMS
        )
        #: Events go to the backlog until the init phase is over.
        self.init_done = False
        self._session: aiohttp.ClientSession | None = None
        #: The union of the subscribed types (a cheap check on the hot path).
        self.wanted: frozenset[str] = frozenset()
        self._closed = False

    # ---- subscription ----------------------------------------------------------------------

    def subscribe(self, name: str, raw: bytes | None) -> bytes:
        """The answer to one subscription request of extension `name`."""
        if self._closed:
            return error_reply(403, "Telemetry.SubscriptionClosed", "the environment is stopping")
        try:
            body = orjson.loads(raw or b"")
        except orjson.JSONDecodeError:
            return _validation("the request body is not JSON")
        if not isinstance(body, dict):
            return _validation("the request body must be a JSON object")
        try:
            sub = self._parse(name, body)
        except ValueError as e:
            return _validation(str(e))
        self._subs = [s for s in self._subs if s.name != name]  # a new one replaces the old
        self._subs.append(sub)
        self.wanted = frozenset().union(*(s.types for s in self._subs))
        loop = asyncio.get_running_loop()
        sub.task = loop.create_task(self._deliver(sub), name=f"telemetry:{name}")
        # The init phase's earlier events first, then this subscription's own event (which
        # `emit` sends to the new subscriber too: replaying it from the backlog would repeat it).
        if not self.init_done:
            for kind, data in self._backlog:
                if kind in sub.types:
                    self._hold(sub, data)
        record = {"name": name, "state": "Subscribed", "types": sorted(sub.types)}
        self.emit("platform", "platform.telemetrySubscription", record)
        return _OK

    @staticmethod
    def _parse(name: str, body: dict[str, Any]) -> _Subscription:
        version = body.get("schemaVersion")
        if version is not None and version not in SCHEMA_VERSIONS:
            raise ValueError(f"schemaVersion must be one of {', '.join(sorted(SCHEMA_VERSIONS))}")
        types = body.get("types")
        if not isinstance(types, list) or not types or not set(types) <= EVENT_TYPES:
            raise ValueError("types must be a non-empty list of platform, function, extension")
        buffering = body.get("buffering") or {}
        if not isinstance(buffering, dict):
            raise ValueError("buffering must be an object")
        return _Subscription(
            name=name,
            url=_destination(body),
            types=frozenset(types),
            max_items=_bounded(buffering.get("maxItems"), "maxItems", _BOUNDS["maxItems"]),
            max_bytes=_bounded(buffering.get("maxBytes"), "maxBytes", _BOUNDS["maxBytes"]),
            timeout_s=_bounded(buffering.get("timeoutMs"), "timeoutMs", _TIMEOUT_BOUNDS) / 1000,
        )

    # ---- events ----------------------------------------------------------------------------

    def emit(self, kind: str, event_type: str, record: Any, epoch_s: float | None = None) -> None:
        """Send one event of `kind` (platform / function / extension) to its subscribers."""
        if self.init_done and kind not in self.wanted:
            return
        data = orjson.dumps(
            {
                "time": iso_ms(time.time() if epoch_s is None else epoch_s),
                "type": event_type,
                "record": record,
            }
        )
        if not self.init_done:
            self._backlog.append((kind, data))
        for sub in self._subs:
            if kind in sub.types:
                self._hold(sub, data)

    def lines(self, kind: str, lines: Iterable[str]) -> None:
        for line in lines:
            self.emit(kind, kind, line)

    def _hold(self, sub: _Subscription, data: bytes) -> None:
        sub.held.append(data)
        sub.held_bytes += len(data) + 1
        while len(sub.held) > MAX_HELD:
            sub.held_bytes -= len(sub.held.popleft()) + 1
            sub.dropped += 1
        if len(sub.held) >= sub.max_items or sub.held_bytes >= sub.max_bytes:
            sub.wake.set()

    # ---- delivery --------------------------------------------------------------------------

    def _batch(self, sub: _Subscription) -> bytes:
        items: list[bytes] = []
        size = 2
        if sub.dropped:
            record = {"reason": "the listener did not keep up", "droppedRecords": sub.dropped}
            items.append(
                orjson.dumps(
                    {"time": iso_ms(time.time()), "type": "platform.logsDropped", "record": record}
                )
            )
            sub.dropped = 0
        while sub.held and len(items) < sub.max_items:
            nxt = sub.held[0]
            if items and size + len(nxt) + 1 > sub.max_bytes:
                break
            items.append(sub.held.popleft())
            sub.held_bytes -= len(nxt) + 1
            size += len(nxt) + 1
        return b"[" + b",".join(items) + b"]"

    async def _deliver(self, sub: _Subscription) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(sub.timeout_s):
                    await sub.wake.wait()
            sub.wake.clear()
            await self._flush(sub)

    async def _flush(self, sub: _Subscription) -> None:
        async with sub.sending:
            while sub.held or sub.dropped:
                await self._post(sub, self._batch(sub))

    async def _post(self, sub: _Subscription, batch: bytes) -> None:
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=POST_TIMEOUT_S)
            )
        headers = {"Content-Type": "application/json"}
        for attempt in range(1, POST_ATTEMPTS + 1):
            try:
                async with self._session.post(sub.url, data=batch, headers=headers) as resp:
                    await resp.read()
                    if resp.status < 500:
                        return
            except (aiohttp.ClientError, TimeoutError) as e:
                if attempt == POST_ATTEMPTS:
                    self._log.warning(
                        "telemetry.delivery_failed",
                        extra={"extension": sub.name, "error": str(e)},
                    )
                    return
            await asyncio.sleep(0.05 * attempt)

    def end_init(self) -> None:
        self.init_done = True
        self._backlog.clear()

    # ---- platform events -------------------------------------------------------------------

    def init_start(self) -> None:
        record = {
            "initializationType": self.initialization_type,
            "phase": "init",
            "runtimeVersion": self.runtime,
            "functionName": self.function_name,
            "functionVersion": self.version,
        }
        self.emit("platform", "platform.initStart", record)

    def init_end(self, duration_ms: float, error_type: str | None) -> None:
        """`platform.initRuntimeDone` and `platform.initReport`; the init phase is over."""
        base: dict[str, Any] = {"initializationType": self.initialization_type, "phase": "init"}
        status = "success" if error_type is None else "error"
        done = {**base, "status": status}
        if error_type is not None:
            done["errorType"] = error_type
        self.emit("platform", "platform.initRuntimeDone", done)
        report = {**done, "metrics": {"durationMs": round(duration_ms, 3)}}
        self.emit("platform", "platform.initReport", report)
        self._init_ms = duration_ms
        self.end_init()

    def start(self, request_id: str, trace_id: str | None) -> None:
        record: dict[str, Any] = {"requestId": request_id, "version": self.version}
        if trace_id:
            record["tracing"] = {"type": "X-Amzn-Trace-Id", "value": trace_id}
        self.emit("platform", "platform.start", record)

    def runtime_done(
        self, request_id: str, status: str, duration_ms: float, error_type: str | None
    ) -> None:
        record: dict[str, Any] = {
            "requestId": request_id,
            "status": status,
            "metrics": {"durationMs": round(duration_ms, 3)},
        }
        if error_type is not None:
            record["errorType"] = error_type
        self.emit("platform", "platform.runtimeDone", record)

    def report(self, request_id: str, status: str, duration_ms: float) -> None:
        metrics: dict[str, Any] = {
            "durationMs": round(duration_ms, 3),
            "billedDurationMs": max(1, math.ceil(duration_ms)),
            "memorySizeMB": self.memory_mb,
        }
        if self.max_memory_mb is not None:
            metrics["maxMemoryUsedMB"] = self.max_memory_mb()
        if self._init_ms is not None:
            metrics["initDurationMs"] = round(self._init_ms, 3)
            self._init_ms = None
        record = {"requestId": request_id, "status": status, "metrics": metrics}
        self.emit("platform", "platform.report", record)

    async def flush(self) -> None:
        """Deliver everything held now (before extensions get SHUTDOWN)."""
        for sub in list(self._subs):
            with contextlib.suppress(Exception):
                await self._flush(sub)

    async def close(self) -> None:
        self._closed = True
        subs, self._subs = self._subs, []
        self.wanted = frozenset()
        for sub in subs:
            if sub.task is not None:
                sub.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sub.task
        if self._session is not None:
            await self._session.close()
            self._session = None
