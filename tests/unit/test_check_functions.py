"""`triggerd validate`'s function checks: those that finish at once need no event loop;
those that start a process run on one; the problems come in the functions' order."""

from __future__ import annotations

import asyncio
import inspect
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.fakes import FakeBackend, FakeFunctionConfig
from triggerd.cli.functions import check_functions
from triggerd.config.load import validate_data
from triggerd.config.plugins import Registry
from triggerd.types import BackendPlugin, ConfigError


def check(config: Any, name: str) -> Any:
    if name.startswith("now"):
        raise ConfigError([f"{name}: found at once"])
    if name.startswith("later"):

        async def later() -> None:
            await asyncio.sleep(0)
            raise ConfigError([f"{name}: found by a process"])

        return later()
    return None


def registry() -> Registry:
    reg = Registry(entry_points={})
    reg.register(
        "backend",
        "fake",
        BackendPlugin(FakeFunctionConfig, lambda c, ctx: FakeBackend(), check=check),
    )
    return reg


def problems(*functions: str) -> list[str]:
    reg = registry()
    data = {"functions": {name: {"backend": "fake"} for name in functions}}
    return check_functions(validate_data(data, reg, base_dir=Path(".")), reg)


def no_loop(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("an event loop was started")


def test_checks_that_finish_at_once_start_no_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(asyncio, "run", no_loop)
    assert problems("ok", "now1", "ok2", "now2") == ["now1: found at once", "now2: found at once"]


def test_checks_that_start_a_process_run_on_a_loop_in_the_functions_order() -> None:
    assert problems("later1", "now", "ok", "later2") == [
        "later1: found by a process",
        "now: found at once",
        "later2: found by a process",
    ]


def local_check(function: dict[str, Any]) -> Any:
    reg = Registry.discover()
    data = {"functions": {"f": {"handler": "app.handler", "code": ".", **function}}}
    cfg = validate_data(data, reg, base_dir=Path("."))
    plugin = reg.backend("local")
    assert plugin.check is not None
    return plugin.check(cfg.function_map["f"], "f")


def test_a_local_function_on_triggerds_own_python_is_checked_at_once() -> None:
    own = f"python{sys.version_info.major}.{sys.version_info.minor}"
    assert local_check({"runtime": own}) is None
    assert local_check({"runtime": "provided.al2023", "handler": "bootstrap"}) is None


def test_a_local_function_on_another_interpreter_is_checked_by_starting_it() -> None:
    other = "python3.9" if sys.version_info[:2] != (3, 9) else "python3.10"
    pending = local_check({"runtime": other})
    assert inspect.iscoroutine(pending)
    pending.close()  # not run: that would start an interpreter
    pending = local_check({"interpreter": sys.executable})
    assert inspect.iscoroutine(pending)
    assert asyncio.run(pending) is None
