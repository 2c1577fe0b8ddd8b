"""The `triggerd` command line: run, validate, schema, invoke, generate-event, dlq, status,
and the commands of source plugins (`triggerd postgres drop-slot`)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any

import click
import orjson

from triggerd import __version__
from triggerd.cli import control
from triggerd.cli.dlq_commands import dlq
from triggerd.cli.functions import build_functions, check_functions
from triggerd.cli.options import (
    config_argument,
    config_option,
    config_option_beside_argument,
    resolve_config,
)
from triggerd.cli.output import emit, output_option
from triggerd.cli.paths import path_problems, raw_path_problems
from triggerd.cli.sources import CONNECT_TIMEOUT_S, SourceCommandsGroup, connect_sources
from triggerd.cli.status import run_status
from triggerd.config.load import json_schema, load_config
from triggerd.config.model import ConfigBase
from triggerd.config.plugins import Registry, UnknownPluginError, missing_extra
from triggerd.state.base import StateStore
from triggerd.state.factory import create_state_store, sqlite_path
from triggerd.state.sqlite import MEMORY_PATH, StateStoreError
from triggerd.telemetry.logs import setup_logging
from triggerd.types import (
    ConfigError,
    ExitCode,
    JSONDict,
    MissingExtraError,
    OperatorError,
    Outcome,
    PermanentError,
)

#: `config_option` and `resolve_config` live in `options`; importable from here as before.
__all__ = ["config_option", "main", "resolve_config"]


def _run_async(coro: Coroutine[Any, Any, int]) -> int:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return int(uvloop.run(coro))


def _load(path: str, registry: Registry, also: Callable[[], list[str]] | None = None) -> ConfigBase:
    """The config, or exit 2 with one line per problem (and those `also` finds in the
    invalid file: validate's paths) or exit 8 when the file cannot be read."""
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


@click.group(cls=SourceCommandsGroup)
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
def run(config: str | None, config_path: str | None, accept_fresh_state: bool) -> None:
    """Run the daemon on CONFIG until SIGTERM or SIGINT; SIGHUP reloads CONFIG."""
    # SIGHUP's default action kills the process: until the loop's handler (a reload) is
    # installed, a SIGHUP (systemd's ExecReload right after the start) is ignored.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    registry = Registry.discover()
    path = resolve_config(config, config_path)
    cfg = _load(path, registry)
    # Every missing path at once, before anything is created (the daemon would stop at the
    # first one it meets).
    problems = path_problems(cfg, state=False)
    for line in problems:
        click.echo(f"{path}: {line}", err=True)
    if problems:
        sys.exit(ExitCode.CONFIG_INVALID)
    setup_logging(cfg.daemon.log_level, cfg.daemon.log_format)  # type: ignore[arg-type]
    from triggerd.daemon.gctune import tune_gc

    tune_gc()
    sys.exit(_run_async(_serve(cfg, registry, accept_fresh_state=accept_fresh_state, path=path)))


def _summary(cfg: ConfigBase, listen: str | None, control: str | None = None) -> str:
    lines = [
        f"triggerd {__version__}: {len(cfg.functions)} function(s), "
        f"{len(cfg.trigger_list)} trigger(s); state {cfg.daemon.state}"
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
) -> int:
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
            main_task.cancel()  # a second signal forces the exit

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig.name)
    daemon = Daemon(cfg, registry, accept_fresh_state=accept_fresh_state, config_path=path)
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
        click.echo(f"triggerd: {exc}", err=True)
        return int(exc.exit_code)
    finally:
        announcer.cancel()
        await asyncio.gather(announcer, return_exceptions=True)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # not the default (exit 129) until exit
    return 0


main.add_command(control.reload)
main.add_command(control.pause)
main.add_command(control.resume)


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
    registry = Registry.discover()
    path = resolve_config(config, config_path)
    # Invalid fields hide no path problem: the file's paths are checked all the same.
    cfg = _load(path, registry, None if skip_paths else lambda: raw_path_problems(path, registry))
    problems = missing_extras(cfg)
    if not skip_paths:
        problems += path_problems(cfg)
    problems += asyncio.run(check_functions(cfg, registry))
    unreachable: list[str] = []
    if connect:
        # The clients' own log lines (aiormq's "error when creating transport") would reach
        # stderr through logging's last-resort handler; each trigger's line says it instead.
        logging.getLogger().addHandler(logging.NullHandler())
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
        f"{path}: ok ({len(cfg.functions)} functions, {len(cfg.trigger_list)} triggers{checked})"
    )


def missing_extras(cfg: ConfigBase) -> list[str]:
    """One line per connector the config uses whose extra is not installed (the client
    library would be missing only at `run`, after the functions were built)."""
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
@config_option
def invoke(function: str, event: str | None, config_path: str | None) -> None:
    """Invoke FUNCTION once with an event; print its response (exit 1 on a function error)."""
    registry = Registry.discover()
    path = resolve_config(None, config_path)
    cfg = _load(path, registry)
    setup_logging(cfg.daemon.log_level, "text")
    if function not in cfg.functions:
        click.echo(f"triggerd: no function {function!r} in {path}", err=True)
        sys.exit(2)
    raw = _event_bytes(event)
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
        for problem in exc.problems:
            click.echo(f"triggerd: {problem}", err=True)
        return 2
    except OperatorError as exc:
        click.echo(f"triggerd: {exc}", err=True)
        return int(exc.exit_code)
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


@main.command("generate-event")
@click.argument("source")
@click.option(
    "--set",
    "-s",
    "options",
    multiple=True,
    metavar="KEY=VALUE",
    help="Sample option, e.g. --set key=photos/a.jpg",
)
def generate_event(source: str, options: tuple[str, ...]) -> None:
    """Print a sample event in AWS's shape for a SOURCE type (or `sns`: what a topic's
    subscribers get)."""
    sampler = _sampler(source)
    opts: dict[str, str] = {}
    for item in options:
        key, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--set")
        opts[key] = value
    try:
        sample = sampler(opts)
    except (ConfigError, ValueError) as exc:
        click.echo(f"triggerd: {exc}", err=True)
        sys.exit(2)
    click.echo(json.dumps(sample, indent=2))


def _sampler(source: str) -> Callable[[Mapping[str, str]], JSONDict]:
    if source == "sns":
        from triggerd.fanout.sns.sample import sample_event

        return sample_event
    try:
        plugin = Registry.discover().source(source)
    except (UnknownPluginError, MissingExtraError) as exc:
        click.echo(f"triggerd: {exc}", err=True)
        sys.exit(2)
    if plugin.sample_event is None:
        click.echo(f"triggerd: source {source!r} has no sample event", err=True)
        sys.exit(2)
    return plugin.sample_event


@main.command()
@config_option
@output_option
def functions(config_path: str | None, output: str) -> None:
    """The config's functions: backend, runtime, memory, timeout and their triggers."""
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
) -> None:
    """Run `action` against the config's state store and exit with its status. A missing
    store is reported, never created, unless `must_exist` is False (plugin commands that
    write a checkpoint, as the daemon would)."""
    cfg = _load(resolve_config(None, config_path), Registry.discover())
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
            click.echo(f"triggerd: {exc}", err=True)
            sys.exit(exc.exit_code)

    async def go() -> int:
        store = create_state_store(cfg.daemon.state)
        try:
            await store.open()
        except OperatorError as exc:
            click.echo(f"triggerd: {exc}", err=True)
            return int(exc.exit_code)
        try:
            return await action(cfg, store)
        except OperatorError as exc:
            click.echo(f"triggerd: {exc}", err=True)
            return int(exc.exit_code)
        except StateStoreError as exc:
            click.echo(f"triggerd: {exc}", err=True)
            return int(ExitCode.STATE_UNWRITABLE)
        finally:
            await store.close()

    sys.exit(_run_async(go()))


main.add_command(dlq)


@main.command()
@config_option
@output_option
def status(config_path: str | None, output: str) -> None:
    """Triggers and Invoke API async queues with their queue depth and dead-lettered
    records (the state store is only read), the daemon's readiness per trigger, and the lag
    of partitioned sources. Exit 0; 9 when the daemon does not answer; 10 when a trigger
    is failing; else 3-6 when the state store cannot be read (the daemon is asked anyway)."""
    registry = Registry.discover()
    cfg = _load(resolve_config(None, config_path), registry)
    sys.exit(_run_async(run_status(cfg, registry, output)))
