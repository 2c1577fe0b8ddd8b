"""An in-process daemon with local Python functions and the Invoke API on a free port, shared by
the Invoke API and aws backend tests (imported by those modules, not a conftest)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from triggerd.config.load import validate_data
from triggerd.config.plugins import Registry
from triggerd.daemon.app import Daemon
from triggerd.functions.backends.http import plugin as http_plugin
from triggerd.functions.backends.local import plugin as local_plugin

FUNCTION_DIR = Path(__file__).parent / "functions" / "invoke_api"


def registry() -> Registry:
    """Only the plugins these tests use, so other connectors' state cannot break them."""
    reg = Registry()
    reg.register("backend", "local", local_plugin)
    reg.register("backend", "http", http_plugin)
    with contextlib.suppress(ImportError):
        from triggerd.functions.backends.aws import plugin as aws_plugin

        reg.register("backend", "aws", aws_plugin)
    return reg


def local_fn(**extra: Any) -> dict[str, Any]:
    return {"handler": "app.handler", "code": str(FUNCTION_DIR), "timeout_s": 5, **extra}


def daemon_config(
    tmp: Path, functions: dict[str, Any], listen: str = "127.0.0.1:0", **daemon: Any
) -> Any:
    """Functions on a daemon with its public listener on `listen` and its control listener
    (the Invoke API) on a free loopback port, unless `daemon` says otherwise."""
    data = {
        "daemon": {
            "state": f"sqlite:///{tmp / 'state.db'}",
            "listen": listen,
            "control_listen": "127.0.0.1:0",
            **daemon,
            "work_dir": str(tmp / "run"),
            "shutdown_timeout_s": 5,
        },
        "functions": functions,
    }
    return validate_data(data, registry(), tmp)


@contextlib.asynccontextmanager
async def running_daemon(
    tmp: Path, functions: dict[str, Any], listen: str = "127.0.0.1:0", **daemon: Any
) -> AsyncIterator[Daemon]:
    cfg = daemon_config(tmp, functions, listen, **daemon)
    async with Daemon(cfg, registry()).running() as running:
        yield running


async def wait_until(cond: Any, timeout: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if await cond() if asyncio.iscoroutinefunction(cond) else cond():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
