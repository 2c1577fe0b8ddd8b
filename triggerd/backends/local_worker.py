"""One execution environment of the local backend: a runtime process and its Runtime API.

A worker is started from a `WorkerSpec` (any command that speaks the Runtime API: the bundled
Python client today, awslambdaric or a custom `bootstrap` later). Its stdout and stderr are read
line by line; each line goes to the `triggerd.function` logger tagged with the invocation in
flight and, when asked, into that invocation's log capture.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import os
import signal
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import cast

from triggerd.runtime.bootstrap import OUTPUT_MARKER
from triggerd.runtime_api import ReplyKind, RuntimeEndpoint, RuntimeReply

#: Longest stdout/stderr line kept whole; longer ones are split.
MAX_LINE_BYTES = 256 * 1024
#: How long to wait for an invocation's end-of-output markers before giving up on them.
MARKER_WAIT_S = 0.5
#: How long to wait for the rest of a dead process's output.
DRAIN_WAIT_S = 0.5
LOG_TAIL_BYTES = 4096

_MARK = OUTPUT_MARKER.rstrip(b"\n")
_STREAMS = ("stdout", "stderr")


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """How to start a runtime process for one execution environment."""

    argv: Sequence[str]
    cwd: str
    #: The environment, minus the per-worker `AWS_LAMBDA_RUNTIME_API` and log stream name.
    env: Mapping[str, str]
    version: str = "$LATEST"
    #: The runtime writes `OUTPUT_MARKER` on both streams before posting each result.
    writes_markers: bool = True


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


class Worker(asyncio.SubprocessProtocol):
    """A runtime process polling its own Runtime API endpoint.

    The worker is the subprocess protocol of its process: output arrives through
    `pipe_data_received` (no reader tasks), and the process's exit resolves whatever the
    environment was doing with an `EXITED` reply once its remaining output has been read.
    """

    def __init__(
        self,
        spec: WorkerSpec,
        endpoint: RuntimeEndpoint,
        *,
        function: str,
        log: logging.Logger,
        log_stream: str,
    ) -> None:
        loop = asyncio.get_running_loop()
        self.spec = spec
        self.endpoint = endpoint
        self.function = function
        self.log_stream = log_stream
        self._log = log
        self._transport: asyncio.SubprocessTransport | None = None
        self.pid = 0
        #: The invocation whose output is being read now (None between invocations).
        self.request_id: str | None = None
        self.capture: LogCapture | None = None
        self.invocations = 0
        self.peak_kb = 0
        self._markers = {name: asyncio.Event() for name in _STREAMS}
        self._markers_ok = spec.writes_markers
        self._status_fd: int | None = None
        self._partial = {1: b"", 2: b""}
        self._open_pipes = {1, 2}
        self._exited: asyncio.Future[None] = loop.create_future()
        #: Resolved once the process exited and its output was read (or the drain timed out).
        self._gone: asyncio.Future[None] = loop.create_future()
        self._drain_timer: asyncio.TimerHandle | None = None
        self._closed = False

    @classmethod
    async def spawn(cls, spec: WorkerSpec, *, function: str, log: logging.Logger) -> Worker:
        """Start the runtime process (raises OSError when it cannot be started)."""
        endpoint = RuntimeEndpoint()
        await endpoint.start()
        stream = "{}/[{}]{}".format(
            time.strftime("%Y/%m/%d", time.gmtime()), spec.version, uuid.uuid4().hex
        )
        env = dict(spec.env)
        env["AWS_LAMBDA_RUNTIME_API"] = endpoint.address
        env["AWS_LAMBDA_LOG_STREAM_NAME"] = stream
        worker = cls(spec, endpoint, function=function, log=log, log_stream=stream)
        try:
            await asyncio.get_running_loop().subprocess_exec(
                lambda: worker,
                *spec.argv,
                cwd=spec.cwd,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
        except BaseException:
            await endpoint.close()
            raise
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
        for event in self._markers.values():
            event.clear()

    def end(self) -> None:
        self.request_id = None
        self.capture = None

    async def output_done(self) -> None:
        """Wait until the invocation's output has been read (both end markers seen)."""
        if not self._markers_ok:
            for _ in range(3):
                await asyncio.sleep(0)
            return
        try:
            async with asyncio.timeout(MARKER_WAIT_S):
                for event in self._markers.values():
                    await event.wait()
        except TimeoutError:
            self._markers_ok = False  # the function closed a stream: stop relying on them
            self._log.warning("backend.output_marker_missing", extra={"function": self.function})

    def max_memory_mb(self) -> int:
        """Peak resident memory of the process (VmHWM), in MB; the last value once it died."""
        if self._status_fd is not None and self.alive:
            try:
                data = os.pread(self._status_fd, 4096, 0)
            except OSError:
                data = b""
            start = data.find(b"VmHWM:")
            if start >= 0:
                fields = data[start : data.find(b"\n", start)].split()
                if len(fields) >= 2 and fields[1].isdigit():
                    self.peak_kb = max(self.peak_kb, int(fields[1]))
        return math.ceil(self.peak_kb / 1024)

    # ---- subprocess protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's process transport does not derive from asyncio's class: trust the API.
        self._transport = cast(asyncio.SubprocessTransport, transport)
        self.pid = self._transport.get_pid()
        with contextlib.suppress(OSError):
            self._status_fd = os.open(f"/proc/{self.pid}/status", os.O_RDONLY)

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        pending = self._partial[fd] + data
        *lines, pending = pending.split(b"\n")
        for line in lines:
            self._line(line, fd)
        if len(pending) > MAX_LINE_BYTES:
            self._line(pending, fd)
            pending = b""
        self._partial[fd] = pending

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if self._partial.get(fd):
            self._line(self._partial[fd], fd)
            self._partial[fd] = b""
        self._open_pipes.discard(fd)
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

    # ---- output ----------------------------------------------------------------------------

    def _line(self, raw: bytes, fd: int) -> None:
        stream = "stdout" if fd == 1 else "stderr"
        if _MARK in raw:
            before, _, after = raw.partition(_MARK)
            if before:
                self._emit(before, stream)
            self._markers[stream].set()
            if after:
                self._emit(after, stream)
            return
        self._emit(raw, stream)

    def _emit(self, raw: bytes, stream: str) -> None:
        text = raw.decode("utf-8", "replace")
        self._log.info(
            "%s",
            text,
            extra={"function": self.function, "request_id": self.request_id, "stream": stream},
        )
        if self.capture is not None:
            self.capture.add(text)

    # ---- life cycle ------------------------------------------------------------------------

    def _signal(self, signum: int) -> None:
        if self.alive and self.pid:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signum)

    async def gone(self, timeout_s: float | None = None) -> bool:
        """Wait until the process exited and its output was read; False on timeout."""
        done, _ = await asyncio.wait([self._gone], timeout=timeout_s)
        return bool(done)

    async def kill(self) -> None:
        """SIGKILL the process group, reap the process and release the endpoint."""
        self._signal(signal.SIGKILL)
        await self.close()

    async def terminate(self, grace_s: float = 2.0) -> None:
        """SIGTERM, then SIGKILL after `grace_s`; reap the process and release the endpoint."""
        self._signal(signal.SIGTERM)
        await asyncio.wait([self._exited], timeout=grace_s)
        await self.kill()

    async def close(self) -> None:
        """Release everything once the process is gone (kills it if it is not). Idempotent."""
        self._signal(signal.SIGKILL)
        await asyncio.shield(self._exited)
        self._set_gone()
        if self._closed:
            return
        self._closed = True
        if self._transport is not None:
            self._transport.close()
        if self._status_fd is not None:
            os.close(self._status_fd)
            self._status_fd = None
        await self.endpoint.close()
