"""The `triggerd` command line: run, validate, schema, invoke, generate-event, dlq, status,
and the commands of source plugins (`triggerd postgres drop-slot`)."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import os
import shutil
import sys
import tempfile
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from triggerd import __version__
from triggerd.cli.errors import say_config_error, say_operator_error
from triggerd.cli.options import (
    config_argument,
    config_option,
    config_option_beside_argument,
    resolve_config,
    translation_source_options,
)
from triggerd.cli.output import output_option
from triggerd.cli.sources import CONNECT_TIMEOUT_S, SourceCommandsGroup
from triggerd.config.plugins import Registry, UnknownPluginError
from triggerd.types import (
    ConfigError,
    ExitCode,
    MissingExtraError,
    OperatorError,
    Outcome,
    PermanentError,
)

# Each command imports what it uses when it runs: `generate-event` needs no config model,
# `validate` no state store, HTTP client, log handler, logging, json or orjson
# (tests/unit/test_lazy_imports.py).
if TYPE_CHECKING:
    from triggerd.config.model import ConfigBase
    from triggerd.state.base import StateStore

#: `config_option` and `resolve_config` live in `options`; importable from here as before.
__all__ = ["config_option", "main", "resolve_config"]


def _run_async(coro: Coroutine[Any, Any, int]) -> int:
    import asyncio  # by the commands that run a loop: generate-event and --help do not

    from triggerd.telemetry.logs import flush_logs

    try:
        import uvloop
    except ImportError:
        run: Callable[[Coroutine[Any, Any, int]], int] = asyncio.run
    else:
        run = uvloop.run
    try:
        return int(run(coro))
    finally:
        flush_logs()  # its last lines are not left for the process's exit


def _load(path: str, registry: Registry, also: Callable[[], list[str]] | None = None) -> ConfigBase:
    """The config, or exit 2 with one line per problem (and those `also` finds in the
    invalid file: validate's paths) or exit 8 when the file cannot be read."""
    from triggerd.config.load import load_config

    try:
        with open(path, "rb") as f:
            f.read().decode("utf-8")
    except OSError as exc:
        reason = exc.strerror or str(exc)
        click.echo(f"triggerd: cannot read the config file {path}: {reason}", err=True)
        sys.exit(ExitCode.CONFIG_UNREADABLE)
    except UnicodeDecodeError as exc:
        click.echo(f"triggerd: the config file {path} is not UTF-8 text: {exc}", err=True)
        sys.exit(ExitCode.CONFIG_UNREADABLE)
    try:
        return load_config(path, registry)
    except ConfigError as exc:
        problems = list(exc.problems)
        if also is not None:
            problems += [p for p in also() if p not in problems]
        for problem in problems:
            click.echo(f"{path}: {problem}", err=True)
        sys.exit(2)


def _imported_source(
    config_name: str,
    config: str | None,
    sam_file: str | None,
    serverless_file: str | None,
    overrides_path: str | None,
    parameters: tuple[str, ...],
    options: tuple[str, ...],
) -> tuple[str, str] | None:
    """("sam" | "serverless", FILE) when the command is to use a translated definition, None
    when it uses a config; a usage error (exit 2) when both or neither fit together.
    `config_name` is how the command names its config (CONFIG, -c/--config)."""
    imported = [(k, f) for k, f in (("sam", sam_file), ("serverless", serverless_file)) if f]
    if imported:
        if len(imported) > 1 or config:
            raise click.UsageError(f"give one of {config_name}, --sam FILE and --serverless FILE")
        return imported[0]
    if overrides_path or parameters or options:
        raise click.UsageError(
            "--overrides, --parameter-overrides and --opt need --sam or --serverless"
        )
    return None


def _config_or_translation(
    config_path: str | None,
    sam_file: str | None,
    serverless_file: str | None,
    overrides_path: str | None,
    parameters: tuple[str, ...],
    options: tuple[str, ...],
    registry: Registry,
) -> tuple[ConfigBase, str]:
    """For invoke and record: the config named by -c/--config (or its defaults), or the
    in-memory translation of --sam/--serverless FILE as run makes it (its warnings printed);
    with the name to quote in messages."""
    imported = _imported_source(
        "-c/--config", config_path, sam_file, serverless_file, overrides_path, parameters, options
    )
    if imported is None:
        path = resolve_config(None, config_path)
        return _load(path, registry), path
    kind, label = imported
    from triggerd.cli.imports import load_translated

    cfg, _reload = load_translated(kind, label, overrides_path, parameters, options, registry)
    return cfg, label


#: Commands defined in their own modules, imported only when one of them runs (or `--help`
#: lists them): their modules need the state store, the HTTP client and the config model.
LAZY_COMMANDS: dict[str, tuple[str, str]] = {
    "reload": ("triggerd.cli.control", "reload"),
    "pause": ("triggerd.cli.control", "pause"),
    "resume": ("triggerd.cli.control", "resume"),
    "dlq": ("triggerd.cli.dlq_commands", "dlq"),
    "import": ("triggerd.cli.imports", "import_group"),
    "state": ("triggerd.cli.state_commands", "state"),
    "events": ("triggerd.cli.events", "events"),
}


class _Commands(SourceCommandsGroup):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in LAZY_COMMANDS:
            module, name = LAZY_COMMANDS[cmd_name]
            command = getattr(importlib.import_module(module), name)
            assert isinstance(command, click.Command)
            return command
        return super().get_command(ctx, cmd_name)


@click.group(cls=_Commands)
@click.version_option(__version__, prog_name="triggerd")
def main() -> None:
    """AWS Lambda's event sources, batching, retries and destinations for any infrastructure."""


@main.command()
@config_argument
@config_option_beside_argument
@click.option(
    "--accept-fresh-state",
    is_flag=True,
    envvar="TRIGGERD_ACCEPT_FRESH_STATE",
    help="Start with a new, empty state store although triggerd ran with another one before "
    "(its queued events and checkpoints are not carried over); also "
    "TRIGGERD_ACCEPT_FRESH_STATE=1",
)
@translation_source_options
@click.option(
    "--watch/--no-watch",
    default=None,
    help="Hot reload: a change to a local function's code, requirements or layers recycles "
    "its workers (idle ones at once, busy ones after their invocation); needs the directory "
    "extra. Default: on with --sam/--serverless, off otherwise",
)
def run(
    config: str | None,
    config_path: str | None,
    accept_fresh_state: bool,
    sam_file: str | None,
    serverless_file: str | None,
    overrides_path: str | None,
    parameters: tuple[str, ...],
    options: tuple[str, ...],
    watch: bool | None,
) -> None:
    """Run the daemon on CONFIG until SIGTERM or SIGINT; SIGHUP reloads CONFIG. With --sam
    or --serverless, on the translation of that file (a reload translates it again)."""
    import signal

    # SIGHUP's default action kills the process: until the loop's handler (a reload) is
    # installed, a SIGHUP (systemd's ExecReload right after the start) is ignored.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    from triggerd.cli.paths import path_problems

    registry = Registry.discover()
    imported = _imported_source(
        "CONFIG",
        config or config_path,
        sam_file,
        serverless_file,
        overrides_path,
        parameters,
        options,
    )
    path: str | None
    if imported is not None:
        kind, label = imported
        from triggerd.cli.imports import load_translated

        cfg, loader = load_translated(kind, label, overrides_path, parameters, options, registry)
        path = None
    else:
        label = path = resolve_config(config, config_path)
        from triggerd.daemon.gctune import defer_gc

        defer_gc()
        cfg = _load(path, registry)
        loader = None
    # Every missing path at once, before anything is created (the daemon would stop at the
    # first one it meets).
    problems = path_problems(cfg, state=False)
    for line in problems:
        click.echo(f"{label}: {line}", err=True)
    if problems:
        sys.exit(ExitCode.CONFIG_INVALID)
    from triggerd.telemetry.logs import setup_logging

    setup_logging(cfg.daemon.log_level, cfg.daemon.log_format)  # type: ignore[arg-type]
    from triggerd.daemon.gctune import tune_gc

    tune_gc()
    watching = bool(imported) if watch is None else watch
    if watch is None and watching and importlib.util.find_spec("watchfiles") is None:
        click.echo(
            "triggerd: hot reload is off: it needs watchfiles "
            "(pip install 'triggerd-daemon[directory]')",
            err=True,
        )
        watching = False
    sys.exit(
        _run_async(
            _serve(
                cfg,
                registry,
                accept_fresh_state=accept_fresh_state,
                path=path,
                watch=watching,
                loader=(loader, label) if loader is not None else None,
            )
        )
    )


def _summary(cfg: ConfigBase, listen: str | None, control: str | None = None) -> str:
    from triggerd.state.pgschema import redact_state_url

    lines = [
        f"triggerd {__version__}: {len(cfg.functions)} function(s), "
        f"{len(cfg.trigger_list)} trigger(s); state {redact_state_url(cfg.daemon.state)}"
    ]
    for name, fn in cfg.function_map.items():
        lines.append(
            f"  function {name}: backend={getattr(fn, 'backend', '?')} "
            f"timeout={fn.timeout_s}s memory={fn.memory_mb}MB"
        )
    for i, trig in enumerate(cfg.trigger_list):
        src = getattr(trig.source_config, "type", "?")
        state = "" if trig.enabled else " (disabled)"
        lines.append(f"  trigger {cfg.trigger_name(i)}: {src} -> {trig.function}{state}")
    scheme = "https" if cfg.daemon.tls_cert_file else "http"
    lines.append(f"  listening on {scheme}://{listen}" if listen else "  public listener disabled")
    lines.append(
        f"  control endpoints on {scheme}://{control}" if control else "  control listener disabled"
    )
    return "\n".join(lines)


async def _serve(
    cfg: ConfigBase,
    registry: Registry,
    *,
    accept_fresh_state: bool = False,
    path: str | None = None,
    watch: bool = False,
    loader: tuple[Callable[[], ConfigBase], str] | None = None,
) -> int:
    """Run the daemon until a signal; its exit status. `watch`: hot reload of the local
    functions' code (`run --watch`; `run --sam/--serverless` turn it on by default).
    `loader`: what a reload calls instead of reading `path`, and the file it reads."""
    import asyncio
    import logging
    import signal

    from triggerd.daemon.app import Daemon

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    main_task = asyncio.current_task()
    signals = {"count": 0}

    def on_signal(signame: str) -> None:
        signals["count"] += 1
        logging.getLogger("triggerd.daemon").info("daemon.signal", extra={"signal": signame})
        if signals["count"] == 1:
            stop.set()
        elif main_task is not None:
            # A second signal forces the exit: settlement writes under way stop waiting out
            # their grace (a task group does not pass a second cancellation on).
            daemon.forced.set()
            main_task.cancel()

    daemon = Daemon(
        cfg, registry, accept_fresh_state=accept_fresh_state, config_path=path, watch=watch
    )
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig.name)
    if loader is not None:
        daemon.config_loader, daemon.config_source = loader
    loop.add_signal_handler(signal.SIGHUP, daemon.request_reload)

    async def announce() -> None:
        await daemon.ready.wait()
        click.echo(_summary(cfg, daemon.listen_address, daemon.control_address))

    announcer = asyncio.create_task(announce())
    try:
        await daemon.run(stop)
    except asyncio.CancelledError:
        return 1
    except (MissingExtraError, UnknownPluginError, ConfigError) as exc:
        click.echo(f"triggerd: {exc}", err=True)
        return int(ExitCode.CONFIG_INVALID)
    except OperatorError as exc:
        return say_operator_error(exc)
    finally:
        announcer.cancel()
        await asyncio.gather(announcer, return_exceptions=True)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # not the default (exit 129) until exit
    return 0


@main.command()
@config_argument
@config_option_beside_argument
@click.option(
    "--connect",
    is_flag=True,
    help="Also check that each source's server answers and accepts the credentials",
)
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(0.1, 300),
    default=None,
    help=f"With --connect: seconds each source may take to answer [default: {CONNECT_TIMEOUT_S:g}]",
)
@click.option(
    "--skip-paths",
    is_flag=True,
    help="Do not check that the files and directories the config names exist here (for a "
    "config validated on another machine than the one it runs on)",
)
def validate(
    config: str | None,
    config_path: str | None,
    connect: bool,
    timeout_s: float | None,
    skip_paths: bool,
) -> None:
    """Check CONFIG as `run` would: the fields and their references, the installed extras,
    the functions' interpreters and the paths the config names; with --connect, each
    source's server too. Exit 0; 2 with one line per problem; 11 when a source's server
    cannot be reached."""
    if timeout_s is not None and not connect:
        raise click.UsageError("--timeout applies to --connect only")
    from triggerd.cli.functions import check_functions
    from triggerd.cli.paths import path_problems, raw_path_problems

    registry = Registry.discover()
    path = resolve_config(config, config_path)
    # Invalid fields hide no path problem: the file's paths are checked all the same.
    cfg = _load(path, registry, None if skip_paths else lambda: raw_path_problems(path, registry))
    problems = missing_extras(cfg)
    if not skip_paths:
        problems += path_problems(cfg)
    problems += check_functions(cfg, registry)
    unreachable: list[str] = []
    if connect:
        # The clients' own log lines (aiormq's "error when creating transport") would reach
        # stderr through logging's last-resort handler; each trigger's line says it instead.
        import logging

        logging.getLogger().addHandler(logging.NullHandler())
        import asyncio

        from triggerd.cli.sources import connect_sources

        timeout = CONNECT_TIMEOUT_S if timeout_s is None else timeout_s
        report = asyncio.run(connect_sources(cfg, registry, timeout))
        for line in report.lines:
            click.echo(f"{path}: {line}", err=True)
        problems += report.problems
        unreachable = report.unreachable
    for line in problems:
        click.echo(f"{path}: {line}", err=True)
    if problems:
        sys.exit(ExitCode.CONFIG_INVALID)
    if unreachable:
        sys.exit(ExitCode.SOURCE_UNREACHABLE)
    checked = "; sources answer" if connect else ""
    click.echo(
        f"{path}: ok ({len(cfg.functions)} functions, {len(cfg.trigger_list)} triggers"
        f"{f', {len(cfg.event_buses)} event buses' if cfg.event_buses else ''}{checked})"
    )


def missing_extras(cfg: ConfigBase) -> list[str]:
    """One line per connector the config uses whose extra is not installed (the client
    library would be missing only at `run`, after the functions were built)."""
    from triggerd.config.plugins import missing_extra

    used: dict[str, str] = {}
    for name, fn in cfg.functions.items():
        used.setdefault(f"{fn.backend} backend", f"functions.{name}.backend")
    for trigger in cfg.trigger_list:
        used.setdefault(
            f"{getattr(trigger.source_config, 'type', '')} source",
            f"triggers.{trigger.name}.source",
        )
        dest = trigger.on_failure_config
        if dest is not None:
            used.setdefault(
                f"{getattr(dest, 'type', '')} destination", f"triggers.{trigger.name}.on_failure"
            )
    if cfg.telemetry.otel is not None:
        used["otel tracing"] = "telemetry.otel"
    problems = []
    for what, where in used.items():
        hint = missing_extra(what.split(" ")[0])
        if hint is not None:
            problems.append(f"{where}: the {what} is not installed: {hint}")
    return problems


@main.command()
@config_argument
@config_option_beside_argument
@click.option("--function", "-f", "functions", multiple=True, help="Only this function")
def build(config: str | None, config_path: str | None, functions: tuple[str, ...]) -> None:
    """Prepare CONFIG's functions ahead of `run`: extract .zip code, merge layers, install
    the runtimes' packages and each function's requirements (unchanged ones cost nothing).
    Exit 0, or 1 naming each function that failed and why."""
    from triggerd.cli.functions import build_functions

    registry = Registry.discover()
    path = resolve_config(config, config_path)
    cfg = _load(path, registry)
    unknown = [f for f in functions if f not in cfg.function_map]
    if unknown:
        click.echo(f"triggerd: no function {unknown[0]!r} in {path}", err=True)
        sys.exit(2)
    sys.exit(_run_async(build_functions(cfg, registry, set(functions) or None)))


@main.command()
def schema() -> None:
    """Print the config file's JSON Schema."""
    import json

    from triggerd.config.load import json_schema

    click.echo(json.dumps(json_schema(Registry.discover()), indent=2))


@main.command()
@click.argument("function")
@click.option(
    "--event",
    "-e",
    "event",
    default=None,
    help="Event JSON file, or - for standard input; default: standard input when it is a "
    "pipe, else {}",
)
@click.option(
    "--env-vars",
    "-n",
    "env_vars",
    default=None,
    type=click.Path(dir_okay=False, readable=False),
    help="JSON file overriding the function's environment, in SAM's format: "
    '{"FUNCTION": {"VAR": "value"}, "Parameters": {"VAR": "value"}} (Parameters: every '
    "function; the function's own entry wins)",
)
@config_option_beside_argument
@translation_source_options
def invoke(
    function: str,
    event: str | None,
    env_vars: str | None,
    config_path: str | None,
    sam_file: str | None,
    serverless_file: str | None,
    overrides_path: str | None,
    parameters: tuple[str, ...],
    options: tuple[str, ...],
) -> None:
    """Invoke FUNCTION once with an event; print its response (exit 1 on a function error).
    With --sam or --serverless, FUNCTION of that file's translation (a SAM logical id)."""
    from triggerd.telemetry.logs import setup_logging

    registry = Registry.discover()
    cfg, path = _config_or_translation(
        config_path, sam_file, serverless_file, overrides_path, parameters, options, registry
    )
    setup_logging(cfg.daemon.log_level, "text")
    if function not in cfg.functions:
        click.echo(f"triggerd: no function {function!r} in {path}", err=True)
        sys.exit(2)
    if env_vars is not None:
        from triggerd.cli.envvars import EnvVarsError, with_env_vars

        try:
            cfg = with_env_vars(cfg, function, Path(env_vars))
        except EnvVarsError as exc:
            click.echo(f"triggerd: {exc}", err=True)
            sys.exit(2)
    raw = _event_bytes(event)
    import orjson

    try:
        orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        click.echo(f"triggerd: the event is not valid JSON: {exc}", err=True)
        sys.exit(2)
    sys.exit(_run_async(_invoke(cfg, registry, function, raw)))


def _event_bytes(event: str | None) -> bytes:
    """The event: a file, standard input (`-`, or a pipe), or `{}` on a terminal, said on
    stderr, as `sam local invoke` does (reading a terminal would wait silently)."""
    if event is None and sys.stdin.isatty():
        click.echo("triggerd: no --event given: invoking with an empty event {}", err=True)
        return b"{}"
    if event is None or event == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(event).read_bytes()
    except OSError as exc:
        click.echo(f"triggerd: cannot read the event file {event}: {exc.strerror}", err=True)
        sys.exit(2)


async def _invoke(cfg: ConfigBase, registry: Registry, function: str, payload: bytes) -> int:
    import asyncio

    if cfg.daemon.work_dir:
        return await _invoke_in(cfg, registry, function, payload, Path(cfg.daemon.work_dir))
    # No work_dir: a scratch directory of our own, removed afterwards (never the cwd).
    scratch = await asyncio.to_thread(tempfile.mkdtemp, prefix="triggerd-invoke-")
    try:
        return await _invoke_in(cfg, registry, function, payload, Path(scratch))
    finally:
        await asyncio.to_thread(shutil.rmtree, scratch, ignore_errors=True)


async def _invoke_in(
    cfg: ConfigBase, registry: Registry, function: str, payload: bytes, work_dir: Path
) -> int:
    from triggerd.daemon.app import Daemon

    fcfg = cfg.function_map[function]
    plugin = registry.backend(getattr(fcfg, "backend", "local"))
    ctx = dataclasses.replace(
        Daemon(cfg, registry).context(function), work_dir=str(work_dir / function), metrics=None
    )
    backend = plugin.create(fcfg, ctx)
    try:
        await backend.start()
    except ConfigError as exc:
        return say_config_error(exc)
    except OperatorError as exc:
        return say_operator_error(exc)
    except PermanentError as exc:
        click.echo(f"triggerd: function {function} cannot start: {exc}", err=True)
        await backend.stop()
        return 1
    try:
        result = await backend.invoke(payload)
    finally:
        await backend.stop()
    sys.stdout.buffer.write(result.payload + b"\n")
    sys.stdout.flush()
    return 0 if result.outcome is Outcome.OK else 1


@main.command()
@click.argument("trigger")
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Directory for the fixtures (created): <trigger>-0001.json, ...",
)
@click.option(
    "--count",
    "-n",
    type=click.IntRange(1, 10_000),
    default=10,
    show_default=True,
    help="Stop after this many invocation payloads",
)
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(0.1, 86_400),
    default=60.0,
    show_default=True,
    help="Stop after this many seconds, with fewer payloads",
)
@config_option_beside_argument
@translation_source_options
def record(
    trigger: str,
    out_dir: str,
    count: int,
    timeout_s: float,
    config_path: str | None,
    sam_file: str | None,
    serverless_file: str | None,
    overrides_path: str | None,
    parameters: tuple[str, ...],
    options: tuple[str, ...],
) -> None:
    """Capture the events TRIGGER would deliver as JSON fixtures, one file per invocation
    payload, without invoking its function and without acknowledging anything at its source
    (docs/cli.md#record says what each source sees). Replay one with `triggerd invoke
    FUNCTION --event FILE`. With --sam or --serverless, TRIGGER of that file's translation."""
    registry = Registry.discover()
    cfg, _label = _config_or_translation(
        config_path, sam_file, serverless_file, overrides_path, parameters, options, registry
    )
    from triggerd.daemon.record import record as record_trigger
    from triggerd.telemetry.logs import setup_logging

    setup_logging(cfg.daemon.log_level, "text")

    async def go() -> int:
        try:
            files = await record_trigger(
                cfg, registry, trigger, Path(out_dir), count=count, timeout_s=timeout_s
            )
        except ConfigError as exc:
            return say_config_error(exc)
        except (MissingExtraError, UnknownPluginError) as exc:
            click.echo(f"triggerd: {exc}", err=True)
            return int(ExitCode.CONFIG_INVALID)
        except OperatorError as exc:
            return say_operator_error(exc)
        for file in files:
            click.echo(str(file))
        click.echo(
            f"triggerd: recorded {len(files)} event(s) of {trigger} into {out_dir}", err=True
        )
        return 0

    sys.exit(_run_async(go()))


@main.command("generate-event", add_help_option=False)
@click.argument("source", required=False)
@click.option(
    "--set",
    "-s",
    "options",
    multiple=True,
    metavar="KEY=VALUE",
    help="Sample option, e.g. --set key=photos/a.jpg (`generate-event SOURCE --help` lists them)",
)
@click.option("--help", "-h", "show_help", is_flag=True, help="Show SOURCE's options and exit")
@click.pass_context
def generate_event(
    ctx: click.Context, source: str | None, options: tuple[str, ...], show_help: bool
) -> None:
    """Print a sample event in AWS's shape for a SOURCE type (the shape the source itself
    builds), or for a service triggerd serves (`eventbridge`: an event as a bus delivers it;
    `sns`: what a topic's subscribers get); `generate-event SOURCE --help` lists SOURCE's
    options."""
    registry = Registry.discover()
    if source is None:
        click.echo(ctx.get_help())
        from triggerd.config.samples import sample_names

        names = sample_names(registry)
        click.echo(f"\nSources: {', '.join(names)}")
        sys.exit(0 if show_help else 2)
    make, known_options = _sample_maker(registry, source)
    if show_help:
        click.echo(sample_help(ctx, source, known_options))
        return
    opts: dict[str, str] = {}
    for item in options:
        key, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--set")
        opts[key] = value
    from triggerd.config.samples import unknown_options

    unknown = unknown_options(opts, known_options)
    if unknown:
        known = ", ".join(known_options) or "none"
        click.echo(
            f"triggerd: unknown option(s) for {source}: {', '.join(unknown)}; known: {known}",
            err=True,
        )
        sys.exit(2)
    try:
        sample = make(opts)
    except (ConfigError, ValueError) as exc:
        click.echo(f"triggerd: {exc}", err=True)
        sys.exit(2)
    import json

    click.echo(json.dumps(sample, indent=2))


def _sample_maker(
    registry: Registry, source: str
) -> tuple[Callable[[Mapping[str, str]], Any], Mapping[str, str]]:
    """The sample builder for `source` and the options it takes; exit 2 with one line for
    a source without one."""
    from triggerd.config.samples import sample_maker, sample_names

    try:
        make, options = sample_maker(registry, source)
    except UnknownPluginError:
        known = ", ".join(sample_names(registry))
        click.echo(f"triggerd: unknown source type {source!r} (known: {known})", err=True)
        sys.exit(2)
    except MissingExtraError as exc:
        click.echo(f"triggerd: {exc}", err=True)
        sys.exit(2)
    if make is None:
        click.echo(f"triggerd: source {source!r} has no sample event", err=True)
        sys.exit(2)
    return make, options


def sample_help(ctx: click.Context, source: str, options: Mapping[str, str]) -> str:
    """`generate-event SOURCE --help`: the usage and SOURCE's options with their help."""
    lines = [
        f"Usage: {ctx.command_path} {source} [--set KEY=VALUE]...",
        "",
        f"  Print a sample {source} event in AWS's shape.",
        "",
        f"Options of {source} (--set KEY=VALUE):" if options else f"{source} takes no options.",
    ]
    width = max((len(name) for name in options), default=0)
    lines += [f"  {name.ljust(width)}  {text}" for name, text in options.items()]
    return "\n".join(lines)


@main.command()
@config_option
@output_option
def functions(config_path: str | None, output: str) -> None:
    """The config's functions: backend, runtime, memory, timeout and their triggers."""
    from triggerd.cli.output import emit

    cfg = _load(resolve_config(None, config_path), Registry.discover())
    columns = ["function", "backend", "runtime", "memory_mb", "timeout_s", "triggers"]
    records: list[dict[str, Any]] = []
    for name, fn in cfg.function_map.items():
        records.append(
            {
                "function": name,
                "backend": getattr(fn, "backend", "?"),
                "runtime": getattr(fn, "runtime", None),
                "memory_mb": fn.memory_mb,
                "timeout_s": fn.timeout_s,
                "triggers": [
                    cfg.trigger_name(i)
                    for i, t in enumerate(cfg.trigger_list)
                    if t.function == name
                ],
            }
        )
    rows = [[*list(r.values())[:-1], ", ".join(r["triggers"])] for r in records]
    emit(output, columns=columns, rows=rows, empty="no functions", records=records)


def _with_store(
    config_path: str | None,
    action: Callable[[ConfigBase, StateStore], Awaitable[int]],
    *,
    must_exist: bool = True,
    precheck: Callable[[ConfigBase], int | None] | None = None,
) -> None:
    """Run `action` against the config's state store and exit with its status. A missing
    store is reported, never created, unless `must_exist` is False (plugin commands that
    write a checkpoint, as the daemon would). `precheck`: run on the config before the store
    is touched; a status it returns is the exit status (an operator's mistake found before a
    store could be created for nothing)."""
    from triggerd.state.factory import create_state_store, sqlite_path
    from triggerd.state.pgschema import is_postgres_url
    from triggerd.state.sqlite import MEMORY_PATH

    cfg = _load(resolve_config(None, config_path), Registry.discover())
    if precheck is not None:
        status = precheck(cfg)
        if status is not None:
            sys.exit(status)
    if is_postgres_url(cfg.daemon.state):
        sys.exit(_run_async(_with_postgres_store(cfg, action, must_exist=must_exist)))
    try:
        path = sqlite_path(cfg.daemon.state)
    except ConfigError as exc:
        click.echo(f"triggerd: {exc}", err=True)
        sys.exit(ExitCode.CONFIG_INVALID)
    if must_exist and path != MEMORY_PATH and not os.path.exists(path):
        click.echo(
            f"triggerd: the state store {path} does not exist (the daemon has not run with "
            "this config, or daemon.state names another file)",
            err=True,
        )
        sys.exit(ExitCode.STATE_MISSING)
    if must_exist and path != MEMORY_PATH:
        from triggerd.cli.readstate import require_store

        try:
            require_store(path)  # before the store's open() would create the schema
        except OperatorError as exc:
            sys.exit(say_operator_error(exc))

    async def go() -> int:
        store = create_state_store(cfg.daemon.state)
        return await _open_and_act(cfg, store, store.open, action)

    sys.exit(_run_async(go()))


async def _with_postgres_store(
    cfg: ConfigBase, action: Callable[[ConfigBase, StateStore], Awaitable[int]], *, must_exist: bool
) -> int:
    """`_with_store` on a PostgreSQL store: with `must_exist`, a database without triggerd's
    schema is refused rather than given one."""
    from triggerd.state.factory import postgres_store

    store = postgres_store(cfg.daemon.state)
    open_store = store.open_without_migrating if must_exist else store.open
    return await _open_and_act(cfg, store, open_store, action)


async def _open_and_act(
    cfg: ConfigBase,
    store: StateStore,
    open_store: Callable[[], Awaitable[None]],
    action: Callable[[ConfigBase, StateStore], Awaitable[int]],
) -> int:
    """Open `store` with `open_store`, run `action` on it and close it: the exit status of
    `action`, or of the operator error or unwritable store it met (reported on stderr)."""
    from triggerd.state.sqlite import StateStoreError

    try:
        await open_store()
    except OperatorError as exc:
        return say_operator_error(exc)
    try:
        return await action(cfg, store)
    except OperatorError as exc:
        return say_operator_error(exc)
    except StateStoreError as exc:
        click.echo(f"triggerd: {exc}", err=True)
        return int(ExitCode.STATE_UNWRITABLE)
    finally:
        await store.close()


@main.command()
@config_option
@output_option
def status(config_path: str | None, output: str) -> None:
    """Triggers and Invoke API async queues with their queue depth and dead-lettered
    records (the state store is only read), the daemon's readiness per trigger, and the lag
    of partitioned sources. Exit 0; 9 when the daemon does not answer; 10 when a trigger
    is failing; else 3-6 when the state store cannot be read (the daemon is asked anyway)."""
    from triggerd.cli.status import needs_loop, run_status, run_status_now

    registry = Registry.discover()
    cfg = _load(resolve_config(None, config_path), registry)
    if not needs_loop(cfg, registry):
        sys.exit(run_status_now(cfg, output))
    sys.exit(_run_async(run_status(cfg, registry, output)))
