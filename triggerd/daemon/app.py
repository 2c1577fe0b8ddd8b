"""The daemon: builds functions and triggers from the config and runs them until stopped.

Shutdown order (SIGTERM): STOPPING -> triggers stop polling -> in-flight batches and
invocations drain up to `shutdown_timeout_s` -> the rest is nacked / released -> sources,
destinations, backends, the HTTP server and the state store close.

Each trigger owns its source, destination and routes (`TriggerSlot`), so a reload (SIGHUP)
or a pause can drain and stop one trigger alone (`reload`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import tempfile
from collections.abc import AsyncIterator, Callable, Collection
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from triggerd.config.model import ConfigBase, DaemonSettings, TriggerBase
from triggerd.config.plugins import Registry
from triggerd.daemon.changes import diff_configs, enabled_triggers
from triggerd.daemon.inflight import CountedBackend
from triggerd.daemon.systemd import Notifier
from triggerd.daemon.watch import require_watchfiles, watch_functions
from triggerd.delivery.asyncpath import AsyncTrigger
from triggerd.delivery.pipeline import SyncTrigger, TriggerRuntime
from triggerd.delivery.retry import Backoff
from triggerd.http.aws_root import RootApis
from triggerd.http.routes import Routes, TriggerMount
from triggerd.state.base import NotifiesEnqueues, ReportsWriteHealth, StateStore
from triggerd.state.factory import sqlite_path
from triggerd.state.guard import open_state_store
from triggerd.state.sqlite import WriteHook
from triggerd.telemetry.instrument import InstrumentedBackend, trigger_invoke
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
    SourceConfig,
    SourceContext,
    SourceStats,
    SystemClock,
    TriggerdError,
)

if TYPE_CHECKING:
    from triggerd.http.invoke_api import InvokeQueue

log = logging.getLogger("triggerd.daemon")
#: Destinations whose on-failure records carry the whole event, as AWS's S3 and Kafka do.
PAYLOAD_DESTINATIONS = frozenset({"file", "s3", "kafka", "rabbitmq"})
#: Overrides the default runtimes directory (see `Daemon.runtimes_dir`).
RUNTIMES_DIR_ENV = "TRIGGERD_RUNTIMES_DIR"
#: After the drain timeout: how long cancelled work may take to give its records back. The
#: settlement writes under way finish first, each within its own shorter grace
#: (`delivery.settle`; an on-failure record being delivered, `asyncpath.DELIVERY_GRACE_S`), and
#: the store is closed only after the triggers' tasks ended (the task group waits for them past
#: this, which only logs `daemon.cancel_timeout`): a SIGTERM stops the daemon within
#: `shutdown_timeout_s` + those graces (at most 7 s on the asynchronous path) + the closing of
#: clients and the store.
CANCEL_GRACE_S = 5.0


class DaemonStoppingError(TriggerdError):
    """A reload, pause or resume asked for once the daemon is stopping (answered 503)."""

    def __init__(self) -> None:
        super().__init__("the daemon is stopping")


def _resolved(path: str) -> str:
    return str(Path(path).resolve())


class Worker(Protocol):
    def stop(self) -> None: ...

    async def run(self) -> None: ...


class Runnable(Protocol):
    rt: TriggerRuntime

    def stop(self) -> None: ...

    async def run(self) -> None: ...


@dataclass
class Function:
    name: str
    config: FunctionConfig
    backend: Backend
    arn: str


@dataclass
class TriggerSlot:
    """One running trigger: what it was built from and what it holds, so a reload or a pause
    can drain and close it alone."""

    name: str
    config: TriggerBase
    runnable: Runnable
    #: Its source and on-failure destination, closed when the trigger stops.
    stack: AsyncExitStack
    #: Its routes on the listen address (webhooks), None without one.
    mount: TriggerMount | None
    #: Set when the trigger is to stop (deferred source starts give up).
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


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
    #: The AWS APIs on POST / of the control endpoints (SNS, EventBridge), as configured.
    root_apis: RootApis = field(default_factory=RootApis)
    _unstarted: dict[str, Source] = field(default_factory=dict)
    #: Per function: the queue of its Event invocations through the Invoke API.
    invoke_queues: dict[str, InvokeQueue] = field(default_factory=dict)
    #: Workers of the AWS-compatible services (the SNS topics' SQS outbox), by name.
    service_workers: dict[str, Worker] = field(default_factory=dict)
    #: A config error found after the start (a deferred source's first contact): the daemon
    #: stops as it does on SIGTERM, then `run` raises it (exit status 2).
    _fatal: ConfigError | None = None
    #: Start with a new, empty state store where one existed before (`--accept-fresh-state`).
    accept_fresh_state: bool = False
    #: Runs before every state-store write (tests inject failing writes with it).
    state_write_hook: WriteHook | None = None
    #: Per trigger: why it is not running normally (a source not started, a crash).
    trigger_problems: dict[str, str] = field(default_factory=dict)
    #: The file a reload (SIGHUP, `triggerd reload`) reads again; None: reload is refused.
    config_path: str | None = None
    #: Instead of a file: what a reload calls for the new config (`run --sam/--serverless`
    #: translates the template again), raising ConfigError when it is not valid; and the
    #: file it reads, named in the errors.
    config_loader: Callable[[], ConfigBase] | None = None
    config_source: str | None = None
    #: Triggers paused by `triggerd pause` (kept in the state store): built only on resume.
    paused: set[str] = field(default_factory=set)
    slots: dict[str, TriggerSlot] = field(default_factory=dict)
    notifier: Notifier = field(default_factory=Notifier.from_env)
    _queue_tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    _tg: asyncio.TaskGroup | None = None
    _stop: asyncio.Event | None = None
    _reload_requested: asyncio.Event = field(default_factory=asyncio.Event)
    #: What the last reload did (POST /control/reload answers it): see `reload_config`.
    last_reload: dict[str, Any] = field(default_factory=dict)
    #: Reloads, pauses and resumes one at a time.
    _lifecycle: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: Set by a second signal (the exit is forced): the triggers' settlement writes under way
    #: stop waiting out their grace (`delivery.settle`).
    forced: asyncio.Event = field(default_factory=asyncio.Event)
    #: Hot reload (`run --watch`): a change to a local function's code, requirements or
    #: layers recycles its workers (triggerd.daemon.watch); needs watchfiles.
    watch: bool = False

    @property
    def settings(self) -> DaemonSettings:
        return self.config.daemon

    @property
    def stopping(self) -> bool:
        """Set from SIGTERM on: nothing starts any more (a trigger started after `_drain`
        collected the tasks it stops would keep the daemon from ever exiting)."""
        return self._stop is not None and self._stop.is_set()

    @property
    def trigger_names(self) -> Collection[str]:
        """Every enabled trigger of the config: running, starting, failing or paused."""
        return list(enabled_triggers(self.config))

    def paused_triggers(self) -> set[str]:
        """The paused triggers the running config has."""
        return self.paused & enabled_triggers(self.config).keys()

    @property
    def async_trigger_names(self) -> Collection[str]:
        """The enabled triggers with a durable async queue (paused ones' queues included)."""
        return [name for name, t in enabled_triggers(self.config).items() if t.is_async]

    def source_stats(self) -> dict[str, SourceStats]:
        """Lag per partition of the triggers whose sources report it."""
        return self.metrics.sources.snapshot()

    def backends(self) -> dict[str, Backend]:
        """The running functions' backends by name."""
        return {name: fn.backend for name, fn in self.functions.items()}

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
            daemon_ready=self.ready,
        )

    def work_dir(self) -> Path:
        if self.config.daemon.work_dir:
            return Path(self.config.daemon.work_dir)
        try:
            db = sqlite_path(self.config.daemon.state)
        except Exception:  # a PostgreSQL store: runtime files go to the temp dir
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

    async def _start_sns(self, state: StateStore) -> None:
        """Serve `[sns]` when the config has it. Its module (the XML wire format, the fan-out)
        is imported only then: most daemons serve no topics."""
        if self.config.sns is None:
            return
        from triggerd.daemon.sns import start_sns

        if (sns_outbox := await start_sns(self, state)) is not None:
            self.service_workers["sns-sqs-outbox"] = sns_outbox

    async def run(self, stop: asyncio.Event) -> None:
        notifier = self.notifier
        self._stop = stop
        if self.watch:
            require_watchfiles()  # before anything starts: one line naming the extra
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
            self.paused = await state.paused_triggers()
            stack.push_async_callback(self._stop_functions)
            await self._start_functions()
            stack.push_async_callback(self._close_slots)
            await self._build_triggers()
            await self._build_invoke_queues(state)
            if isinstance(state, NotifiesEnqueues):
                state.on_enqueued(self._enqueued)
            if self.config.event_buses:
                # EventBridge's API and its models, for a config that has buses only (a reload
                # that adds the first bus needs a restart: `changes.diff_configs`).
                from triggerd.http.events_api import serve_event_buses

                serve_event_buses(self.root_apis, self, lambda: self.config.event_buses)
            await self._start_sns(state)
            d = self.config.daemon
            self._reserve_descriptors(stack)
            if d.listen:
                self.listen_address = await self._listen(
                    stack, d.listen, "listen", control=d.control_on_public
                )
            if d.control_listen:
                self.control_address = await self._listen(
                    stack, d.control_listen, "control_listen", routes=Routes(), control=True
                )
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                for slot in self.slots.values():
                    self._launch(slot)
                for queue in self.invoke_queues.values():
                    self._launch_queue(queue)
                for name, worker in self.service_workers.items():
                    self._queue_tasks[name] = tg.create_task(
                        self._supervise(name, worker, asyncio.Event())
                    )
                notifier.ready(self.status_line())
                self.ready.set()
                log.info(
                    "daemon.ready",
                    extra={
                        "functions": len(self.functions),
                        "triggers": len(self.triggers),
                        "paused": sorted(self.paused_triggers()),
                        "listen": self.listen_address,
                        "control_listen": self.control_address,
                    },
                )
                if self.watch:
                    tg.create_task(watch_functions(self.backends, stop))
                tg.create_task(notifier.watchdog(stop))
                tg.create_task(notifier.follow_status(self.status_line, stop))
                await self._serve(stop)
                notifier.stopping()
                log.info("daemon.stopping", extra={"in_flight_triggers": len(self.slots)})
                # A pause or resume under way finishes first (one arriving now is refused:
                # `stopping`), so every trigger it started is among those drained.
                async with self._lifecycle:
                    await self._drain()
        log.info("daemon.stopped")
        if self._fatal is not None:
            raise self._fatal

    async def _serve(self, stop: asyncio.Event) -> None:
        """Until stopped: reload when asked (one reload at a time; asks during one are
        served by one more)."""
        while not stop.is_set():
            stopped = asyncio.ensure_future(stop.wait())
            asked = asyncio.ensure_future(self._reload_requested.wait())
            try:
                await asyncio.wait({stopped, asked}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopped.cancel()
                asked.cancel()
            if stop.is_set():
                return
            self._reload_requested.clear()
            await self.reload()

    def request_reload(self) -> None:
        """SIGHUP: re-read the config file and apply what changed (see `reload`)."""
        if self.stopping:
            log.warning(
                "daemon.reload_ignored",
                extra={"signal": "SIGHUP", "error": "the daemon is stopping"},
            )
            return
        log.info("daemon.signal", extra={"signal": "SIGHUP"})
        self._reload_requested.set()

    async def reload(self) -> bool:
        """Re-read and validate the config file; if valid, restart only the functions,
        triggers and routes that changed. False (the running config kept) if it is not."""
        from triggerd.daemon.reload import apply_changes, read_config

        self.notifier.reloading()
        try:
            new = await read_config(self)
            if new is None:
                return False
            async with self._lifecycle:
                if self.stopping:
                    log.warning("daemon.reload_ignored", extra={"error": "the daemon is stopping"})
                    return False
                changes = diff_configs(self.config, new)
                return await apply_changes(self, changes)
        except Exception as exc:  # boundary: a failed reload must not stop the running daemon
            log.exception("daemon.reload_failed")
            self.last_reload = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
            return False
        finally:
            self.notifier.ready(self.status_line())

    async def reload_config(self, path: str | None) -> dict[str, Any]:
        from triggerd.http.pausing import ConfigMismatchError

        if self.stopping:
            raise DaemonStoppingError()
        own = self.config_path
        if path is not None and own is not None:
            try:
                theirs, ours = await asyncio.to_thread(lambda: (_resolved(path), _resolved(own)))
            except (ValueError, OSError, RuntimeError):  # a NUL byte, a symlink loop
                raise ConfigMismatchError(f"{path!r} is not a path triggerd can resolve") from None
            if theirs != ours:
                raise ConfigMismatchError(
                    f"triggerd runs {ours}, not {theirs}: a reload re-reads the daemon's "
                    "own file (name it, or restart triggerd on the other one)"
                )
        self.last_reload = {}
        # A caller gone (its request cancelled) must not cut a reload short half-way.
        await asyncio.shield(self.reload())
        if self.stopping and not self.last_reload:
            raise DaemonStoppingError()
        return {"config": own, **(self.last_reload or {"status": "failed"})}

    async def pause_trigger(self, name: str) -> bool:
        from triggerd.daemon.reload import pause

        return await pause(self, name)

    async def resume_trigger(self, name: str) -> bool:
        from triggerd.daemon.reload import resume

        return await resume(self, name)

    def status_line(self) -> str:
        """systemd's STATUS=: "3 triggers running, 1 paused, 0 failing"."""
        paused = self.paused_triggers()
        names = [n for n in self.trigger_names if n not in paused]
        # A trigger between its stop and its start in a reload counts as neither.
        failing = sum(1 for n in names if n in self.trigger_problems)
        running = sum(1 for n in names if n in self.triggers and n not in self.trigger_problems)
        noun = "trigger" if running == 1 else "triggers"
        return f"{running} {noun} running, {len(paused)} paused, {failing} failing"

    def _reserve_descriptors(self, stack: AsyncExitStack) -> None:
        """One descriptor reservation for both listeners' connection caps, the local workers
        that may still start (`max_workers` of each local function) and the outbound
        connection pools (`max_connections` of each http or aws function)."""
        from triggerd.http.server import reserve_descriptors

        d = self.config.daemon
        listeners = sum(1 for address in (d.listen, d.control_listen) if address)
        if not listeners:
            return
        functions = list(self.config.function_map.values())
        workers = sum(_int_attr(f, "max_workers") for f in functions)
        outbound = sum(_int_attr(f, "max_connections") for f in functions)
        reserve_descriptors(self, stack, listeners, workers, outbound)

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
            return await start_http(
                self,
                stack,
                listen,
                routes=routes,
                control=control,
                name=name,
                root_apis=self.root_apis,
            )
        except OSError as exc:
            reason = exc.strerror or str(exc)
            if exc.errno == errno.EADDRINUSE:
                reason = "the address is already in use (another triggerd, or another program)"
            raise OperatorError(
                f"cannot listen on {listen}: {reason}; change [daemon] {key}",
                ExitCode.LISTEN_FAILED,
            ) from None

    def _enqueued(self, trigger: str) -> None:
        """A shared store's hint that events of `trigger` were enqueued (maybe by another
        daemon): wake that queue, which otherwise waits for its next due event."""
        wake = getattr(self.triggers.get(trigger), "wake", None)
        if callable(wake):
            wake()
        for queue in self.invoke_queues.values():
            if queue.name == trigger:
                queue.trigger.wake()

    def readiness(self) -> dict[str, Any]:
        """/readyz: each trigger running, paused, restarting (in a reload) or degraded with
        its reasons; the state store. Paused triggers do not make the daemon degraded: an
        operator paused them."""
        write_error = self.state.write_error if isinstance(self.state, ReportsWriteHealth) else None
        triggers: dict[str, Any] = {}
        paused = self.paused_triggers()
        for name in self.trigger_names:
            if name in paused and name not in self.triggers:
                triggers[name] = {"status": "paused", "reasons": []}
                continue
            if name not in self.triggers and name not in self.trigger_problems:
                # Being restarted by a reload (its start failing would be a problem).
                triggers[name] = {"status": "restarting", "reasons": []}
                continue
            reasons = []
            if name in self.trigger_problems:
                reasons.append(self.trigger_problems[name])
            runnable = self.triggers.get(name)
            failing = runnable.rt.on_failure.failing if runnable is not None else None
            if failing is not None:
                since = datetime.fromtimestamp(failing[0], UTC).isoformat(timespec="seconds")
                reasons.append(f"on-failure destination failing since {since}: {failing[1]}")
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

    # ---- triggers: built, launched, drained one by one ----

    def _launch(self, slot: TriggerSlot) -> None:
        assert self._tg is not None
        self.triggers[slot.name] = slot.runnable
        slot.task = self._tg.create_task(self._supervise(slot.name, slot.runnable, slot.stop))

    def _launch_queue(self, queue: InvokeQueue) -> None:
        assert self._tg is not None
        self._queue_tasks[queue.name] = self._tg.create_task(
            self._supervise(queue.name, queue, asyncio.Event())
        )

    async def _drain(self) -> None:
        """Stop every trigger and queue: in-flight work finishes up to the shutdown timeout;
        what does not is cancelled (and gives its records back)."""
        for slot in self.slots.values():
            slot.stop.set()
        for _, runnable in self._runnables():
            runnable.stop()
        for worker in self.service_workers.values():
            worker.stop()
        tasks = [s.task for s in self.slots.values() if s.task is not None]
        try:
            await self._wait_drained([*tasks, *self._queue_tasks.values()])
        except asyncio.CancelledError:
            self.forced.set()  # the stop is forced: settlements stop waiting too
            raise

    async def _wait_drained(self, tasks: list[asyncio.Task[None]]) -> None:
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

    async def stop_trigger(self, name: str, *, keep_routes: bool = False) -> None:
        """Drain one trigger (its in-flight batches finish and are settled), then close its
        source and destination. `keep_routes`: its webhook routes stay until the trigger
        that replaces it commits its own."""
        slot = self.slots.pop(name, None)
        if slot is None:
            if not keep_routes:
                self.routes.remove_routes(name)  # a paused trigger's placeholders
            return
        self.triggers.pop(name, None)  # draining: no longer counted as running
        slot.stop.set()
        slot.runnable.stop()
        if keep_routes and slot.mount is not None:
            slot.mount.detach()
        if slot.task is not None:
            await self._wait_drained([slot.task])
        try:
            await slot.stack.aclose()
        except Exception:  # a source failing to close must not stop the reload
            log.exception("trigger.close_failed", extra={"trigger": name})
        self._unstarted.pop(name, None)
        self.trigger_problems.pop(name, None)
        self.metrics.sources.unregister(name)
        log.info("trigger.stopped", extra={"trigger": name})

    async def start_trigger(self, name: str, tcfg: TriggerBase, *, replacing: bool) -> None:
        """Build and launch one trigger; `replacing`: its webhook routes take the place of
        the stopped trigger's in one step."""
        if self.stopping:
            raise DaemonStoppingError()
        self.trigger_problems.pop(name, None)  # an earlier failure to start
        slot = await self._build_slot(name, tcfg, staged=replacing)
        if self.stopping:  # stopped while its source started: never launched
            self.slots.pop(name, None)
            self.triggers.pop(name, None)
            self._unstarted.pop(name, None)
            self.routes.remove_routes(name)
            await slot.stack.aclose()
            raise DaemonStoppingError()
        self._launch(slot)
        log.info("trigger.started", extra={"trigger": name})

    def hold_routes(self, name: str, tcfg: TriggerBase | None = None) -> None:
        """A paused trigger's webhook paths answer 503 with Retry-After, as a draining
        webhook does, never 404 (a sender drops the event on a 4xx). `tcfg`: a trigger paused
        since the start, whose routes were never added (a webhook's method and path)."""
        if not self.settings.listen:
            return
        from aiohttp import web

        async def paused(request: Any) -> Any:
            return web.json_response(
                {"message": f"trigger {name} is paused"},
                status=503,
                headers={"Retry-After": "1"},
            )

        src = tcfg.source_config if tcfg is not None else None
        if src is not None and getattr(src, "type", None) == "webhook":
            method, path = getattr(src, "method", "ANY"), getattr(src, "path", "")
            with contextlib.suppress(ValueError):  # a path taken: the trigger never served it
                self.routes.add_route(method, path, paused, owner=name)
        self.routes.hold(name, paused)

    async def _close_slots(self) -> None:
        for name in reversed(list(self.slots)):
            slot = self.slots.pop(name)
            await slot.stack.aclose()

    def _runnables(self) -> list[tuple[str, Runnable]]:
        return [*self.triggers.items(), *((q.name, q) for q in self.invoke_queues.values())]

    async def _build_invoke_queues(self, state: StateStore, only: Collection[str] = ()) -> None:
        """An Event queue per function while the Invoke API listens, or while a queue still
        holds events from an earlier run (`only`: for these functions alone)."""
        from triggerd.http.invoke_api import InvokeQueue, queue_name

        for fn in self.functions.values():
            if only and fn.name not in only:
                continue
            if not self.config.daemon.control_addresses and not await state.queue_depth(
                queue_name(fn.name)
            ):
                continue
            settings = self.config.async_invocation_map.get(fn.name)
            dest_cfg = settings.on_failure_config if settings is not None else None
            destination = None
            dest_type = ""
            if dest_cfg is not None:
                dest_type = getattr(dest_cfg, "type")  # noqa: B009
                destination = self.registry.destination(dest_type).create(
                    dest_cfg,
                    DestinationContext(
                        trigger=queue_name(fn.name),
                        clock=self.clock,
                        log=logging.getLogger("triggerd.trigger"),
                        region=self.config.daemon.region,
                    ),
                )
            self.invoke_queues[fn.name] = InvokeQueue.build(
                function=fn.name,
                function_arn=fn.arn,
                config=fn.config,
                backend=fn.backend,
                state=state,
                clock=self.clock,
                metrics=self.metrics,
                lease_s=self.config.daemon.lease_timeout_s,
                retry_attempts=settings.maximum_retry_attempts if settings else None,
                maximum_event_age_s=settings.maximum_event_age_s if settings else None,
                destination=destination,
                destination_name=dest_type or "none",
                include_payload=dest_type in PAYLOAD_DESTINATIONS,
                forced=self.forced,
            )

    async def stop_invoke_queue(self, function: str) -> None:
        queue = self.invoke_queues.pop(function, None)
        if queue is None:
            return
        queue.stop()
        task = self._queue_tasks.pop(queue.name, None)
        if task is not None:
            await self._wait_drained([task])

    async def start_invoke_queue(self, function: str) -> None:
        assert self.state is not None
        if self.stopping:
            return
        await self._build_invoke_queues(self.state, only=(function,))
        queue = self.invoke_queues.get(function)
        if queue is not None:
            self._launch_queue(queue)

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
                if self._stop is not None:
                    self._stop.set()
                return False
            except Exception as exc:  # task boundary: not typed, so keep trying
                log.warning("source.start_deferred", extra={"trigger": name, "error": repr(exc)})
                continue
            del self._unstarted[name]
            self.trigger_problems.pop(name, None)
            log.info("source.started", extra={"trigger": name, "attempts": attempt + 1})
            return True
        return False

    async def _supervise(self, name: str, trigger: Worker, stop: asyncio.Event) -> None:
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
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                if stop.is_set():
                    return
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

    # ---- functions ----

    async def start_function(self, name: str, fcfg: FunctionConfig) -> Function:
        plugin = self.registry.backend(getattr(fcfg, "backend", "local"))
        ctx = self.context(name)
        # Every invocation, whoever makes it, is counted and traced once, here; and counted
        # in flight, so a reload stops a replaced backend only once they finished.
        backend = CountedBackend(
            InstrumentedBackend(plugin.create(fcfg, ctx), name, self.metrics, self.clock)
        )
        await backend.start()
        return Function(name, fcfg, backend, ctx.function_arn)

    async def _start_functions(self) -> None:
        for name, fcfg in self.config.function_map.items():
            self.functions[name] = await self.start_function(name, fcfg)

    async def _stop_functions(self) -> None:
        for name in reversed(list(self.functions)):
            await self.functions.pop(name).backend.stop()

    async def _build_triggers(self) -> None:
        for name, tcfg in enabled_triggers(self.config).items():
            if name in self.paused:
                log.info("trigger.paused", extra={"trigger": name})
                self.hold_routes(name, tcfg)
                continue
            await self._build_slot(name, tcfg)

    async def _build_slot(
        self, name: str, tcfg: TriggerBase, *, staged: bool = False
    ) -> TriggerSlot:
        """The trigger built and its source started (or deferred), registered in `slots`;
        on an error its stack is closed and the error raised."""
        assert self.state is not None
        stack = AsyncExitStack()
        mount = TriggerMount(self.routes, name, staged=staged) if self.settings.listen else None
        try:
            rt = await self._runtime(stack, self.state, name, tcfg, mount)
        except BaseException:
            if mount is not None and staged:
                self.routes.remove_routes(name)  # the old trigger's routes, kept for the swap
            await stack.aclose()
            raise
        fn = self.functions[tcfg.function]
        runnable: Runnable
        if tcfg.is_async:
            # A claim covers waiting for a free worker (up to the timeout) and the run.
            lease_s = self.config.daemon.lease_timeout_s or 2 * fn.config.timeout_s + 60
            runnable = AsyncTrigger(
                rt,
                self.state,
                lease_s=lease_s,
                throttles_dead_letter=fn.config.reserved_concurrency == 0,
                singleton_lease_s=self.config.daemon.singleton_lease_timeout_s,
            )
        else:
            runnable = SyncTrigger(
                rt, self.state, singleton_lease_s=self.config.daemon.singleton_lease_timeout_s
            )
        slot = TriggerSlot(name, tcfg, runnable, stack, mount)
        self.slots[name] = slot
        self.triggers[name] = runnable
        return slot

    async def _runtime(
        self,
        stack: AsyncExitStack,
        state: StateStore,
        name: str,
        tcfg: TriggerBase,
        mount: TriggerMount | None,
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
                http=mount,
                invoke=trigger_invoke(fn.backend, name),
                function=fn.name,
                function_timeout_s=fn.config.timeout_s,
                splits_batches=tcfg.effective_bisect,
                gives_up_after=_gives_up_after(tcfg),
                singleton_lease_s=d.singleton_lease_timeout_s,
            ),
        )
        dest_cfg = tcfg.on_failure_config
        destination = None
        dest_type = ""
        if dest_cfg is not None:
            dest_type = getattr(dest_cfg, "type")  # noqa: B009
            destination = self.registry.destination(dest_type).create(
                dest_cfg,
                DestinationContext(
                    trigger=name, clock=self.clock, log=tlog, region=self.config.daemon.region
                ),
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
            include_payload=_failure_payload(dest_type, src_cfg),
            forced=self.forced,
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
        if mount is not None:
            mount.commit()
        if isinstance(source, ReportsStats):
            self.metrics.sources.register(name, source.stats)
        return rt


def _failure_payload(dest_type: str, src_cfg: SourceConfig) -> bool:
    """Whether the on-failure records of a trigger carry the batch's event: at destinations
    that carry it on AWS, and at every destination for queue sources (SQS, RabbitMQ), whose
    message is deleted once its record is written. A stream's records stay in the stream,
    where metadata finds them; a queue's would be nowhere (AWS has no on-failure destination
    for them: its queue's dead-letter queue keeps the message)."""
    return dest_type in PAYLOAD_DESTINATIONS or src_cfg.retry_owner == "source"


def _gives_up_after(tcfg: TriggerBase) -> int | None:
    """Failed attempts after which the trigger writes a record to its on-failure destination."""
    attempts = tcfg.effective_retry_attempts
    return attempts if tcfg.on_failure_config is not None and attempts >= 0 else None


def _int_attr(config: object, name: str) -> int:
    """A backend config's size (`max_workers`, `max_connections`), 0 when it has none."""
    value = getattr(config, name, 0)
    return value if isinstance(value, int) else 0
