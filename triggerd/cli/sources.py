"""What source plugins add to the command line: `triggerd <type> <command> TRIGGER` (their
`commands`), a line per trigger in `triggerd status` (their `status`), and checks against the
live system in `triggerd validate --connect` (their `check`). Plugins are loaded only when
needed."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import click

from triggerd.cli.errors import say_config_error
from triggerd.cli.options import config_option
from triggerd.config.plugins import Registry, UnknownPluginError
from triggerd.types import (
    ConfigError,
    MissingExtraError,
    PermanentError,
    RetryableError,
    SourceCommand,
    SourcePlugin,
)

if TYPE_CHECKING:  # imported by the commands that read a config: the CLI's start-up
    from triggerd.config.model import ConfigBase
    from triggerd.state.base import StateStore

__all__ = [
    "CONNECT_TIMEOUT_S",
    "ConnectReport",
    "SourceCommandsGroup",
    "connect_sources",
    "status_lines",
]

#: How long a status line may take (the external system may not answer).
PROBE_TIMEOUT_S = 15.0
#: How long each source may take to answer `validate --connect` (default of --timeout).
CONNECT_TIMEOUT_S = 5.0


def _plugin(registry: Registry, source_type: str) -> SourcePlugin | None:
    try:
        return registry.source(source_type)
    except (UnknownPluginError, MissingExtraError):
        return None


def _triggers(cfg: ConfigBase, registry: Registry) -> list[tuple[str, Any, SourcePlugin]]:
    """(trigger name, source config, plugin) of every enabled trigger."""
    out = []
    for index, trig in enumerate(cfg.trigger_list):
        plugin = _plugin(registry, str(getattr(trig.source_config, "type", "")))
        if trig.enabled and plugin is not None:
            out.append((cfg.trigger_name(index), trig.source_config, plugin))
    return out


def has_status_lines(cfg: ConfigBase, registry: Registry) -> bool:
    """Whether a source of `cfg` has a status line to ask for (`status_lines`)."""
    return any(plugin.status is not None for _, _, plugin in _triggers(cfg, registry))


async def status_lines(cfg: ConfigBase, registry: Registry) -> list[str]:
    import asyncio  # here, not at the top: the CLI's start-up (generate-event) skips it

    lines = []
    for name, source_config, plugin in _triggers(cfg, registry):
        if plugin.status is None:
            continue
        try:
            line = await asyncio.wait_for(plugin.status(source_config, name), PROBE_TIMEOUT_S)
        except (RetryableError, ConfigError, TimeoutError, OSError) as exc:
            line = f"not reachable: {exc or type(exc).__name__}"
        except Exception as exc:  # a plugin's unexpected error: one line, not a traceback
            line = f"status failed: {type(exc).__name__}"
        if line:
            lines.append(f"{name}: {line}")
    return lines


@dataclass
class ConnectReport:
    """`validate --connect`: a line per trigger saying how its check went, the problems the
    servers revealed (config errors), and the triggers whose server did not answer."""

    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    unreachable: list[str] = field(default_factory=list)


async def connect_sources(
    cfg: ConfigBase, registry: Registry, timeout_s: float = CONNECT_TIMEOUT_S
) -> ConnectReport:
    """Each enabled trigger's source `check`, concurrently, each bounded by `timeout_s`."""
    import asyncio

    triggers = _triggers(cfg, registry)

    async def one(name: str, source_config: Any, plugin: SourcePlugin) -> tuple[str, Any]:
        if plugin.check_in_region is not None:
            check = plugin.check_in_region(source_config, name, cfg.daemon.region)
        elif plugin.check is not None:
            check = plugin.check(source_config, name)
        else:
            return "none", None
        try:
            await asyncio.wait_for(check, timeout_s)
        except ConfigError as exc:
            return "problems", exc.problems
        except TimeoutError:
            return "unreachable", f"no answer within {timeout_s:g}s"
        except (RetryableError, PermanentError, OSError) as exc:
            return "unreachable", str(exc) or type(exc).__name__
        except Exception as exc:  # a plugin's unexpected error: one line, not a traceback
            return "unreachable", f"the check failed: {type(exc).__name__}"
        return "ok", None

    results = await asyncio.gather(*(one(*t) for t in triggers))
    report = ConnectReport()
    for (name, source_config, _), (outcome, detail) in zip(triggers, results, strict=True):
        what = f"trigger {name!r} ({getattr(source_config, 'type', '?')})"
        if outcome == "ok":
            report.lines.append(f"{what}: connected, ok")
        elif outcome == "none":
            report.lines.append(f"{what}: nothing to connect to")
        elif outcome == "problems":
            report.lines.append(f"{what}: connected, {len(detail)} problem(s)")
            report.problems += detail
        else:
            report.lines.append(f"{what}: not reachable: {detail}")
            report.unreachable.append(name)
    return report


class SourceCommandsGroup(click.Group):
    """The `triggerd` group: unknown subcommands are looked up as source types whose plugin
    has commands (`triggerd postgres drop-slot TRIGGER`)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        own = super().list_commands(ctx)
        plugins = Registry.discover().available("source")
        extra = [n for n, p in plugins.items() if isinstance(p, SourcePlugin) and p.commands]
        return sorted({*own, *extra})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            return command
        plugin = _plugin(Registry.discover(), cmd_name)
        if plugin is None or not plugin.commands:
            return None
        group = click.Group(cmd_name, help=f"Operations on `{cmd_name}` triggers' sources.")
        for name, spec in plugin.commands.items():
            group.add_command(_source_command(cmd_name, name, spec))
        return group


def _source_command(source_type: str, name: str, spec: SourceCommand) -> click.Command:
    @click.command(name, help=spec.help)
    @click.argument("trigger")
    @config_option
    def command(trigger: str, config_path: str | None) -> None:
        from triggerd.cli.main import _with_store

        def action(cfg: ConfigBase, store: StateStore) -> Awaitable[int]:
            return _run(cfg, store, trigger, spec.run)

        def precheck(cfg: ConfigBase) -> int | None:
            return _check_trigger(cfg, trigger, source_type)

        _with_store(config_path, action, must_exist=False, precheck=precheck)

    return command


def _check_trigger(cfg: ConfigBase, trigger: str, source_type: str) -> int | None:
    """Exit status 2, said on stderr, when the config has no trigger `trigger` of
    `source_type` (before the state store is opened: it would be created for nothing)."""
    names = [cfg.trigger_name(i) for i in range(len(cfg.trigger_list))]
    if trigger not in names:
        click.echo(f"triggerd: no trigger {trigger!r} (triggers: {', '.join(names)})", err=True)
        return 2
    source_config = cfg.trigger_list[names.index(trigger)].source_config
    actual = getattr(source_config, "type", "?")
    if actual != source_type:
        click.echo(f"triggerd: trigger {trigger!r} has a {actual} source", err=True)
        return 2
    return None


async def _run(
    cfg: ConfigBase,
    store: StateStore,
    trigger: str,
    run: Callable[[Any, str, StateStore], Awaitable[str]],
) -> int:
    names = [cfg.trigger_name(i) for i in range(len(cfg.trigger_list))]
    source_config = cfg.trigger_list[names.index(trigger)].source_config
    try:
        click.echo(await run(source_config, trigger, store))
    except ConfigError as exc:
        return say_config_error(exc)
    except RetryableError as exc:
        click.echo(f"triggerd: {exc}", err=True)
        return 1
    return 0
