"""The daemon: builds functions and triggers from the config and runs them until stopped.

Shutdown order (SIGTERM): STOPPING -> triggers stop polling -> in-flight batches and
invocations drain up to `shutdown_timeout_s` -> the rest is nacked / released -> sources,
destinations, backends, the HTTP server and the state store close.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import tempfile
from collections.abc import AsyncIterator, Collection
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from triggerd.config.model import ConfigBase, DaemonSettings, TriggerBase
from triggerd.config.plugins import Registry
from triggerd.daemon.systemd import Notifier
from triggerd.delivery.asyncpath import AsyncTrigger
from triggerd.delivery.pipeline import SyncTrigger, TriggerRuntime
from triggerd.delivery.retry import Backoff
from triggerd.http.routes import Routes
from triggerd.state.base import ReportsWriteHealth, StateStore
from triggerd.state.factory import sqlite_path
from triggerd.state.guard import open_state_store
from triggerd.state.sqlite import WriteHook
from triggerd.telemetry.instrument import InstrumentedBackend
from triggerd.telemetry.metrics import Metrics
from triggerd.types import (
    Backend,
    BackendContext,
    Clock,
    ConfigError,
    DestinationContext,
    ExitCode,
    FunctionConfig,
    MissingExtraError,
    OperatorError,
    PermanentError,
    ReportsStats,
    RetryableError,
    Source,
    SourceContext,
    SourceStats,
    SystemClock,
)

if TYPE_CHECKING:
    from triggerd.http.invoke_api import InvokeQueue

log = logging.getLogger("triggerd.daemon")
#: Destinations whose on-failure records carry the whole event, as AWS's S3 and Kafka do.
PAYLOAD_DESTINATIONS = frozenset({"file", "s3", "kafka", "rabbitmq"})
#: Overrides the default runtimes directory (see `Daemon.runtimes_dir`).
RUNTIMES_DIR_ENV = "TRIGGERD_RUNTIMES_DIR"
#: After the drain timeout: how long cancelled work may take to give its records back.
CANCEL_GRACE_S = 5.0


class Runnable(Protocol):
    def stop(self) -> None: ...

    async def run(self) -> None: ...


@dataclass
class Function:
    name: str
    config: FunctionConfig
    backend: Backend
    arn: str


@dataclass
class Daemon:
    config: ConfigBase
    registry: Registry
    clock: Clock = field(default_factory=SystemClock)
    metrics: Metrics = field(default_factory=Metrics)
    functions: dict[str, Function] = field(default_factory=dict)
    triggers: dict[str, Runnable] = field(default_factory=dict)
    state: StateStore | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    listen_address: str | None = None
    #: The control listener's bound address (the Invoke API, /metrics, /readyz, /statusz).
    control_address: str | None = None
    routes: Routes = field(default_factory=Routes)
    _unstarted: dict[str, Source] = field(default_factory=dict)
    #: Per function: the queue of its Event invocations through the Invoke API.
    invoke_queues: dict[str, InvokeQueue] = field(default_factory=dict)
    #: A config error found after the start (a deferred source's first contact): the daemon
    #: stops as it does on SIGTERM, then `run` raises it (exit status 2).
    _fatal: ConfigError | None = None
    #: Start with a new, empty state store where one existed before (`--accept-fresh-state`).
    accept_fresh_state: bool = False
    #: Runs before every state-store write (tests inject failing writes with it).
    state_write_hook: WriteHook | None = None
    #: Per trigger: why it is not running normally (a source not started, a crash).
    trigger_problems: dict[str, str] = field(default_factory=dict)

    @property
    def settings(self) -> DaemonSettings:
        return self.config.daemon

    @property
    def trigger_names(self) -> Collection[str]:
        return self.triggers.keys()

    def source_stats(self) -> dict[str, SourceStats]:
        """Lag per partition of the triggers whose sources report it."""
        return self.metrics.sources.snapshot()

    def runtimes_dir(self) -> str:
        """Where backends keep the packages runtimes provide, shared by the functions."""
        configured = self.config.daemon.runtimes_dir or os.environ.get(RUNTIMES_DIR_ENV)
        return configured or str(self.work_dir() / "runtimes")

    def context(self, name: str) -> BackendContext:
        """The context a function's backend gets (the daemon's, `triggerd build`'s)."""
        d = self.config.daemon
        return BackendContext(
            function=name,
            clock=self.clock,
            log=logging.getLogger("triggerd.function"),
            region=d.region,
            account_id=d.account_id,
            work_dir=str(self.work_dir() / name),
            metrics=self.metrics,
            runtimes_dir=self.runtimes_dir(),
        )

    def work_dir(self) -> Path:
        if self.config.daemon.work_dir:
            return Path(self.config.daemon.work_dir)
        try:
            db = sqlite_path(self.config.daemon.state)
        except Exception:  # non-SQLite stores keep runtime files in the temp dir
            db = ":memory:"
        if db == ":memory:":
            return Path(tempfile.gettempdir()) / f"triggerd-{os.getpid()}"
        return Path(db).parent / "run"

    @contextlib.asynccontextmanager
    async def running(
        self, *, start_timeout_s: float = 30.0, stop_timeout_s: float = 30.0
    ) -> AsyncIterator[Daemon]:
        """The daemon running in this event loop for the length of a block (tests, benchmarks,
        embedding): ready on entry, or its start-up error raised; stopped and drained on exit."""
        stop = asyncio.Event()
        run = asyncio.create_task(self.run(stop))
        ready = asyncio.create_task(self.ready.wait())
        try:
            await asyncio.wait(
                {run, ready}, timeout=start_timeout_s, return_when=asyncio.FIRST_COMPLETED
            )
            if run.done():
                run.result()  # raises the start-up error
            if not self.ready.is_set():
                raise RuntimeError(f"the daemon did not become ready within {start_timeout_s} s")
            yield self
        finally:
            ready.cancel()
            stop.set()
            await asyncio.wait_for(run, stop_timeout_s)

    async def run(self, stop: asyncio.Event) -> None:
        notifier = Notifier.from_env()
        async with AsyncExitStack() as stack:
            state = await open_state_store(
                self.config.daemon.state,
                self.work_dir(),
                stack,
                accept_fresh=self.accept_fresh_state,
                clock=self.clock,
                before_write=self.state_write_hook,
            )
            self.state = state
            await self._start_tracing(stack)
            recovered = await state.recover_leases()
            if recovered:
                log.info("queue.recovered", extra={"events": recovered})
            await self._start_functions(stack)
            await self._build_triggers(stack, state)
            await self._build_invoke_queues(state)
            d = self.config.daemon
            if d.listen:
                self.listen_address = await self._listen(
                    stack, d.listen, "listen", control=d.control_on_public
                )
            if d.control_listen:
                self.control_address = await self._listen(
                    stack, d.control_listen, "control_listen", routes=Routes(), control=True
                )
            notifier.notify("READY=1")
            self.ready.set()
            log.info(
                "daemon.ready",
                extra={
                    "functions": len(self.functions),
                    "triggers": len(self.triggers),
                    "listen": self.listen_address,
                    "control_listen": self.control_address,
                },
            )
            async with asyncio.TaskGroup() as tg:
                tasks = [tg.create_task(self._supervise(n, t, stop)) for n, t in self._runnables()]
                tg.create_task(notifier.watchdog(stop))
                await stop.wait()
                notifier.notify("STOPPING=1")
                log.info("daemon.stopping", extra={"in_flight_triggers": len(tasks)})
                await self._drain(tasks)
        log.info("daemon.stopped")
        if self._fatal is not None:
            raise self._fatal

    async def _listen(
        self,
        stack: AsyncExitStack,
        listen: str,
        key: str,
        *,
        control: bool,
        routes: Routes | None = None,
    ) -> str:
        from triggerd.http.server import start_http

        try:
            name = "control" if key == "control_listen" else "public"
            return await start_http(self, stack, listen, routes=routes, control=control, name=name)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            if exc.errno == errno.EADDRINUSE:
                reason = "the address is already in use (another triggerd, or another program)"
            raise OperatorError(
                f"cannot listen on {listen}: {reason}; change [daemon] {key}",
                ExitCode.LISTEN_FAILED,
            ) from None

    def readiness(self) -> dict[str, Any]:
        """/readyz: each trigger running, or degraded with its reasons; the state store."""
        write_error = self.state.write_error if isinstance(self.state, ReportsWriteHealth) else None
        triggers: dict[str, Any] = {}
        for name in self.trigger_names:
            reasons = []
            if name in self.trigger_problems:
                reasons.append(self.trigger_problems[name])
            if write_error is not None:
                reasons.append(f"state store writes failing: {write_error}")
            status = "degraded" if reasons else "running"
            triggers[name] = {"status": status, "reasons": reasons}
        if not self.ready.is_set():
            status = "starting"
        elif write_error is not None or any(t["reasons"] for t in triggers.values()):
            status = "degraded"
        else:
            status = "ready"
        store = {"status": "failing", "error": write_error} if write_error else {"status": "ok"}
        return {"status": status, "state_store": store, "triggers": triggers}

    async def _drain(self, tasks: list[asyncio.Task[None]]) -> None:
        for _, runnable in self._runnables():
            runnable.stop()
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=self.config.daemon.shutdown_timeout_s)
        if pending:
            log.warning("daemon.drain_timeout", extra={"cancelled": len(pending)})
            for task in pending:
                task.cancel()
            # Cancelled work gives its records back (shielded); bound that too.
            _, stuck = await asyncio.wait(pending, timeout=CANCEL_GRACE_S)
            if stuck:
                log.error("daemon.cancel_timeout", extra={"stuck": len(stuck)})

    def _runnables(self) -> list[tuple[str, Runnable]]:
        return [*self.triggers.items(), *((q.name, q) for q in self.invoke_queues.values())]

    async def _build_invoke_queues(self, state: StateStore) -> None:
        """An Event queue per function while the Invoke API listens, or while a queue still
        holds events from an earlier run."""
        from triggerd.http.invoke_api import InvokeQueue, queue_name

        for fn in self.functions.values():
            if not self.config.daemon.control_addresses and not await state.queue_depth(
                queue_name(fn.name)
            ):
                continue
            self.invoke_queues[fn.name] = InvokeQueue.build(
                function=fn.name,
                function_arn=fn.arn,
                config=fn.config,
                backend=fn.backend,
                state=state,
                clock=self.clock,
                metrics=self.metrics,
            )

    async def _start_late(self, name: str, stop: asyncio.Event) -> bool:
        """Start a source whose first start failed transiently; False if stopped first."""
        source = self._unstarted[name]
        backoff = Backoff(base_s=1.0, max_s=60.0)
        attempt = 0
        while not stop.is_set():
            attempt += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), backoff.delay(attempt))
            if stop.is_set():
                break
            try:
                await source.start()
            except RetryableError as exc:
                log.warning("source.start_deferred", extra={"trigger": name, "error": str(exc)})
                self.trigger_problems[name] = f"source not started: {exc}"
                continue
            except ConfigError as exc:
                # e.g. the brokers, reachable at last, refuse the credentials: as at start,
                # the daemon stops and exits with the error (status 2).
                self._fatal = exc
                stop.set()
                return False
            except Exception as exc:  # task boundary: not typed, so keep trying
                log.warning("source.start_deferred", extra={"trigger": name, "error": repr(exc)})
                continue
            del self._unstarted[name]
            self.trigger_problems.pop(name, None)
            log.info("source.started", extra={"trigger": name, "attempts": attempt + 1})
            return True
        return False

    async def _supervise(self, name: str, trigger: Runnable, stop: asyncio.Event) -> None:
        """Run a trigger; if it crashes, log and restart it with backoff."""
        if name in self._unstarted and not await self._start_late(name, stop):
            return
        backoff = Backoff(base_s=1.0, max_s=60.0)
        failures = 0
        while True:
            try:
                await trigger.run()
                return
            except PermanentError as exc:
                # Restarting cannot fix it (e.g. the group's authorisation was withdrawn): the
                # trigger stays stopped; the other triggers go on.
                log.error("trigger.failed", extra={"trigger": name, "error": str(exc)})
                self.trigger_problems[name] = f"failed, not restarted: {exc}"
                return
            except Exception as exc:  # task boundary: one crash must not stop the others
                failures += 1
                delay = backoff.delay(failures)
                log.exception("trigger.crashed", extra={"trigger": name, "restart_in_s": delay})
                self.trigger_problems[name] = (
                    f"crashed {failures} time(s), restarting: {type(exc).__name__}: {exc}"
                )
                await asyncio.sleep(delay)
                # Running again: a trigger that keeps crashing is degraded while it waits.
                self.trigger_problems.pop(name, None)

    async def _start_tracing(self, stack: AsyncExitStack) -> None:
        """OpenTelemetry spans when `[telemetry.otel]` is configured (the `otel` extra)."""
        settings = self.config.telemetry.otel
        if settings is None:
            return
        from triggerd.config.plugins import import_extra

        try:
            import_extra("opentelemetry.sdk.trace", "otel", "[telemetry.otel]")
            import_extra(
                "opentelemetry.exporter.otlp.proto.http.trace_exporter", "otel", "[telemetry.otel]"
            )
        except MissingExtraError as exc:
            raise ConfigError([f"telemetry.otel: {exc}"]) from None
        from triggerd.telemetry.otel import OtelTracer

        tracer = OtelTracer.otlp(
            endpoint=settings.endpoint,
            headers={k: v.get_secret_value() for k, v in settings.headers.items()},
            service_name=settings.service_name,
        )
        self.metrics.tracer = tracer
        stack.push_async_callback(tracer.shutdown)

    async def _start_functions(self, stack: AsyncExitStack) -> None:
        for name, fcfg in self.config.function_map.items():
            plugin = self.registry.backend(getattr(fcfg, "backend", "local"))
            ctx = self.context(name)
            # Every invocation, whoever makes it, is counted and traced once, here.
            backend = InstrumentedBackend(plugin.create(fcfg, ctx), name, self.metrics, self.clock)
            await backend.start()
            stack.push_async_callback(backend.stop)
            self.functions[name] = Function(name, fcfg, backend, ctx.function_arn)

    async def _build_triggers(self, stack: AsyncExitStack, state: StateStore) -> None:
        for index, tcfg in enumerate(self.config.trigger_list):
            if not tcfg.enabled:
                continue
            name = self.config.trigger_name(index)
            rt = await self._runtime(stack, state, name, tcfg)
            fn = self.functions[tcfg.function]
            if tcfg.is_async:
                # A claim covers waiting for a free worker (up to the timeout) and the run.
                lease_s = 2 * fn.config.timeout_s + 60
                self.triggers[name] = AsyncTrigger(
                    rt,
                    state,
                    lease_s=lease_s,
                    throttles_dead_letter=fn.config.reserved_concurrency == 0,
                )
            else:
                self.triggers[name] = SyncTrigger(rt)

    async def _runtime(
        self, stack: AsyncExitStack, state: StateStore, name: str, tcfg: TriggerBase
    ) -> TriggerRuntime:
        d = self.config.daemon
        tlog = logging.getLogger("triggerd.trigger")
        src_cfg = tcfg.source_config
        plugin = self.registry.source(getattr(src_cfg, "type"))  # noqa: B009
        fn = self.functions[tcfg.function]
        source = plugin.create(
            src_cfg,
            SourceContext(
                trigger=name,
                state=state,
                clock=self.clock,
                log=tlog,
                region=d.region,
                account_id=d.account_id,
                http=self.routes if d.listen else None,
                invoke=fn.backend.invoke,
                function=fn.name,
                function_timeout_s=fn.config.timeout_s,
            ),
        )
        dest_cfg = tcfg.on_failure_config
        destination = None
        dest_type = ""
        if dest_cfg is not None:
            dest_type = getattr(dest_cfg, "type")  # noqa: B009
            destination = self.registry.destination(dest_type).create(
                dest_cfg, DestinationContext(trigger=name, clock=self.clock, log=tlog)
            )
        rt = TriggerRuntime.assemble(
            name=name,
            config=tcfg,
            function=fn.name,
            function_arn=fn.arn,
            source=source,
            backend=fn.backend,
            state=state,
            clock=self.clock,
            metrics=self.metrics,
            log=tlog,
            destination=destination,
            destination_name=dest_type or "none",
            include_payload=dest_type in PAYLOAD_DESTINATIONS,
        )
        await rt.on_failure.start()
        stack.push_async_callback(rt.on_failure.stop)
        try:
            await source.start()
        except RetryableError as exc:
            # e.g. the broker is not reachable yet: the trigger keeps trying in the background.
            log.warning("source.start_deferred", extra={"trigger": name, "error": str(exc)})
            self._unstarted[name] = source
            self.trigger_problems[name] = f"source not started: {exc}"
        stack.push_async_callback(source.stop)
        if isinstance(source, ReportsStats):
            self.metrics.sources.register(name, source.stats)
        return rt
