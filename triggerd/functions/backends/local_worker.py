"""One execution environment of the local backend: a runtime process and its Runtime API.

A worker is started from a `WorkerSpec` (any command that speaks the Runtime API: the bundled
Python client, awslambdaric, or a custom runtime's `bootstrap`). Its stdout and stderr are
pipes the worker creates itself and reads line by line; each line goes to the
`triggerd.function` logger tagged with the invocation in flight and, when asked, into that
invocation's log capture.

Output ordering needs no help from the runtime: a runtime writes an invocation's output before
it posts the result, so when the result arrives the output is either already read or still in
the pipes, which `FIONREAD` on the read ends tells (a microsecond per pipe, no extra writes).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import math
import os
import select
import signal
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import cast

from triggerd.functions.backends.local_memory import MemoryProbe
from triggerd.functions.extension_processes import ExternalExtensions, discover
from triggerd.functions.extensions import ExtensionsAPI
from triggerd.functions.runtime_api import ReplyKind, RuntimeEndpoint, RuntimeReply
from triggerd.functions.telemetry_api import TelemetryAPI
from triggerd.telemetry.logs import LineLogger

#: Longest stdout/stderr line kept whole; longer ones are split.
MAX_LINE_BYTES = 256 * 1024
#: How long to wait for output still in the pipes when a result arrives.
OUTPUT_WAIT_S = 0.5
#: How long to wait for the rest of a dead process's output.
DRAIN_WAIT_S = 0.5
LOG_TAIL_BYTES = 4096
#: How long an invocation's START line may wait to be logged with its END and REPORT (one
#: rendering, one write for a short invocation); a longer invocation has it logged then.
START_HOLD_S = 0.1

#: Lambda's shutdown phase with external extensions: 2 s in all, the runtime's part first.
RUNTIME_SHUTDOWN_S = 0.5
EXTENSIONS_SHUTDOWN_S = 1.5

_STREAMS = {1: "stdout", 2: "stderr"}


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """How to start a runtime process for one execution environment."""

    argv: Sequence[str]
    cwd: str
    #: The environment, minus the per-worker `AWS_LAMBDA_RUNTIME_API` and log stream name.
    env: Mapping[str, str]
    version: str = "$LATEST"
    #: The `<opt>/extensions` directory: its executables run as external extensions.
    extensions_dir: str | None = None


def environment_apis(env: Mapping[str, str], version: str) -> ExtensionsAPI:
    """The Extensions and Telemetry APIs of one environment, told about its function."""
    name = env.get("AWS_LAMBDA_FUNCTION_NAME", "")
    telemetry = TelemetryAPI(
        function_name=name,
        version=version,
        memory_mb=int(env.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")),
        initialization_type=env.get("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand"),
        runtime=env.get("AWS_EXECUTION_ENV", "").removeprefix("AWS_Lambda_"),
    )
    return ExtensionsAPI(
        function_name=name,
        function_version=version,
        handler=env.get("_HANDLER", ""),
        telemetry=telemetry,
    )


class LogCapture:
    """The last few KB of one invocation's log lines (for `X-Amz-Log-Result`)."""

    def __init__(self, limit: int = LOG_TAIL_BYTES) -> None:
        self._limit = limit
        self._lines: collections.deque[bytes] = collections.deque()
        self._size = 0

    def add(self, line: str) -> None:
        data = line.encode("utf-8", "replace") + b"\n"
        self._lines.append(data)
        self._size += len(data)
        while self._size - len(self._lines[0]) >= self._limit:
            self._size -= len(self._lines.popleft())

    def tail(self) -> str:
        data = b"".join(self._lines)[-self._limit :]
        return data.decode("utf-8", "ignore")


def exit_description(returncode: int) -> str:
    """Go-style process state, as Lambda reports it: `exit status 3`, `signal: killed`."""
    if returncode >= 0:
        return f"exit status {returncode}"
    try:
        name = signal.strsignal(-returncode) or f"signal {-returncode}"
    except ValueError:
        name = f"signal {-returncode}"
    return "signal: " + name.lower()


class _PipeReader(asyncio.Protocol):
    """Feeds one of the runtime's output pipes into its worker."""

    def __init__(self, worker: Worker, fd: int) -> None:
        self._worker = worker
        self._fd = fd

    def data_received(self, data: bytes) -> None:
        self._worker.pipe_data_received(self._fd, data)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._worker.pipe_connection_lost(self._fd, exc)


class Worker(asyncio.SubprocessProtocol):
    """A runtime process polling its own Runtime API endpoint.

    The worker is the subprocess protocol of its process, and reads its output pipes through
    `_PipeReader`s (no reader tasks); the process's exit resolves whatever the environment was
    doing with an `EXITED` reply once its remaining output has been read.
    """

    def __init__(
        self,
        spec: WorkerSpec,
        endpoint: RuntimeEndpoint,
        *,
        function: str,
        log: logging.Logger,
        log_stream: str,
        provisioned: bool = False,
    ) -> None:
        loop = asyncio.get_running_loop()
        self.spec = spec
        self.endpoint = endpoint
        self.function = function
        self.log_stream = log_stream
        #: Started as provisioned concurrency (kept warm, never reaped for idleness).
        self.provisioned = provisioned
        self._log = log
        self._lines = LineLogger(log, {"function": function}, ("request_id", "stream"))
        self._transport: asyncio.SubprocessTransport | None = None
        self._pipes: dict[int, asyncio.ReadTransport] = {}
        self._pipe_fds: dict[int, int] = {}
        self.pid = 0
        #: The invocation whose output is being read now (None between invocations).
        self.request_id: str | None = None
        self.capture: LogCapture | None = None
        #: The START line of the invocation in flight (its time and text) while it waits to
        #: be logged with the invocation's END and REPORT (one rendering, one write); any
        #: output of the invocation logs it first, through `log_held` (set by the backend).
        self.held_start: tuple[float, str] | None = None
        #: Its second argument: whether the line is to be written at once (the START of an
        #: invocation still running after START_HOLD_S), not with the log's next write.
        self.log_held: Callable[[Worker, bool], None] | None = None
        #: Logs a held START that waited START_HOLD_S (the invocation is still running). One
        #: timer per worker, left armed when the START goes out with its END (cancelling and
        #: re-arming one per invocation cost more than the rare wake-up with nothing held).
        self._held_timer: asyncio.TimerHandle | None = None
        #: Loop time at which the START held now is due.
        self._held_due_at = 0.0
        self._loop = loop
        self.invocations = 0
        #: Peak resident memory seen (KB): samples, VmHWM, and the tree's resident set.
        self.peak_kb = 0
        #: The invocation under way's memory as read at its end (KB): the kernel's high-water
        #: mark when it was reset as the invocation began (or the worker started for it), else
        #: the resident set then. VmHWM is the process's peak since it started: unreset, it may
        #: hold a peak of init or of an earlier invocation too short for it to be read.
        self.invocation_kb = 0
        self._mark_fresh = False
        #: Monotonic time the worker last finished an invocation (for idle reaping).
        self.last_used = 0.0
        #: The generation of the credentials it was started with (see local_credentials).
        self.credentials_generation = 0
        #: Set when the backend killed the worker for going over its memory size.
        self.out_of_memory = False
        self.memory: MemoryProbe | None = None
        #: Called once the process is gone (the backend drops dead idle workers with it).
        self.on_gone: Callable[[Worker], None] | None = None
        self._partial = {1: b"", 2: b""}
        self._open_pipes = {1, 2}
        #: The read ends of the open output pipes, for `_unread_output`.
        self._poll = select.poll()
        #: Set whenever output arrives (`output_done` waits on it when the pipes hold some).
        self._data_event = asyncio.Event()
        self._exited: asyncio.Future[None] = loop.create_future()
        #: Resolved once the process exited and its output was read (or the drain timed out).
        self._gone: asyncio.Future[None] = loop.create_future()
        self._drain_timer: asyncio.TimerHandle | None = None
        self._closed = False
        #: The external extensions of this environment, if it has any.
        self.extensions: ExternalExtensions | None = None
        #: What extensions are told when the environment stops (`timeout`, `failure`).
        self.shutdown_reason = "spindown"
        #: Resident memory after the first invocation (KB; 0 before): growth counts from here.
        self.baseline_kb = 0
        #: A replacement is being started for it (see `LocalBackend` recycling).
        self.retiring = False
        #: Its replacement is ready: stop it when its invocation ends instead of reusing it.
        self.replaced = False
        #: The backend's code generation when it was spawned (hot reload): one spawned
        #: before the latest reload is never reused.
        self.code_generation = 0

    @classmethod
    async def spawn(
        cls,
        spec: WorkerSpec,
        *,
        function: str,
        log: logging.Logger,
        provisioned: bool = False,
        extra_env: Mapping[str, str] | None = None,
    ) -> Worker:
        """Start the runtime process (raises OSError when it cannot be started); `extra_env`
        is added to the spec's environment (credentials, kept out of the spec)."""
        loop = asyncio.get_running_loop()
        env = dict(spec.env)
        if extra_env:
            env.update(extra_env)
        if provisioned:
            env["AWS_LAMBDA_INITIALIZATION_TYPE"] = "provisioned-concurrency"
        endpoint = RuntimeEndpoint(extensions=environment_apis(env, spec.version))
        await endpoint.start()
        stream = "{}/[{}]{}".format(
            time.strftime("%Y/%m/%d", time.gmtime()), spec.version, uuid.uuid4().hex
        )
        env["AWS_LAMBDA_RUNTIME_API"] = endpoint.address
        env["AWS_LAMBDA_LOG_STREAM_NAME"] = stream
        worker = cls(
            spec, endpoint, function=function, log=log, log_stream=stream, provisioned=provisioned
        )
        paths = discover(spec.extensions_dir) if spec.extensions_dir else []
        if paths:
            extensions = ExternalExtensions(
                paths, endpoint.extensions, log=log, function=function, on_crash=worker._reset
            )
            worker.extensions = extensions
            endpoint.telemetry.max_memory_mb = worker.max_memory_mb
            try:
                await extensions.start(env, spec.cwd)
            except BaseException:
                await extensions.close()
                await endpoint.close()
                raise
        fds = [*os.pipe(), *os.pipe()]  # out_r, out_w, err_r, err_w (not inheritable)
        try:
            await loop.subprocess_exec(
                lambda: worker,
                *spec.argv,
                cwd=spec.cwd,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=fds[1],
                stderr=fds[3],
                start_new_session=True,
            )
        except BaseException:
            for fd in fds:
                os.close(fd)
            if worker.extensions is not None:
                await worker.extensions.close()
            await endpoint.close()
            raise
        os.close(fds[1])
        os.close(fds[3])
        for stream_fd, read_fd in ((1, fds[0]), (2, fds[2])):
            pipe = os.fdopen(read_fd, "rb", buffering=0)  # the transport closes it
            reader = functools.partial(_PipeReader, worker, stream_fd)
            transport, _ = await loop.connect_read_pipe(reader, pipe)
            worker._pipes[stream_fd] = transport
            worker._pipe_fds[stream_fd] = read_fd
            worker._poll.register(read_fd, select.POLLIN)
        return worker

    @property
    def alive(self) -> bool:
        return not self._exited.done()

    @property
    def returncode(self) -> int | None:
        return None if self._transport is None else self._transport.get_returncode()

    # ---- invocations -----------------------------------------------------------------------

    def begin(self, request_id: str, capture: LogCapture | None) -> None:
        self.request_id = request_id
        self.capture = capture
        self.invocations += 1

    def end(self) -> None:
        if self.held_start is not None:
            self._log_held(False)  # the invocation ended without its END line (cancelled)
        self.request_id = None
        self.capture = None

    def hold_start(self, line: tuple[float, str]) -> None:
        """Hold the invocation's START line (see `held_start`) for at most START_HOLD_S: an
        invocation still running then has it logged, so a long one shows it has begun."""
        self.held_start = line
        self._held_due_at = due = self._loop.time() + START_HOLD_S
        if self._held_timer is None:
            self._held_timer = self._loop.call_at(due, self._held_due)

    def take_held_start(self) -> tuple[float, str] | None:
        """The START line still held (to be logged with END and REPORT), if any."""
        held, self.held_start = self.held_start, None
        return held

    def _held_due(self) -> None:
        """The timer: the START held now is logged once due; a timer armed for an earlier
        START (logged with its END since) waits again for the current one's deadline."""
        self._held_timer = None
        if self.held_start is None:
            return
        if self._loop.time() < self._held_due_at:
            self._held_timer = self._loop.call_at(self._held_due_at, self._held_due)
            return
        self._log_held(True)

    def _log_held(self, at_once: bool) -> None:
        if self.log_held is not None:
            self.log_held(self, at_once)
        self.held_start = None

    def _unread_output(self) -> bool:
        """Whether the output pipes still hold bytes: one poll(2) of both, which answers
        without waiting (a pipe whose writer is gone and that holds nothing is only hung
        up, not readable)."""
        ready = self._poll.poll(0)
        return bool(ready) and any(events & select.POLLIN for _, events in ready)

    def _forget_pipe(self, fd: int) -> None:
        read_fd = self._pipe_fds.get(fd)
        if read_fd is not None:
            with contextlib.suppress(KeyError):
                self._poll.unregister(read_fd)

    def output_read(self) -> bool:
        """Whether the output the runtime wrote before its result has all been read (then
        its last line, if it has no newline, is logged now); when not, `output_done` waits
        for it. The usual case needs no coroutine: the pipes are empty."""
        if self._unread_output():
            return False
        self._emit_partial()
        return True

    async def output_done(self) -> None:
        """Wait until the output the runtime wrote before its result has been read."""
        if self._unread_output():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(OUTPUT_WAIT_S):
                    while self._unread_output():
                        self._data_event.clear()
                        await self._data_event.wait()
        self._emit_partial()

    def _emit_partial(self) -> None:
        partial = self._partial
        if partial[1] or partial[2]:
            for fd, pending in partial.items():
                if pending:  # a last line without its newline belongs to this invocation
                    partial[fd] = b""
                    self._emit(pending, _STREAMS[fd])

    def note_memory(self, kb: int) -> None:
        if kb > self.peak_kb:
            self.peak_kb = kb

    def begin_memory(self, cold: bool) -> None:
        """An invocation begins: the kernel's high-water mark is reset unless the worker was
        started for it (`cold`: its init's peak is the invocation's, as on Lambda)."""
        probe = self.memory
        self.invocation_kb = 0
        self._mark_fresh = cold or (probe is not None and probe.reset_hwm())

    def measure_memory(self, thorough: bool) -> int:
        """Update the peak with the process's resident set now (`thorough`: the kernel's
        high-water mark, which also catches peaks between samples); the peak in MB."""
        probe = self.memory
        if probe is not None and self.alive:
            if thorough:
                kb = probe.hwm_kb()
                self.note_memory(kb)
                if not self._mark_fresh:
                    kb = probe.rss_kb()
            else:
                kb = probe.rss_kb()
                self.note_memory(kb)
            self.invocation_kb = max(self.invocation_kb, kb)
        return math.ceil(self.peak_kb / 1024)

    def max_memory_mb(self) -> int:
        """Peak resident memory (VmHWM and samples), in MB; the last value once it died."""
        return self.measure_memory(True)

    # ---- subprocess protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's process transport does not derive from asyncio's class: trust the API.
        self._transport = cast(asyncio.SubprocessTransport, transport)
        self.pid = self._transport.get_pid()
        self.memory = MemoryProbe(self.pid)

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        self._data_event.set()
        pending = self._partial[fd] + data
        *lines, pending = pending.split(b"\n")
        stream = _STREAMS[fd]
        for line in lines:
            self._emit(line, stream)
        if len(pending) > MAX_LINE_BYTES:
            self._emit(pending, stream)
            pending = b""
        self._partial[fd] = pending

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if self._partial.get(fd):
            self._emit(self._partial[fd], _STREAMS[fd])
            self._partial[fd] = b""
        self._open_pipes.discard(fd)
        self._forget_pipe(fd)
        self._data_event.set()
        if self._exited.done() and not self._open_pipes:
            self._set_gone()

    def process_exited(self) -> None:
        self._exited.set_result(None)
        if self._open_pipes:
            # A child the function started may hold the pipes open: do not wait for it.
            loop = asyncio.get_running_loop()
            self._drain_timer = loop.call_later(DRAIN_WAIT_S, self._set_gone)
        else:
            self._set_gone()

    def _set_gone(self) -> None:
        if self._gone.done():
            return
        if self._drain_timer is not None:
            self._drain_timer.cancel()
        self._gone.set_result(None)
        code = self.returncode
        reason = exit_description(code) if code is not None else "signal: killed"
        self.endpoint.abort(RuntimeReply(ReplyKind.EXITED, error_type=reason))
        if self.on_gone is not None:
            self.on_gone(self)

    # ---- output ----------------------------------------------------------------------------

    def _emit(self, raw: bytes, stream: str) -> None:
        text = raw.decode("utf-8", "replace")
        if self.held_start is not None:
            self._log_held(False)
        lines = self._lines
        if lines.enabled():
            lines.info(text, self.request_id, stream)
        if self.capture is not None:
            self.capture.add(text)
        telemetry = self.endpoint.telemetry
        if "function" in telemetry.wanted or not telemetry.init_done:
            telemetry.emit("function", "function", text)

    # ---- life cycle ------------------------------------------------------------------------

    def _signal(self, signum: int) -> None:
        if self.alive and self.pid:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signum)

    async def gone(self, timeout_s: float | None = None) -> bool:
        """Wait until the process exited and its output was read; False on timeout."""
        done, _ = await asyncio.wait([self._gone], timeout=timeout_s)
        return bool(done)

    def kill_now(self) -> None:
        """SIGKILL the process group without waiting (the exit arrives as an EXITED reply)."""
        self._signal(signal.SIGKILL)

    async def kill(self) -> None:
        """SIGKILL the process group, reap the process and release the endpoint."""
        self._signal(signal.SIGKILL)
        await self.close()

    async def terminate(self, grace_s: float = 2.0) -> None:
        """SIGTERM, then SIGKILL after `grace_s`; reap the process and release the endpoint.
        With external extensions, Lambda's shutdown phase instead: the runtime gets SIGTERM
        and `RUNTIME_SHUTDOWN_S`, then the extensions get SHUTDOWN and the rest of
        `EXTENSIONS_SHUTDOWN_S`."""
        self._signal(signal.SIGTERM)
        wait_s = grace_s if self.extensions is None else min(grace_s, RUNTIME_SHUTDOWN_S)
        await asyncio.wait([self._exited], timeout=wait_s)
        await self.kill()

    def _reset(self, name: str, reason: str) -> None:
        """An extension exited while the environment was in use: the environment is reset."""
        self.shutdown_reason = "failure"
        self.kill_now()

    async def close(self) -> None:
        """Release everything once the process is gone (kills it if it is not). Idempotent."""
        self._signal(signal.SIGKILL)
        await asyncio.shield(self._exited)
        self._set_gone()
        if self.extensions is not None:
            extensions, self.extensions = self.extensions, None
            await extensions.shutdown(self.shutdown_reason, EXTENSIONS_SHUTDOWN_S)
        if self._closed:
            return
        self._closed = True
        if self._transport is not None:
            self._transport.close()
        for pipe in self._pipes.values():
            pipe.close()
        for fd in self._open_pipes:
            self._forget_pipe(fd)
        self._open_pipes.clear()
        if self.memory is not None:
            self.memory.close()
        await self.endpoint.close()
