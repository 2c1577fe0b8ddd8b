"""What backend plugins add to the command line: checks in `triggerd validate` (their
`check`, e.g. a runtime's interpreter is installed) and `triggerd build` (their `build`)."""

from __future__ import annotations

import time
from collections.abc import Awaitable

import click

from triggerd.config.model import ConfigBase
from triggerd.config.plugins import Registry, UnknownPluginError
from triggerd.types import ConfigError, MissingExtraError, PermanentError

__all__ = ["build_functions", "check_functions"]


def check_functions(cfg: ConfigBase, registry: Registry) -> list[str]:
    """Problems the backends find in their functions without building anything, in the
    functions' order. The checks that need a process (an interpreter asked its version) run
    side by side on an event loop; without one, none is started."""
    outcomes: list[BaseException | Awaitable[None] | None] = []
    for name, fcfg in cfg.function_map.items():
        try:
            plugin = registry.backend(getattr(fcfg, "backend", "local"))
        except (UnknownPluginError, MissingExtraError):
            continue  # the config model already said so
        if plugin.check is None:
            continue
        try:
            outcomes.append(plugin.check(fcfg, name))
        except ConfigError as exc:
            outcomes.append(exc)
    pending = [o for o in outcomes if isinstance(o, Awaitable)]
    if pending:
        import asyncio  # only for the checks that start a process

        async def gather() -> list[BaseException | None]:
            return await asyncio.gather(*pending, return_exceptions=True)

        done = iter(asyncio.run(gather()))
        outcomes = [next(done) if isinstance(o, Awaitable) else o for o in outcomes]
    problems: list[str] = []
    for outcome in outcomes:
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
