"""What backend plugins add to the command line: checks in `triggerd validate` (their
`check`, e.g. a runtime's interpreter is installed) and `triggerd build` (their `build`)."""

from __future__ import annotations

import asyncio
import time

import click

from triggerd.config.model import ConfigBase
from triggerd.config.plugins import Registry, UnknownPluginError
from triggerd.types import ConfigError, MissingExtraError, PermanentError

__all__ = ["build_functions", "check_functions"]


async def check_functions(cfg: ConfigBase, registry: Registry) -> list[str]:
    """Problems the backends find in their functions without building anything (the checks
    run side by side: each may start an interpreter to ask its version)."""
    checks = []
    for name, fcfg in cfg.function_map.items():
        try:
            plugin = registry.backend(getattr(fcfg, "backend", "local"))
        except (UnknownPluginError, MissingExtraError):
            continue  # the config model already said so
        if plugin.check is not None:
            checks.append(plugin.check(fcfg, name))
    problems: list[str] = []
    for outcome in await asyncio.gather(*checks, return_exceptions=True):
        if isinstance(outcome, ConfigError):
            problems += outcome.problems
        elif isinstance(outcome, BaseException):
            raise outcome
    return problems


async def build_functions(cfg: ConfigBase, registry: Registry, only: set[str] | None) -> int:
    """Build each function whose backend builds, printing progress; 1 when one failed."""
    from triggerd.daemon.app import Daemon

    daemon = Daemon(cfg, registry)
    failed = 0
    for name, fcfg in cfg.function_map.items():
        if only is not None and name not in only:
            continue
        plugin = registry.backend(getattr(fcfg, "backend", "local"))
        if plugin.build is None:
            continue

        def progress(line: str, name: str = name) -> None:
            click.echo(f"{name}: {line}")

        started = time.monotonic()
        click.echo(f"{name}: building")
        try:
            await plugin.build(fcfg, daemon.context(name), progress)
        except ConfigError as exc:
            failed += 1
            for problem in exc.problems:
                click.echo(f"triggerd: {problem}", err=True)
            continue
        except PermanentError as exc:
            failed += 1
            click.echo(f"triggerd: function {name} is not built: {exc}", err=True)
            continue
        click.echo(f"{name}: ready ({time.monotonic() - started:.1f} s)")
    return 1 if failed else 0
