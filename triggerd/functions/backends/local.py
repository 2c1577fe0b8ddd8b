"""The `local` function backend: warm runtime processes fed through the Lambda Runtime API.

Each execution environment is one worker process with its own Runtime API endpoint on
loopback (see `local_worker`): the bundled Python runtime client, awslambdaric, or a custom
runtime's `bootstrap` in any language. Workers are started on demand (a cold start) or ahead
of time (provisioned concurrency), reused while warm, capped by the function's concurrency and
stopped after `idle_timeout_s` without work; a timeout, a crash or going over `memory_mb` tears
the environment down and the next invocation starts a fresh one. START / END / REPORT lines go
to `triggerd.function`, and the figures to the daemon's metrics.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import errno
import glob
import logging
import math
import os
import random
import shutil
import time
from collections.abc import Collection, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from triggerd.events.ids import random_uuid
from triggerd.events.timestamps import iso_ms
from triggerd.events.tracing import new_trace_id
from triggerd.functions.backends.local_build import BuildError
from triggerd.functions.backends.local_config import LocalFunctionConfig, Prepared, worker_spec
from triggerd.functions.backends.local_credentials import CredentialSource
from triggerd.functions.backends.local_package import PackageError
from triggerd.functions.backends.local_prepare import prepare
from triggerd.functions.backends.local_worker import LogCapture, Worker, WorkerSpec
from triggerd.functions.backends.slots import Slots
from triggerd.functions.runtime_api import PendingInvocation, ReplyKind, RuntimeReply
from triggerd.telemetry.logs import LineLogger
from triggerd.types import (
    BackendContext,
    ConfigError,
    InvocationType,
    InvokeResult,
    MissingExtraError,
    Outcome,
    PermanentError,
    ProgressFn,
    RetryableError,
)

__all__ = ["LocalBackend", "LocalFunctionConfig", "plugin"]

#: Lambda's on-demand init phase limit.
INIT_TIMEOUT_S = 10.0
#: After an init failure, invocations get the same error without a new worker for this long
#: (doubling on each further failure, up to the maximum).
INIT_BACKOFF_S = 5.0
INIT_BACKOFF_MAX_S = 60.0
#: How long a stopping worker gets between SIGTERM and SIGKILL.
STOP_GRACE_S = 2.0
#: How often the resident memory of busy workers is sampled (the OOM check).
MEMORY_SAMPLE_S = 0.01
#: A worker's memory growth (`worker_max_rss_growth_mb`) is checked after its first
#: invocation and every this many after.
RSS_CHECK_EVERY = 16
#: Longest pause between idle-worker checks.
MAINTAIN_MAX_S = 30.0
#: Why a runtime could not be started that lies with the function (a bootstrap whose
#: interpreter is missing, or not a program): Lambda's `Runtime.InvalidEntrypoint`. Others
#: (no file descriptors or processes left) are the machine's, and retried.
_ENTRYPOINT_ERRNOS = frozenset(
    {errno.ENOENT, errno.EACCES, errno.ENOEXEC, errno.ENOTDIR, errno.EISDIR, errno.ELOOP}
)
# --------------------------------------------------------------------------------------------
# Lambda's texts


def report_line(
    request_id: str, duration_ms: float, memory_mb: int, used_mb: int, init_ms: float | None
) -> str:
    billed = max(1, math.ceil(duration_ms))
    text = (
        f"REPORT RequestId: {request_id}\tDuration: {duration_ms:.2f} ms\t"
        f"Billed Duration: {billed} ms\tMemory Size: {memory_mb} MB\t"
        f"Max Memory Used: {used_mb} MB\t"
    )
    if init_ms is not None:
        text += f"Init Duration: {init_ms:.2f} ms\t"
    return text


def exit_error(request_id: str, reason: str, error_type: str = "Runtime.ExitError") -> bytes:
    message = f"RequestId: {request_id} Error: Runtime exited with error: {reason}"
    if reason == "exit status 0":
        message = f"RequestId: {request_id} Error: Runtime exited without providing a reason"
    return orjson.dumps({"errorType": error_type, "errorMessage": message})


def billed_gb_seconds(duration_ms: float, memory_mb: int) -> float:
    """Lambda's billing unit: duration rounded up to the millisecond, times memory in GB."""
    return max(1, math.ceil(duration_ms)) * memory_mb / 1024 / 1000


def client_context_header(value: str | None) -> str | None:
    """Client context as the runtime receives it: JSON (base64 as in the Invoke API accepted)."""
    if value is None or value.lstrip().startswith("{"):
        return value
    try:
        return base64.b64decode(value, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return value


#: An invocation's client context and trace header, as the caller gave them.
_Headers = tuple[str | None, str | None]


@dataclass(slots=True)
class _InitFailure:
    body: bytes
    retry_at: float
    #: Set when the runtime died during init: the error names each invocation's request id.
    exit_reason: str | None = None
    #: Set when the runtime could not be started (`Runtime.InvalidEntrypoint`): why, as
    #: Lambda words it (`fork/exec <path>: no such file or directory`).
    entrypoint: str | None = None


@dataclass(slots=True)
class _Start:
    """A cold start: the new worker, how long its init took, and how init failed if it did."""

    worker: Worker
    init_ms: float
    failure: RuntimeReply | None = None
    timed_out: bool = False
    #: Init run again within the invocation (the first one took over INIT_TIMEOUT_S): its
    #: time counts against the function's timeout and is part of the invocation's duration.
    in_invoke: bool = False

    @property
    def ok(self) -> bool:
        return self.failure is None and not self.timed_out


# --------------------------------------------------------------------------------------------
# Backend

#: Stands for "the invocation ran out of time" in place of a runtime reply.
_TIMED_OUT = RuntimeReply(ReplyKind.CLOSED, error_type="timeout")


class LocalBackend:
    """Runs a function in warm local worker processes (see the module docstring)."""

    def __init__(
        self,
        config: LocalFunctionConfig,
        ctx: BackendContext,
        *,
        spec: WorkerSpec | None = None,
        init_backoff_s: float = INIT_BACKOFF_S,
        memory_sample_s: float = MEMORY_SAMPLE_S,
    ) -> None:
        self.config = config
        self.ctx = ctx
        #: The function's scratch space (Lambda's /tmp), the workers' TMPDIR.
        self.tmp_dir = os.path.join(os.path.abspath(ctx.work_dir), "tmp")
        #: Set by `start`: the function's files, interpreter and dependencies.
        self.prepared: Prepared | None = None
        #: How workers are started (set by `start` unless given).
        self.spec: WorkerSpec | None = spec
        self._spec_given = spec is not None
        #: Bumped by every hot reload (`reload_code`); a worker of an older one (its spawn
        #: was under way during the reload) is retired instead of reused.
        self._code_generation = 0
        #: Why the function cannot run (its build failed), once `start` found out.
        self.unavailable: str | None = None
        self.credentials = CredentialSource(
            function=ctx.function,
            region=ctx.region,
            clock=ctx.clock,
            log=ctx.log,
            timeout_s=config.timeout_s,
            role_arn=config.role_arn,
            session_name=config.role_session_name,
            duration_s=config.role_duration_s,
        )
        self.limit = config.max_workers
        self.stats: dict[str, Any] = {
            "invocations": 0,
            "errors": 0,
            "timeouts": 0,
            "throttles": 0,
            "cold_starts": 0,
            "spawns": 0,
            "init_errors": 0,
            "out_of_memory": 0,
            "reaped": 0,
            "recycled": 0,
            "last_init_duration_ms": None,
        }
        self._flog = logging.getLogger("triggerd.function")
        self._lines = LineLogger(self._flog, {"function": ctx.function}, ("request_id", "platform"))
        #: Request ids and trace ids (seeded from os.urandom; ids need not be secret).
        self._rng = random.Random()
        self._function_arn = ctx.function_arn
        self._metrics = ctx.metrics.functions.tally(ctx.function) if ctx.metrics else None
        self._slots = Slots(max(self.limit, 1))
        #: Warm workers waiting for work, least recently used first.
        self._idle: list[Worker] = []
        self._workers: set[Worker] = set()
        #: Workers starting or invoking: the memory sampler watches these.
        self._busy: set[Worker] = set()
        #: The memory sampler's next run, armed while workers are busy.
        self._sampler: asyncio.TimerHandle | None = None
        self._maintain_event = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        #: Replacements being started for workers due for recycling, and workers retiring.
        self._recycling: set[asyncio.Task[None]] = set()
        #: The credentials chain being resolved in the background (see `start`).
        self._credentials: asyncio.Task[None] | None = None
        #: Set by the first worker start: the credentials are wanted now (see `start`).
        self._credentials_wanted = asyncio.Event()
        self._init_backoff_s = init_backoff_s
        self._sample_s = memory_sample_s
        self._memory_limit_kb = config.memory_mb * 1024
        self._init_failure: _InitFailure | None = None
        self._init_failures_in_row = 0
        #: Provisioned starts whose init timed out, in a row, and when (monotonic) the next
        #: one may begin: such a worker is not started again at once (invocations meanwhile
        #: run init again within their timeout).
        self._provision_timeouts = 0
        self._provision_after = 0.0
        self._spawning = 0
        self._stopping = False

    @property
    def workers(self) -> frozenset[Worker]:
        return frozenset(self._workers)

    @property
    def code_dir(self) -> str | None:
        """LAMBDA_TASK_ROOT (None before `start`)."""
        return self.prepared.code_dir if self.prepared is not None else None

    @property
    def opt_dir(self) -> str | None:
        """The function's `/opt`-equivalent: its layers merged (None before `start`)."""
        return self.prepared.opt_dir if self.prepared is not None else None

    async def start(self) -> None:
        """Prepare the function (code, layers, dependencies: installed on first use), clean
        the scratch directory, start the provisioned workers. Operator mistakes (a missing
        interpreter, code or layer) are a ConfigError; a failed install leaves the function
        unavailable with the reason (`unavailable`), logged, and the daemon running."""
        name = self.ctx.function
        try:
            self.prepared = await prepare(self.config, self.ctx, self._progress)
        except (PackageError, BuildError) as e:
            self.unavailable = str(e)
            self.ctx.log.error("backend.build_failed", extra={"function": name, "error": str(e)})
            return
        loop = asyncio.get_running_loop()
        if self.config.role_arn is not None:
            await self._start_credentials()  # a missing aiobotocore is an operator error here
        else:
            # The credentials chain (aiobotocore's import, a profile, the instance metadata
            # service) takes up to a second: resolved in the background once the daemon is
            # ready (its CPU would delay the start), or as soon as a worker starts (the first
            # moment they are needed), which awaits it.
            self._credentials = loop.create_task(self._start_credentials(later=True))
        if self.spec is None:
            self.spec = worker_spec(self.config, self.ctx, self.prepared, self.tmp_dir)
        await asyncio.to_thread(_fresh_dir, self.tmp_dir)
        self._tasks = [loop.create_task(self._maintain(), name=f"maintain:{name}")]
        await self._provision(self.config.provisioned_concurrency)

    async def _start_credentials(self, *, later: bool = False) -> None:
        ready = self.ctx.daemon_ready
        if later and ready is not None and not ready.is_set():
            waits = [asyncio.ensure_future(e.wait()) for e in (ready, self._credentials_wanted)]
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()
        try:
            await self.credentials.start()
        except MissingExtraError as e:
            raise ConfigError([f"functions.{self.ctx.function}.role_arn: {e}"]) from None
        except RetryableError:
            pass  # logged; invocations retry

    async def _credentials_started(self) -> None:
        """Wait for the credentials chain `start` began resolving (every cold start until it
        is done: several may wait for it together)."""
        task = self._credentials
        if task is not None:
            self._credentials_wanted.set()
            await asyncio.shield(task)  # one waiter cancelled does not cancel the resolution
            self._credentials = None

    def _progress(self, line: str) -> None:
        self.ctx.log.info("backend.build", extra={"function": self.ctx.function, "step": line})

    def _unavailable(self, rid: str) -> InvokeResult:
        message = f"The function {self.ctx.function} is not available: {self.unavailable}"
        body = orjson.dumps({"errorType": "ResourceNotReadyException", "errorMessage": message})
        return InvokeResult(Outcome.INVOKE_ERROR, body, rid, retry_after_s=60.0)

    async def stop(self) -> None:
        self._stopping = True
        if self._sampler is not None:
            self._sampler.cancel()
            self._sampler = None
        tasks = [
            *self._tasks,
            *self._recycling,
            *([self._credentials] if self._credentials else []),
        ]
        self._credentials = None
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        workers = list(self._workers)
        self._idle.clear()
        await asyncio.gather(*(w.terminate(STOP_GRACE_S) for w in workers))
        self._workers.difference_update(workers)

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
        rid = request_id or random_uuid(self._rng)
        if self._stopping:
            return InvokeResult(Outcome.INVOKE_ERROR, b"", rid, retry_after_s=1.0)
        if self.spec is None:
            return self._unavailable(rid)
        if invocation_type == "Event":
            client_context = None  # Lambda passes it to synchronous invocations only
        slots = self._slots
        if self.limit == 0 or not (
            slots.try_acquire() or await slots.acquire(self.config.timeout_s)
        ):
            self.stats["throttles"] += 1
            return self._throttled(rid)
        try:
            result = await self._invoke_in_slot(
                payload, rid, (client_context, trace_id), want_log_tail
            )
        finally:
            self._slots.release()
        self.stats["invocations"] += 1
        if result.failed:
            self.stats["errors"] += 1
        if result.outcome is Outcome.TIMEOUT:
            self.stats["timeouts"] += 1
        return result

    # ---- slots and workers -----------------------------------------------------------------

    def _throttled(self, rid: str) -> InvokeResult:
        reason = (
            "ReservedFunctionConcurrentInvocationLimitExceeded"
            if self.config.reserved_concurrency is not None
            else "ConcurrentInvocationLimitExceeded"
        )
        body = orjson.dumps({"Reason": reason, "Type": "User", "message": "Rate Exceeded."})
        return InvokeResult(Outcome.THROTTLED, body, rid, retry_after_s=1.0)

    async def _take_idle(self) -> Worker | None:
        """A warm worker, unless its credentials are older than the current ones (it is
        retired: a new one starts with the fresh credentials)."""
        generation = self.credentials.generation
        while self._idle:
            worker = self._idle.pop()
            if (
                worker.alive
                and worker.credentials_generation == generation
                and worker.code_generation == self._code_generation
            ):
                return worker
            await self._discard(worker)
        return None

    async def _discard(self, worker: Worker) -> None:
        self._busy.discard(worker)
        await worker.kill()
        if worker in self._workers:
            self._workers.discard(worker)
            if len(self._workers) < self.config.provisioned_concurrency:
                self._maintain_event.set()  # start a replacement

    def _cached_init_failure(self, rid: str) -> InvokeResult | None:
        failure = self._init_failure
        if failure is None or self.ctx.clock.monotonic() >= failure.retry_at:
            return None
        if failure.entrypoint is not None:
            message = f"RequestId: {rid} Error: {failure.entrypoint}"
            body = orjson.dumps({"errorType": "Runtime.InvalidEntrypoint", "errorMessage": message})
        elif failure.exit_reason is not None:
            body = exit_error(rid, failure.exit_reason)
        else:
            body = failure.body
        return InvokeResult(Outcome.FUNCTION_ERROR, body, rid, function_error="Unhandled")

    def _init_delay(self, failures: int) -> float:
        """init_backoff_s doubled `failures` times, up to INIT_BACKOFF_MAX_S."""
        try:
            return min(math.ldexp(self._init_backoff_s, failures), INIT_BACKOFF_MAX_S)
        except OverflowError:  # past the largest float (1,024 doublings): past the cap
            return INIT_BACKOFF_MAX_S

    def _record_init_failure(self, body: bytes, failure: RuntimeReply) -> None:
        self.stats["init_errors"] += 1
        delay = self._init_delay(self._init_failures_in_row)
        self._init_failures_in_row += 1
        exited = failure.kind is ReplyKind.EXITED
        self._init_failure = _InitFailure(
            body, self.ctx.clock.monotonic() + delay, failure.error_type if exited else None
        )
        self.ctx.log.warning(
            "backend.init_failed",
            extra={
                "function": self.ctx.function,
                "error_type": "Runtime.ExitError" if exited else failure.error_type,
                "retry_in_s": delay,
            },
        )

    def _entrypoint_failed(self, exc: OSError, program: str) -> None:
        """The runtime could not be started for a reason of the function's: invocations get
        `Runtime.InvalidEntrypoint`, as an init error (backing off before the next try)."""
        self.stats["init_errors"] += 1
        delay = self._init_delay(self._init_failures_in_row)
        self._init_failures_in_row += 1
        reason = os.strerror(exc.errno or 0)
        reason = reason[:1].lower() + reason[1:]  # Go's wording, as Lambda reports it
        path = exc.filename if isinstance(exc.filename, str) else program
        entrypoint = f"fork/exec {path}: {reason}"
        self._init_failure = _InitFailure(
            b"", self.ctx.clock.monotonic() + delay, entrypoint=entrypoint
        )
        self.ctx.log.warning(
            "backend.init_failed",
            extra={
                "function": self.ctx.function,
                "error_type": "Runtime.InvalidEntrypoint",
                "error": entrypoint,
                "retry_in_s": delay,
            },
        )

    async def _cold_start(
        self, provisioned: bool = False, init_timeout_s: float | None = None
    ) -> _Start | None:
        """Start a worker and wait until it polls for work, reports an init error or dies
        (`init_timeout_s`, INIT_TIMEOUT_S unless given)."""
        await self._credentials_started()
        self.stats["spawns"] += 1
        clock = self.ctx.clock
        started = clock.monotonic()
        self._spawning += 1
        assert self.spec is not None
        code_generation = self._code_generation
        try:
            worker = await Worker.spawn(
                self.spec,
                function=self.ctx.function,
                log=self._flog,
                provisioned=provisioned,
                extra_env=self.credentials.env(),
            )
            worker.credentials_generation = self.credentials.generation
            worker.code_generation = code_generation
        except OSError as e:
            if e.errno in _ENTRYPOINT_ERRNOS:
                self._entrypoint_failed(e, self.spec.argv[0])
            else:
                self.ctx.log.error(
                    "backend.spawn_failed", extra={"function": self.ctx.function, "error": str(e)}
                )
            return None
        finally:
            self._spawning -= 1
        self._workers.add(worker)
        worker.on_gone = self._worker_gone
        self._watch(worker)
        try:
            async with asyncio.timeout(init_timeout_s or INIT_TIMEOUT_S):
                failure = await asyncio.shield(worker.endpoint.ready)
        except TimeoutError:
            elapsed_ms = (clock.monotonic() - started) * 1000
            return _Start(worker, elapsed_ms, timed_out=True)
        except asyncio.CancelledError:
            await self._discard(worker)
            raise
        init_ms = (clock.monotonic() - started) * 1000
        if failure is None:
            self._init_failure = None
            self._init_failures_in_row = 0
            self._provision_timeouts = 0
            self.stats["cold_starts"] += 1
            self.stats["last_init_duration_ms"] = round(init_ms, 2)
            if self._metrics is not None:
                self._metrics.cold_starts += 1
                self._metrics.init_duration.observe(init_ms / 1000)
        elif failure.kind is ReplyKind.INIT_ERROR:
            await worker.gone(1.0)  # it exits by itself after reporting
        return _Start(worker, init_ms, failure)

    # ---- provisioned workers, idle reaping, memory ----------------------------------------

    async def _provision(self, count: int) -> None:
        """Start up to `count` workers ahead of invocations (each in a free slot)."""
        if count <= 0 or self._stopping or self._cached_init_failure("") is not None:
            return
        if self.ctx.clock.monotonic() < self._provision_after:
            return
        async with asyncio.TaskGroup() as tg:
            for _ in range(count):
                if not self._slots.try_acquire():
                    break
                tg.create_task(self._provision_one())

    async def _provision_one(self) -> None:
        try:
            start = await self._cold_start(provisioned=True)
            if start is None:
                return
            worker = start.worker
            self._busy.discard(worker)
            if start.ok and not self._stopping:
                worker.last_used = self.ctx.clock.monotonic()
                self._idle.insert(0, worker)
                return
            await self._discard(worker)
            if start.failure is not None and not self._stopping:
                body = start.failure.body or exit_error("", start.failure.error_type or "")
                self._record_init_failure(body, start.failure)
            elif start.timed_out and not self._stopping:
                delay = self._init_delay(self._provision_timeouts)
                self._provision_timeouts += 1
                self._provision_after = self.ctx.clock.monotonic() + delay
                self.ctx.log.warning(
                    "backend.init_timed_out",
                    extra={
                        "function": self.ctx.function,
                        "init_timeout_s": INIT_TIMEOUT_S,
                        "retry_in_s": delay,
                    },
                )
        finally:
            self._slots.release()

    def _worker_gone(self, worker: Worker) -> None:
        if worker in self._idle and not self._stopping:
            self._maintain_event.set()  # an idle worker died: drop it (and replace it)

    async def reap_idle(self) -> int:
        """Stop workers idle for `idle_timeout_s`, keeping `provisioned_concurrency` workers."""
        deadline = self.ctx.clock.monotonic() - self.config.idle_timeout_s
        stale = [w for w in self._idle if w.last_used <= deadline]
        spare = len(self._workers) - self.config.provisioned_concurrency
        reaped = 0
        for worker in stale[: max(spare, 0)]:
            self._idle.remove(worker)
            await self._discard(worker)
            reaped += 1
        if reaped:
            self.stats["reaped"] += reaped
            self.ctx.log.info(
                "backend.idle_workers_stopped",
                extra={"function": self.ctx.function, "count": reaped},
            )
        return reaped

    async def _maintain(self) -> None:
        """Reap idle workers and keep the provisioned ones topped up."""
        interval = min(max(self.config.idle_timeout_s / 4, 0.05), MAINTAIN_MAX_S)
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._maintain_event.wait()
            self._maintain_event.clear()
            try:
                await self._maintain_once()
            except Exception as e:  # keep maintaining; the next round may succeed
                self.ctx.log.error(
                    "backend.maintain_failed",
                    extra={"function": self.ctx.function, "error": repr(e)},
                )

    async def _maintain_once(self) -> None:
        for worker in [w for w in self._idle if not w.alive]:
            self._idle.remove(worker)
            await self._discard(worker)
        await self.reap_idle()
        missing = self.config.provisioned_concurrency - len(self._workers) - self._spawning
        await self._provision(missing)

    def _watch(self, worker: Worker) -> None:
        self._busy.add(worker)
        if self._sampler is None and not self._stopping:
            loop = asyncio.get_running_loop()
            self._sampler = loop.call_later(self._sample_s, self._sample_memory)

    def _sample_memory(self) -> None:
        """Every few ms while workers are busy: sample their resident memory (process and
        children) and kill the ones over `memory_mb`, as Lambda's OOM killer would. A timer
        callback rather than a task: it runs hundreds of times a second under load."""
        self._sampler = None
        if not self._busy or self._stopping:
            return  # `_watch` arms it again
        try:
            for worker in list(self._busy):
                self._check_memory(worker)
        finally:
            loop = asyncio.get_running_loop()
            self._sampler = loop.call_later(self._sample_s, self._sample_memory)

    def _check_memory(self, worker: Worker) -> None:
        probe = worker.memory
        if probe is None or not worker.alive or worker.out_of_memory:
            return
        used_kb = probe.tree_rss_kb()
        worker.note_memory(used_kb)
        if used_kb > self._memory_limit_kb:
            self._out_of_memory(worker, used_kb)

    def _out_of_memory(self, worker: Worker, used_kb: int) -> None:
        """Kill a worker found over `memory_mb`, as Lambda's OOM killer would."""
        worker.out_of_memory = True
        worker.kill_now()
        self.stats["out_of_memory"] += 1
        self.ctx.log.warning(
            "backend.out_of_memory",
            extra={
                "function": self.ctx.function,
                "request_id": worker.request_id,
                "used_mb": math.ceil(used_kb / 1024),
                "memory_mb": self.config.memory_mb,
            },
        )

    # ---- hot reload (`triggerd run --watch`) ----------------------------------------------

    def watched_paths(self) -> list[str]:
        """What the function is built from: its code (a directory or a .zip), its
        requirements file when it is outside the code, its layers."""
        config = self.config
        paths = [os.path.abspath(config.code), *(os.path.abspath(p) for p in config.layers)]
        if config.requirements:
            paths.append(os.path.abspath(config.requirements))
        return paths

    async def reload_code(self, changed: Collection[str] = ()) -> int:
        """The function's files changed: prepare them again (a .zip extracted, layers merged,
        changed requirements installed), then retire the idle workers at once and the busy
        ones when their invocation ends; the next invocation starts a worker on the new
        code. Returns how many idle workers were retired. A failed build keeps the old ones
        (logged). `changed`: the files that changed; their cached bytecode is dropped."""
        if self._stopping or self.prepared is None:
            return 0
        await asyncio.to_thread(drop_bytecode, changed)
        if self._needs_build(changed):
            try:
                prepared = await prepare(self.config, self.ctx, self._progress)
            except (PackageError, BuildError, ConfigError) as e:
                self.ctx.log.error(
                    "backend.reload_failed",
                    extra={"function": self.ctx.function, "error": str(e)},
                )
                return 0
        else:
            prepared = self.prepared
        self.prepared = prepared
        self.unavailable = None
        if not self._spec_given:
            self.spec = worker_spec(self.config, self.ctx, prepared, self.tmp_dir)
        self._init_failure = None  # the new code may start where the old one failed
        self._init_failures_in_row = 0
        self._provision_timeouts = 0
        self._provision_after = 0.0
        self._code_generation += 1
        idle, self._idle = self._idle, []
        for worker in self._workers.difference(idle):
            worker.replaced = True  # busy: retired when its invocation ends
        for worker in idle:
            self._background(self._retire(worker))
        self._maintain_event.set()  # provisioned workers started again on the new code
        return len(idle)

    def _needs_build(self, changed: Collection[str]) -> bool:
        """Whether `prepare` must run again: a change to a .zip, a layer or the requirements
        (or none named); files of a code directory are read by the next worker as they are."""
        if not changed or self.prepared is None:
            return True
        code = os.path.abspath(self.config.code)
        if os.path.abspath(self.prepared.code_dir) != code:
            return True  # extracted from a .zip
        requirements = os.path.join(code, "requirements.txt")
        if self.config.requirements:
            requirements = os.path.abspath(self.config.requirements)
        inside = code.rstrip(os.sep) + os.sep
        return any(
            not os.path.abspath(p).startswith(inside) or os.path.abspath(p) == requirements
            for p in changed
        )

    # ---- recycling -------------------------------------------------------------------------

    def _check_recycle(self, worker: Worker) -> None:
        """After an invocation: is the worker due for replacement (`worker_max_invocations`,
        `worker_max_rss_growth_mb`)? Then a replacement starts beside it, off the request
        path; the worker serves invocations until the replacement is ready."""
        if worker.retiring or self._stopping:
            return
        config = self.config
        limit = config.worker_max_invocations
        due = limit is not None and worker.invocations >= limit
        growth_kb = config.rss_growth_limit_kb
        sample = worker.invocations == 1 or worker.invocations % RSS_CHECK_EVERY == 0
        if not due and sample and growth_kb is not None and worker.memory is not None:
            rss = worker.memory.rss_kb()
            if not worker.baseline_kb:
                worker.baseline_kb = rss
            elif rss - worker.baseline_kb > growth_kb:
                due = True
        if due:
            worker.retiring = True
            self._background(self._replace(worker))

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        """Run recycling work in a task the backend keeps (and cancels at stop)."""
        task = asyncio.get_running_loop().create_task(work)
        self._recycling.add(task)
        task.add_done_callback(self._recycling.discard)

    async def _replace(self, old: Worker) -> None:
        try:
            start = await self._cold_start(provisioned=old.provisioned)
        except Exception as e:  # task boundary: the old worker goes on serving
            self.ctx.log.error(
                "backend.recycle_failed", extra={"function": self.ctx.function, "error": repr(e)}
            )
            return
        if start is None:
            return  # could not spawn (logged): the old worker goes on serving
        new = start.worker
        self._busy.discard(new)
        if not start.ok or self._stopping:
            await self._discard(new)
            if not self._stopping:
                error = start.failure.error_type if start.failure is not None else "init timeout"
                self.ctx.log.warning(
                    "backend.recycle_failed",
                    extra={"function": self.ctx.function, "error": error},
                )
            return
        self.stats["recycled"] += 1
        grown_kb = old.memory.rss_kb() - old.baseline_kb if old.memory and old.baseline_kb else 0
        self.ctx.log.info(
            "backend.worker_recycled",
            extra={
                "function": self.ctx.function,
                "invocations": old.invocations,
                "rss_growth_mb": round(max(grown_kb, 0) / 1024, 1),
            },
        )
        new.last_used = self.ctx.clock.monotonic()
        self._idle.append(new)
        if old in self._idle:
            self._idle.remove(old)
            await self._retire(old)
        else:
            old.replaced = True  # busy: retired when its invocation ends

    async def _retire(self, worker: Worker) -> None:
        """Stop a replaced worker as Lambda ends an environment (SIGTERM, then SIGKILL)."""
        self._busy.discard(worker)
        await worker.terminate(STOP_GRACE_S)
        self._workers.discard(worker)

    # ---- one invocation --------------------------------------------------------------------

    async def _invoke_in_slot(
        self, payload: bytes, rid: str, headers: _Headers, want_log_tail: bool
    ) -> InvokeResult:
        try:
            if self.credentials.due():
                await self.credentials.refresh()
        except RetryableError as e:
            body = orjson.dumps({"errorType": "AccessDeniedException", "errorMessage": str(e)})
            return InvokeResult(Outcome.INVOKE_ERROR, body, rid, retry_after_s=5.0)
        worker = await self._take_idle()
        start: _Start | None = None
        if worker is None:
            started = await self._start_for(rid)
            if isinstance(started, InvokeResult):
                return started
            start, worker = started, started.worker
        if self._stopping:
            await self._discard(worker)
            return InvokeResult(Outcome.INVOKE_ERROR, b"", rid, retry_after_s=1.0)
        capture = LogCapture() if want_log_tail else None
        if capture is not None:
            # Output of earlier invocations that nobody waited for (function logs off) is
            # read first, so none of it lands in this invocation's tail.
            try:
                await worker.output_done()
            except asyncio.CancelledError:
                await self._discard(worker)
                raise
        worker.begin(rid, capture)
        worker.begin_memory(cold=start is not None)
        self._watch(worker)
        try:
            result = await self._run(worker, payload, rid, headers, start)
        except asyncio.CancelledError:
            await self._discard(worker)  # the environment is mid-invocation: throw it away
            raise
        finally:
            worker.end()
        if capture is not None:
            result.log_tail = capture.tail()
        return result

    async def _start_for(self, rid: str) -> _Start | InvokeResult:
        """A cold start for invocation `rid`, or its result when there is no worker to run
        it in (the init error of a recent failure, or a worker that could not be started)."""
        cached = self._cached_init_failure(rid)
        if cached is not None:
            return cached
        start = await self._cold_start()
        if start is not None and start.timed_out:
            start = await self._init_again(start)
        if start is not None:
            return start
        # Not started: the function's fault (an init error now) or the machine's.
        cached = self._cached_init_failure(rid)
        if cached is not None:
            return cached
        return InvokeResult(Outcome.INVOKE_ERROR, b"", rid, retry_after_s=1.0)

    async def _init_again(self, first: _Start) -> _Start | None:
        """Init took over INIT_TIMEOUT_S: as Lambda does, the environment is reset and init
        runs again as part of the invocation, within the function's timeout (the handler
        gets what is left of it)."""
        await self._discard(first.worker)
        self.ctx.log.warning(
            "backend.init_timed_out",
            extra={
                "function": self.ctx.function,
                "init_timeout_s": INIT_TIMEOUT_S,
                "retry_within_s": self.config.timeout_s,
            },
        )
        start = await self._cold_start(init_timeout_s=self.config.timeout_s)
        if start is not None:
            start.in_invoke = True
        return start

    async def _run(
        self,
        worker: Worker,
        payload: bytes,
        rid: str,
        headers: _Headers,
        start: _Start | None,
    ) -> InvokeResult:
        # The platform lines are only formatted when someone reads them.
        logged = worker.capture is not None or self._lines.enabled()
        if logged:
            self._start_line(worker, rid, f"START RequestId: {rid} Version: {self.config.version}")
        clock = self.ctx.clock
        started = clock.monotonic()
        timeout_s = self.config.timeout_s
        if start is not None and start.in_invoke:
            started -= start.init_ms / 1000  # the init run again is part of the invocation
            timeout_s = max(0.0, timeout_s - start.init_ms / 1000)
        if start is None or start.ok:
            reply = await self._exchange(worker, payload, rid, headers, timeout_s)
        else:
            reply = start.failure  # None when init timed out
        ended = clock.monotonic()
        duration_ms = (ended - started) * 1000
        self._busy.discard(worker)
        used_mb = worker.measure_memory(thorough=ended - started >= self._sample_s)
        if (
            worker.invocation_kb > self._memory_limit_kb
            and reply is not None
            and reply.kind in (ReplyKind.RESPONSE, ReplyKind.ERROR)
        ):
            # A peak over the memory size that fell between samples (the kernel's high-water
            # mark, reset as the invocation began, has it): Lambda would have killed the
            # runtime before it answered.
            if not worker.out_of_memory:  # not killed by the sampler since it answered
                self._out_of_memory(worker, worker.invocation_kb)
            reply = RuntimeReply(ReplyKind.EXITED, error_type="signal: killed")
        reusable = reply is not None and reply.kind in (ReplyKind.RESPONSE, ReplyKind.ERROR)
        current = worker.code_generation == self._code_generation
        if reusable and worker.alive and not worker.replaced and current:
            worker.last_used = ended
            self._idle.append(worker)
            self._check_recycle(worker)
        elif reusable and worker.alive:
            self._background(self._retire(worker))  # its replacement is already idle
        else:
            await self._discard(worker)
        result = self._result(rid, reply, duration_ms, worker.out_of_memory)
        if start is not None and start.failure is not None and not self._stopping:
            self._record_init_failure(result.payload, start.failure)
        if logged:
            self._platform_end(worker, rid, reply, result, (duration_ms, used_mb), start)
        if self._metrics is not None and result.outcome is not Outcome.INVOKE_ERROR:
            tally = self._metrics
            tally.duration.observe(duration_ms / 1000)
            tally.gb_seconds += billed_gb_seconds(duration_ms, self.config.memory_mb)
            tally.max_memory = worker.peak_kb * 1024
        return result

    async def _exchange(
        self, worker: Worker, payload: bytes, rid: str, headers: _Headers, timeout_s: float
    ) -> RuntimeReply | None:
        """Hand the invocation to the worker; its reply, or None when it is still running
        after `timeout_s` (the worker is killed)."""
        now = self.ctx.clock.time()
        loop = worker.endpoint.loop
        invocation = PendingInvocation(
            request_id=rid,
            payload=payload,
            deadline_ms=int((now + timeout_s) * 1000),
            function_arn=self._function_arn,
            trace_id=headers[1] or new_trace_id(now, self._rng),
            client_context=client_context_header(headers[0]),
            result=loop.create_future(),
        )
        # A timer resolving the invocation is much cheaper than an asyncio.timeout block.
        timer = loop.call_later(timeout_s, invocation.resolve, _TIMED_OUT)
        worker.endpoint.submit(invocation)
        try:
            reply = await invocation.result
        finally:
            timer.cancel()
        if reply is _TIMED_OUT:
            worker.endpoint.finish(invocation)
            worker.max_memory_mb()
            worker.shutdown_reason = "timeout"
            await worker.kill()
            return None
        if (
            (reply.kind is ReplyKind.RESPONSE or reply.kind is ReplyKind.ERROR)
            and (worker.capture is not None or self._lines.enabled())
            and not worker.output_read()
        ):
            # Tag the output written before the result with this request id; with function
            # logs off and no log tail asked for, no line is kept, and the check is skipped.
            await worker.output_done()
        return reply

    def _result(
        self, rid: str, reply: RuntimeReply | None, duration_ms: float, out_of_memory: bool
    ) -> InvokeResult:
        version = self.config.version
        if reply is None:
            message = (
                f"{iso_ms(self.ctx.clock.time())} {rid} "
                f"Task timed out after {self.config.timeout_s:.2f} seconds"
            )
            body = orjson.dumps({"errorMessage": message})
            return InvokeResult(Outcome.TIMEOUT, body, rid, "Unhandled", version, duration_ms)
        if reply.kind is ReplyKind.RESPONSE:
            return InvokeResult(Outcome.OK, reply.body, rid, None, version, duration_ms)
        if reply.kind is ReplyKind.CLOSED or self._stopping:
            return InvokeResult(Outcome.INVOKE_ERROR, b"", rid, retry_after_s=1.0)
        body = reply.body
        if reply.kind is ReplyKind.EXITED:
            if out_of_memory:
                body = exit_error(rid, "signal: killed", "Runtime.OutOfMemory")
            else:
                body = exit_error(rid, reply.error_type or "signal: killed")
        return InvokeResult(Outcome.FUNCTION_ERROR, body, rid, "Unhandled", version, duration_ms)

    def _platform_end(
        self,
        worker: Worker,
        rid: str,
        reply: RuntimeReply | None,
        result: InvokeResult,
        figures: tuple[float, int],
        start: _Start | None,
    ) -> None:
        duration_ms, used_mb = figures
        now = time.time()
        # The invocation's lines, logged with one call (START too, unless output logged it
        # already): they share their fields, and END and REPORT their time.
        held = worker.take_held_start()
        lines = [held] if held is not None else []
        if reply is not None and reply.kind is ReplyKind.EXITED and result.failed:
            error = orjson.loads(result.payload)
            lines.append((now, f"{error['errorMessage']}\n{error['errorType']}"))
        lines.append((now, f"END RequestId: {rid}"))
        init_ms = start.init_ms if start is not None and not start.in_invoke else None
        memory_mb = self.config.memory_mb
        lines.append((now, report_line(rid, duration_ms, memory_mb, used_mb, init_ms)))
        if result.outcome is Outcome.TIMEOUT:
            lines.append((now, orjson.loads(result.payload)["errorMessage"]))
        if self._lines.enabled():
            self._lines.info_lines(lines, rid, True)
        capture = worker.capture
        if capture is not None:
            for _, text in lines[held is not None :]:
                capture.add(text)

    def _start_line(self, worker: Worker, rid: str, text: str) -> None:
        """START: held on the worker, to be logged with END and REPORT (or before the
        invocation's first output line, or on its own once it waited START_HOLD_S); in the
        log tail at once."""
        if self._lines.enabled():
            if worker.log_held is None:
                worker.log_held = self._log_held
            worker.hold_start((time.time(), text))
        if worker.capture is not None:
            worker.capture.add(text)

    def _log_held(self, worker: Worker, at_once: bool) -> None:
        held = worker.held_start
        if held is not None and worker.request_id is not None:
            self._lines.info_lines([held], worker.request_id, True, at_once=at_once)


def drop_bytecode(sources: Collection[str]) -> None:
    """Remove the `__pycache__` entries of changed `.py` files (any interpreter's): Python
    trusts a `.pyc` whose source has the same size and mtime in whole seconds, which a
    same-size edit within the second of the last import has, and would run the old code."""
    for source in sources:
        path = Path(source)
        if path.suffix != ".py":
            continue
        for cached in (path.parent / "__pycache__").glob(f"{glob.escape(path.stem)}.*.pyc"):
            with contextlib.suppress(OSError):
                cached.unlink()


def _fresh_dir(path: str) -> None:
    """An empty directory at `path` (what a previous run left there is removed)."""
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path, exist_ok=True)


async def build(config: Any, ctx: BackendContext, progress: ProgressFn) -> None:
    """The plugin's `build`: prepare the function's files, interpreter and dependencies."""
    assert isinstance(config, LocalFunctionConfig)
    try:
        await prepare(config, ctx, progress)
    except (PackageError, BuildError) as e:
        raise PermanentError(str(e)) from None


# The plugin object lives in `local_plugin`, which imports this module only when a function is
# created or built; it is re-exported here for the code that registers it by hand.
from triggerd.functions.backends.local_plugin import plugin  # noqa: E402
