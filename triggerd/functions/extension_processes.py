"""External extensions: the executables of a function's `<opt>/extensions/` directory.

As on Lambda, each executable in the directory (in name order) is started before the runtime,
with the function's environment and the Runtime API's address; the runtime starts once every
one of them has registered (or one failed). Their output goes to the function's log, tagged
with the extension's name, and to Telemetry API subscribers as `extension` events. An
extension that exits while the environment is in use resets the environment (its owner kills
the runtime); during init it fails the init with `Extension.Crash`.

At shutdown (`shutdown`), the extensions that asked for SHUTDOWN get it with the phase's
deadline, and every extension still running at the deadline is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from triggerd.functions.extensions import ExtensionsAPI

__all__ = ["ExternalExtensions", "discover"]

#: Longest time the extensions get to register before the runtime is started anyway (the
#: init phase's own limit still applies).
REGISTER_TIMEOUT_S = 10.0
#: How long the output of a dead extension is still read.
DRAIN_WAIT_S = 0.5
#: Longest output line kept whole.
MAX_LINE_BYTES = 256 * 1024
#: Variables Lambda does not give extensions.
_HIDDEN_ENV = ("_HANDLER", "AWS_EXECUTION_ENV", "LAMBDA_RUNTIME_DIR", "_X_AMZN_TRACE_ID")


def discover(directory: str) -> list[str]:
    """The executables in `directory`, in name order (an absent directory has none)."""
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return []
    paths = (os.path.join(directory, n) for n in names)
    return [p for p in paths if os.path.isfile(p) and os.access(p, os.X_OK)]


@dataclass(slots=True, eq=False)
class _Process:
    name: str
    proc: asyncio.subprocess.Process
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


class ExternalExtensions:
    """The external extension processes of one execution environment."""

    def __init__(
        self,
        paths: list[str],
        api: ExtensionsAPI,
        *,
        log: logging.Logger,
        function: str,
        on_crash: Callable[[str, str], None] | None = None,
    ) -> None:
        self.paths = paths
        self.api = api
        self._log = log
        self._function = function
        #: Called when an extension exits on its own while the environment is in use.
        self.on_crash = on_crash
        self._procs: list[_Process] = []
        self._stopping = False
        api.external = frozenset(os.path.basename(p) for p in paths)

    async def start(self, env: Mapping[str, str], cwd: str) -> None:
        """Start every extension and wait until all registered (or one failed)."""
        ext_env = {k: v for k, v in env.items() if k not in _HIDDEN_ENV}
        for path in self.paths:
            name = os.path.basename(path)
            try:
                proc = await asyncio.create_subprocess_exec(
                    path,
                    cwd=cwd,
                    env=ext_env,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as e:
                self.api.crashed(name, f"cannot start: {e.strerror or e}")
                return
            entry = _Process(name, proc)
            loop = asyncio.get_running_loop()
            entry.tasks.append(loop.create_task(self._read(entry), name=f"ext-out:{name}"))
            entry.tasks.append(loop.create_task(self._watch(entry), name=f"ext-exit:{name}"))
            self._procs.append(entry)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(REGISTER_TIMEOUT_S):
                while not self._registered() and self.api.failure is None:
                    self.api.changed.clear()
                    await self.api.changed.wait()

    def _registered(self) -> bool:
        names = {e.name for e in self.api.by_id.values() if e.external}
        return names >= self.api.external

    async def _read(self, entry: _Process) -> None:
        stream = entry.proc.stdout
        assert stream is not None
        extra = {"function": self._function, "extension": entry.name, "stream": "extension"}
        while True:
            try:
                raw = await stream.readuntil(b"\n")
            except asyncio.IncompleteReadError as e:
                raw = e.partial
                if not raw:
                    return
            except asyncio.LimitOverrunError as e:
                raw = await stream.readexactly(min(e.consumed, MAX_LINE_BYTES))
            text = raw.rstrip(b"\n").decode("utf-8", "replace")
            self._log.info("%s", text, extra=extra)
            self.api.telemetry.emit("extension", "extension", text)

    async def _watch(self, entry: _Process) -> None:
        code = await entry.proc.wait()
        if self._stopping:
            return
        reason = f"exit status {code}" if code >= 0 else f"signal {-code}"
        self._log.warning(
            "extension.exited",
            extra={"function": self._function, "extension": entry.name, "reason": reason},
        )
        self.api.crashed(entry.name, reason)
        if self.on_crash is not None:
            self.on_crash(entry.name, reason)

    async def shutdown(self, reason: str, deadline_s: float) -> None:
        """SHUTDOWN (deadline `deadline_s` from now) to those that asked; kill the rest then."""
        if self._stopping:
            return
        self._stopping = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + deadline_s
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(deadline_s / 2):
                await self.api.telemetry.flush()
        left_s = max(deadline - loop.time(), 0.0)
        deadline_ms = int((time.time() + left_s) * 1000)
        told = {e.name for e in self.api.shutdown(reason, deadline_ms)}
        waiting = [p.proc.wait() for p in self._procs if p.name in told]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*waiting), max(deadline - loop.time(), 0.0))
        await self.close()

    async def close(self) -> None:
        """Kill whatever still runs and reap it."""
        self._stopping = True
        for entry in self._procs:
            if entry.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(entry.proc.pid, signal.SIGKILL)
        for entry in self._procs:
            await entry.proc.wait()
            # The output still in the pipe is read; a child holding it open is not waited for.
            await asyncio.wait(entry.tasks, timeout=DRAIN_WAIT_S)
            for task in entry.tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._procs.clear()
