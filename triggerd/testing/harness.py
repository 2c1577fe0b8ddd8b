"""Local functions for tests: the `local` backend (warm workers speaking the Runtime API, the
function's own interpreter, layers and requirements) driven from synchronous test code.

The backend lives on an asyncio loop in a thread of its own, so tests need no async plugin;
`invoke` waits for the invocation there. Every line a worker logs (START, END, REPORT and
the function's own output) is collected per request id from the `triggerd.function` logger.
`close` stops every worker.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import tempfile
import threading
from collections.abc import Coroutine, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from triggerd.config.load import load_config
from triggerd.config.plugins import Registry
from triggerd.config.samples import sample_maker, unknown_options
from triggerd.types import Backend, BackendContext, ConfigError, InvokeResult, Outcome, SystemClock

T = TypeVar("T")

#: Where the runtimes' own packages (boto3 per Python version) are kept between test runs,
#: unless TRIGGERD_RUNTIMES_DIR says otherwise: installed once, not once per session.
DEFAULT_RUNTIMES_DIR = Path.home() / ".cache" / "triggerd" / "runtimes"
FUNCTION_LOGGER = "triggerd.function"


@dataclass(frozen=True, slots=True)
class InvokeOutcome:
    """One invocation: the response and the function's log lines."""

    #: The response bytes (the function's result, or its error object).
    payload: bytes
    #: Lambda's `X-Amz-Function-Error` ("Unhandled") when the function failed, else None.
    error: str | None
    outcome: Outcome
    request_id: str
    #: START, the function's output lines, END and REPORT, in order.
    logs: list[str]

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.OK

    @property
    def response(self) -> Any:
        """The response parsed as JSON (the text itself when it is not JSON)."""
        try:
            return json.loads(self.payload)
        except ValueError:
            return self.payload.decode("utf-8", "replace")

    @property
    def output(self) -> str:
        """The log lines as one text, as CloudWatch Logs would show the invocation."""
        return "\n".join(self.logs)


class _Lines(logging.Handler):
    """Collects the `triggerd.function` lines of invocations by request id."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.by_request: dict[str, list[str]] = {}
        self.watching: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        rid = getattr(record, "request_id", None)
        if rid in self.watching:
            self.by_request.setdefault(rid, []).append(record.getMessage())


@dataclass
class FunctionUnderTest:
    """A function running on the local backend; made by `LocalFunctions.function`."""

    name: str
    backend: Backend
    _owner: LocalFunctions
    registry: Registry

    def invoke(self, event: Any = None, *, timeout_s: float | None = None) -> InvokeOutcome:
        """Invoke with an event: a dict or list (sent as JSON), bytes or str (sent as they
        are), or a Path to a JSON file (a recorded fixture); None sends `{}`."""
        if event is None:
            payload = b"{}"
        elif isinstance(event, Path):
            payload = event.read_bytes()
        elif isinstance(event, bytes):
            payload = event
        elif isinstance(event, str):
            payload = event.encode()
        else:
            payload = json.dumps(event).encode()
        return self._owner.run(self._invoke(payload), timeout_s)

    def invoke_fixture(self, path: str | os.PathLike[str]) -> InvokeOutcome:
        """Invoke with a JSON file, e.g. one `triggerd record` wrote."""
        return self.invoke(Path(path))

    def invoke_sample(self, source: str, **options: str) -> InvokeOutcome:
        """Invoke with `triggerd generate-event SOURCE --set key=value ...`'s event."""
        return self.invoke(sample_event(self.registry, source, options))

    async def _invoke(self, payload: bytes) -> InvokeOutcome:
        lines = self._owner.lines
        rid = os.urandom(16).hex()
        rid = f"{rid[:8]}-{rid[8:12]}-{rid[12:16]}-{rid[16:20]}-{rid[20:32]}"
        lines.watching.add(rid)
        try:
            result: InvokeResult = await self.backend.invoke(payload, request_id=rid)
        finally:
            lines.watching.discard(rid)
        logs = lines.by_request.pop(rid, [])
        return InvokeOutcome(result.payload, result.function_error, result.outcome, rid, logs)


def sample_event(registry: Registry, source: str, options: Mapping[str, str]) -> Any:
    """generate-event's sample for `source`, a source type or a service (`eventbridge`,
    `sns`); ValueError for an unknown option or a source without a sample,
    UnknownPluginError for an unknown source."""
    make, known = sample_maker(registry, source)
    if make is None:
        raise ValueError(f"source {source!r} has no sample event")
    unknown = unknown_options(options, known)
    if unknown:
        names = ", ".join(known) or "none"
        raise ValueError(f"unknown option(s) for {source}: {', '.join(unknown)}; known: {names}")
    return make(dict(options))


@dataclass
class LocalFunctions:
    """Starts functions on the local backend for tests; `close` stops them all."""

    work_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="triggerd-")))
    registry: Registry = field(default_factory=Registry.discover)
    #: Seconds an invocation (or a function's start) may take before the test fails.
    timeout_s: float = 300.0
    lines: _Lines = field(default_factory=_Lines)
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _started: list[Backend] = field(default_factory=list)
    _level: int | None = None

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float | None = None) -> T:
        """Run a coroutine on the functions' loop and wait for its result."""
        loop = self._ensure_loop()
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, loop)
        return future.result(self.timeout_s if timeout_s is None else timeout_s)

    def function(
        self,
        name: str = "function",
        *,
        config: str | os.PathLike[str] | None = None,
        handler: str | None = None,
        code: str | os.PathLike[str] | None = None,
        environment: Mapping[str, str] | None = None,
        **settings: Any,
    ) -> FunctionUnderTest:
        """Start function `name` of a triggerd config file, or one made of `handler` and
        `code` (and any other `[functions.NAME]` setting, e.g. runtime="python3.12",
        timeout_s=10, layers=[...]). `environment` adds to (or overrides) its variables."""
        if config is not None:
            if handler is not None or code is not None or settings:
                raise ValueError("give a config file, or handler and code, not both")
            cfg = load_config(Path(config), self.registry)
            if name not in cfg.function_map:
                raise ConfigError([f"no function {name!r} in {config}"])
            # Only the fields the file set (defaults validated as set would trip the checks
            # of options that need another one, e.g. role_session_name without role_arn).
            loaded = cfg.function_map[name]
            fields = {field: getattr(loaded, field) for field in loaded.model_fields_set}
        else:
            if handler is None or code is None:
                raise ValueError("give a config file, or handler and code")
            fields = {"handler": handler, "code": str(code), **settings}
        backend_name = str(fields.get("backend", "local"))
        if environment:
            fields["environment"] = {**fields.get("environment", {}), **environment}
        plugin = self.registry.backend(backend_name)
        fcfg = plugin.config_model.model_validate(fields, context={"base_dir": os.getcwd()})
        ctx = BackendContext(
            function=name,
            clock=SystemClock(),
            log=logging.getLogger("triggerd.testing"),
            work_dir=str(self.work_dir / name),
            runtimes_dir=os.environ.get("TRIGGERD_RUNTIMES_DIR") or str(DEFAULT_RUNTIMES_DIR),
        )
        backend = plugin.create(fcfg, ctx)
        self._started.append(backend)
        self.run(backend.start())
        return FunctionUnderTest(name, backend, self, self.registry)

    def close(self) -> None:
        """Stop every function's workers, then the loop."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            for backend in reversed(self._started):
                asyncio.run_coroutine_threadsafe(backend.stop(), loop).result(60)
        finally:
            self._started.clear()
            loop.call_soon_threadsafe(loop.stop)
            thread.join(30)
            loop.close()
            self._loop = self._thread = None
            logger = logging.getLogger(FUNCTION_LOGGER)
            logger.removeHandler(self.lines)
            if self._level is not None:
                logger.setLevel(self._level)

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is not None:
            return self._loop
        logger = logging.getLogger(FUNCTION_LOGGER)
        self._level = logger.level
        if not logger.isEnabledFor(logging.INFO):
            logger.setLevel(logging.INFO)  # the lines are only made when someone reads them
        logger.addHandler(self.lines)
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def serve() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()

        self._thread = threading.Thread(target=serve, name="triggerd-functions", daemon=True)
        self._thread.start()
        ready.wait(10)
        self._loop = loop
        return loop

    def __enter__(self) -> LocalFunctions:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
