"""The `triggerd` command line: run, validate, schema, invoke, generate-event, dlq, status,
and the commands of source plugins (`triggerd postgres drop-slot`)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import signal
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import click
import orjson

from triggerd import __version__
from triggerd.cli.functions import build_functions, check_functions
from triggerd.cli.sources import SourceCommandsGroup, check_sources, status_lines
from triggerd.config.load import json_schema, load_config
from triggerd.config.model import ConfigBase
from triggerd.config.plugins import Registry, UnknownPluginError, missing_extra
from triggerd.state.base import NewEvent, StateStore
from triggerd.state.factory import create_state_store
from triggerd.telemetry.logs import setup_logging
from triggerd.types import (
    ConfigError,
    ExitCode,
    MissingExtraError,
    OperatorError,
    Outcome,
)

CONFIG_ENV = "TRIGGERD_CONFIG"
config_option = click.option(
    "--config",
    "-c",
    "config_path",
    envvar=CONFIG_ENV,
    default="triggerd.toml",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="Config file (TOML or YAML)",
)


def _run_async(coro: Coroutine[Any, Any, int]) -> int:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return int(uvloop.run(coro))


def _load(path: str, registry: Registry) -> ConfigBase:
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        reason = exc.strerror or str(exc)
        click.echo(f"triggerd: cannot read the config file {path}: {reason}", err=True)
        sys.exit(ExitCode.CONFIG_UNREADABLE)
    try:
        return load_config(path, registry)
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(f"{path}: {problem}", err=True)
        sys.exit(2)


@click.group(cls=SourceCommandsGroup)
@click.version_option(__version__, prog_name="triggerd")
def main() -> None:
    """AWS Lambda's event sources, batching, retries and destinations for any infrastructure."""


@main.command()
@click.argument("config", type=click.Path())
@click.option(
    "--accept-fresh-state",
    is_flag=True,
    help="Start with a new, empty state store although triggerd ran with another one before "
    "(its queued events and checkpoints are not carried over)",
)
def run(config: str, accept_fresh_state: bool) -> None:
    """Run the daemon on CONFIG until SIGTERM or SIGINT."""
    registry = Registry.discover()
    cfg = _load(config, registry)
    setup_logging(cfg.daemon.log_level, cfg.daemon.log_format)  # type: ignore[arg-type]
    from triggerd.daemon.gctune import tune_gc

    tune_gc()
    sys.exit(_run_async(_serve(cfg, registry, accept_fresh_state=accept_fresh_state)))


def _summary(cfg: ConfigBase, listen: str | None) -> str:
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
    lines.append(f"  listening on http://{listen}" if listen else "  HTTP server disabled")
    return "\n".join(lines)


async def _serve(cfg: ConfigBase, registry: Registry, *, accept_fresh_state: bool = False) -> int:
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
    daemon = Daemon(cfg, registry, accept_fresh_state=accept_fresh_state)

    async def announce() -> None:
        await daemon.ready.wait()
        click.echo(_summary(cfg, daemon.listen_address))

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
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    return 0


@main.command()
@click.argument("config", type=click.Path(dir_okay=False))
def validate(config: str) -> None:
    """Check CONFIG; exit 0, or 2 with one line per problem. Sources that can also check
    their live systems (e.g. a table's replica identity) do; unreachable ones are warnings."""
    registry = Registry.discover()
    cfg = _load(config, registry)
    problems = missing_extras(cfg)
    found, warnings = asyncio.run(check_sources(cfg, registry))
    problems += found
    problems += asyncio.run(check_functions(cfg, registry))
    for line in warnings:
        click.echo(f"{config}: warning: {line}", err=True)
    for line in problems:
        click.echo(f"{config}: {line}", err=True)
    if problems:
        sys.exit(2)
    click.echo(f"{config}: ok ({len(cfg.functions)} functions, {len(cfg.trigger_list)} triggers)")


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
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--function", "-f", "functions", multiple=True, help="Only this function")
def build(config: str, functions: tuple[str, ...]) -> None:
    """Prepare CONFIG's functions ahead of `run`: extract .zip code, merge layers, install
    the runtimes' packages and each function's requirements (unchanged ones cost nothing).
    Exit 0, or 1 naming each function that failed and why."""
    registry = Registry.discover()
    cfg = _load(config, registry)
    unknown = [f for f in functions if f not in cfg.function_map]
    if unknown:
        click.echo(f"triggerd: no function {unknown[0]!r} in {config}", err=True)
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
    default="-",
    show_default=True,
    help="Event JSON file, or - for standard input",
)
@config_option
def invoke(function: str, event: str, config_path: str) -> None:
    """Invoke FUNCTION once with an event; print its response (exit 1 on a function error)."""
    registry = Registry.discover()
    cfg = _load(config_path, registry)
    setup_logging(cfg.daemon.log_level, "text")
    if function not in cfg.functions:
        click.echo(f"triggerd: no function {function!r} in {config_path}", err=True)
        sys.exit(2)
    raw = sys.stdin.buffer.read() if event == "-" else Path(event).read_bytes()
    try:
        orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        click.echo(f"triggerd: the event is not valid JSON: {exc}", err=True)
        sys.exit(2)
    sys.exit(_run_async(_invoke(cfg, registry, function, raw)))


async def _invoke(cfg: ConfigBase, registry: Registry, function: str, payload: bytes) -> int:
    from triggerd.daemon.app import Daemon

    fcfg = cfg.function_map[function]
    plugin = registry.backend(getattr(fcfg, "backend", "local"))
    ctx = dataclasses.replace(
        Daemon(cfg, registry).context(function),
        work_dir=str(Path(cfg.daemon.work_dir or ".triggerd-invoke") / function),
        metrics=None,
    )
    backend = plugin.create(fcfg, ctx)
    try:
        await backend.start()
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(f"triggerd: {problem}", err=True)
        return 2
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
    """Print a sample event in AWS's shape for a SOURCE type."""
    registry = Registry.discover()
    try:
        plugin = registry.source(source)
    except (UnknownPluginError, MissingExtraError) as exc:
        click.echo(f"triggerd: {exc}", err=True)
        sys.exit(2)
    if plugin.sample_event is None:
        click.echo(f"triggerd: source {source!r} has no sample event", err=True)
        sys.exit(2)
    opts: dict[str, str] = {}
    for item in options:
        key, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--set")
        opts[key] = value
    try:
        sample = plugin.sample_event(opts)
    except (ConfigError, ValueError) as exc:
        click.echo(f"triggerd: {exc}", err=True)
        sys.exit(2)
    click.echo(json.dumps(sample, indent=2))


@main.group()
def dlq() -> None:
    """Inspect and replay records written to on-failure destinations."""


def _with_store(
    config_path: str, action: Callable[[ConfigBase, StateStore], Awaitable[int]]
) -> None:
    """Run `action` against the config's state store and exit with its status."""
    cfg = _load(config_path, Registry.discover())

    async def go() -> int:
        store = create_state_store(cfg.daemon.state)
        try:
            await store.open()
        except OperatorError as exc:
            click.echo(f"triggerd: {exc}", err=True)
            return int(exc.exit_code)
        try:
            return await action(cfg, store)
        finally:
            await store.close()

    sys.exit(_run_async(go()))


def _when(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(epoch)) + "Z"


@dlq.command("list")
@click.option("--trigger", "-t", default=None)
@click.option("--limit", "-n", default=50, show_default=True)
@config_option
def dlq_list(trigger: str | None, limit: int, config_path: str) -> None:
    """List dead-lettered records, newest first."""

    async def action(cfg: ConfigBase, store: StateStore) -> int:
        for e in await store.dlq_list(trigger, limit):
            click.echo(
                f"{e.id}\t{_when(e.created_at)}\t{e.trigger}\t{e.function}\t{e.condition}\t"
                f"{e.destination}"
            )
        return 0

    _with_store(config_path, action)


@dlq.command("show")
@click.argument("entry_id", type=int)
@config_option
def dlq_show(entry_id: int, config_path: str) -> None:
    """Print one dead-lettered record."""

    async def action(cfg: ConfigBase, store: StateStore) -> int:
        entry = await store.dlq_get(entry_id)
        if entry is None:
            click.echo(f"triggerd: no DLQ entry {entry_id}", err=True)
            return 1
        click.echo(json.dumps(orjson.loads(entry.record), indent=2))
        return 0

    _with_store(config_path, action)


@dlq.command("replay")
@click.argument("entry_id", type=int)
@config_option
def dlq_replay(entry_id: int, config_path: str) -> None:
    """Put an asynchronous invocation's event back on its trigger's queue."""

    async def action(cfg: ConfigBase, store: StateStore) -> int:
        entry = await store.dlq_get(entry_id)
        if entry is None:
            click.echo(f"triggerd: no DLQ entry {entry_id}", err=True)
            return 1
        record = orjson.loads(entry.record)
        if "requestPayload" not in record:
            click.echo(
                "triggerd: only asynchronous invocation records can be replayed "
                "(this one carries batch metadata, not the event)",
                err=True,
            )
            return 1
        now = time.time()
        event = NewEvent(
            trigger=entry.trigger,
            function=entry.function,
            payload=orjson.dumps(record["requestPayload"]),
            request_id=str(uuid.uuid4()),
            enqueued_at=now,
            available_at=now,
        )
        await store.enqueue([event])
        await store.dlq_delete(entry_id)
        click.echo(f"replayed DLQ entry {entry_id} onto trigger {entry.trigger}")
        return 0

    _with_store(config_path, action)


@main.command()
@config_option
def status(config_path: str) -> None:
    """Triggers with their async queue depth and dead-lettered records, daemon health, and
    the lag of partitioned sources (Kafka) per partition."""

    async def action(cfg: ConfigBase, store: StateStore) -> int:
        click.echo(f"{'trigger':<24} {'source':<10} {'function':<20} {'queued':>7} {'dlq':>5}")
        for i, trig in enumerate(cfg.trigger_list):
            name = cfg.trigger_name(i)
            depth = await store.queue_depth(name)
            dead = len(await store.dlq_list(name, 10_000))
            src = str(getattr(trig.source_config, "type", "?"))
            flag = "" if trig.enabled else " (disabled)"
            click.echo(f"{name:<24} {src:<10} {trig.function:<20} {depth:>7} {dead:>5}{flag}")
        for line in await status_lines(cfg, Registry.discover()):
            click.echo(line)
        if cfg.daemon.listen:
            click.echo(f"daemon at {cfg.daemon.listen}: {await _health(cfg.daemon.listen)}")
            _echo_lag(await _lag(cfg.daemon.listen))
        return 0

    _with_store(config_path, action)


def _echo_lag(triggers: dict[str, Any]) -> None:
    """Per partition of each source that reports it: lag in records and seconds."""
    rows = [(name, t, p) for name, t in triggers.items() for p in t.get("partitions", [])]
    if not rows:
        return
    click.echo(f"{'trigger':<24} {'partition':<32} {'committed':>10} {'lag':>8} {'lag_s':>8}")
    for name, _, p in rows:
        offset = "-" if p["committed_offset"] is None else p["committed_offset"]
        records = "-" if p.get("lag_records") is None else p["lag_records"]
        click.echo(
            f"{name:<24} {p['partition']:<32} {offset:>10} {records:>8} {p['lag_seconds']:>8.1f}"
        )
    for name, t in triggers.items():
        click.echo(f"{name}: {t.get('rebalances', 0)} rebalance(s)")


async def _lag(listen: str) -> dict[str, Any]:
    import aiohttp

    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session,
            session.get(f"http://{listen}/statusz") as resp,
        ):
            body = await resp.json()
            triggers = body.get("triggers") if isinstance(body, dict) else None
            return triggers if isinstance(triggers, dict) else {}
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return {}


async def _health(listen: str) -> str:
    import aiohttp

    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session,
            session.get(f"http://{listen}/healthz") as resp,
        ):
            body = await resp.json()
            return str(body.get("status", resp.status))
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return "not reachable"
