"""A daemon started in this process with the no-op hello function on warm local workers, for
the benchmarks that measure a path through the control listener (the Invoke API's Event mode,
SNS Publish, EventBridge PutEvents) against the invocations it leads to."""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from bench import HELLO_DIR, BenchError, triggerd_logs_at
from triggerd.config.load import validate_data
from triggerd.config.plugins import Registry
from triggerd.daemon.app import Daemon
from triggerd.functions.backends.local import LocalBackend

FUNCTION = "hello"
INVOKE_PATH = f"/2015-03-31/functions/{FUNCTION}/invocations"


def hello_config(tmp: Path, *, workers: int, log_level: str) -> dict[str, Any]:
    """A SQLite state store in `tmp`, no data listener, the control listener (the Invoke API,
    SNS and EventBridge endpoints) on a free port, and the hello function with `workers`
    provisioned workers. A benchmark adds its own sections (topics, buses)."""
    return {
        "daemon": {
            "state": f"sqlite:///{tmp / 'state.db'}",
            "listen": "",
            "control_listen": "127.0.0.1:0",
            "work_dir": str(tmp / "run"),
            "log_level": log_level,
        },
        "functions": {
            FUNCTION: {
                "handler": "app.handler",
                "code": str(HELLO_DIR),
                "timeout_s": 30,
                "reserved_concurrency": workers,
                "provisioned_concurrency": workers,
            }
        },
    }


@asynccontextmanager
async def hello_daemon(
    config: Callable[[Path], dict[str, Any]], log_level: str
) -> AsyncIterator[tuple[Daemon, LocalBackend]]:
    """The daemon `config(tmp)` describes, running in this process with triggerd's logs at
    `log_level` (the function's START/END/REPORT lines are INFO); yields it and the hello
    function's local backend, whose invocation counter the benchmarks watch."""
    with (
        triggerd_logs_at(getattr(logging, log_level.upper())),
        tempfile.TemporaryDirectory(prefix="triggerd-bench-") as tmp,
    ):
        registry = Registry.discover()
        cfg = validate_data(config(Path(tmp)), registry, Path(tmp))
        async with Daemon(cfg, registry).running(start_timeout_s=60, stop_timeout_s=60) as daemon:
            local: Any = daemon.functions[FUNCTION].backend
            while not isinstance(local, LocalBackend) and hasattr(local, "inner"):
                local = local.inner  # under the daemon's wrappers (metrics, in-flight)
            if not isinstance(local, LocalBackend):
                raise BenchError(f"{FUNCTION} is not on the local backend")
            yield daemon, local


@dataclass
class Target:
    """The control listener's base URL, the hello function's backend and the clients' session."""

    base: str
    backend: LocalBackend
    http: aiohttp.ClientSession

    @property
    def invoked(self) -> int:
        return int(self.backend.stats["invocations"])

    async def wait_invoked(self, count: int, poll_s: float = 0.0002) -> None:
        """Until the function has been invoked `count` times in all (5 minutes at most)."""
        async with asyncio.timeout(300):
            while self.invoked < count:
                await asyncio.sleep(poll_s)


TargetT = TypeVar("TargetT", bound=Target)


@asynccontextmanager
async def hello_target(
    kind: type[TargetT], config: Callable[[Path], dict[str, Any]], log_level: str, connections: int
) -> AsyncIterator[TargetT]:
    """`hello_daemon` and an aiohttp session of `connections` connections to talk to it, as
    the benchmark's `kind` of target (the requests it sends)."""
    async with (
        hello_daemon(config, log_level) as (daemon, local),
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections)) as http,
    ):
        yield kind(f"http://{daemon.control_address}", local, http)
