"""`triggerd state ...`: commands on the state store itself (`migrate`)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from triggerd.cli.errors import say_operator_error
from triggerd.cli.options import config_option, resolve_config
from triggerd.types import ConfigError, ExitCode, OperatorError

__all__ = ["state"]


@click.group()
def state() -> None:
    """Commands on the state store (moving it to PostgreSQL)."""


@state.command("migrate")
@click.option(
    "--to",
    "target",
    required=True,
    metavar="URL",
    help="The PostgreSQL store to copy into: postgresql://user:password@host:port/database",
)
@click.option("--force", is_flag=True, help="Empty the PostgreSQL store first if it holds state")
@config_option
def migrate(target: str, force: bool, config_path: str | None) -> None:
    """Copy the config's SQLite state (checkpoints, queued events, the DLQ index, paused
    triggers) into an empty PostgreSQL store; the daemon must be stopped. Then set
    `[daemon] state` to the PostgreSQL URL. Exit 0, 2 (bad URL or config), 3 (no SQLite
    store), 5 (PostgreSQL refused the user), 6 (the daemon is running), 12 (the PostgreSQL
    store is not empty: --force empties it), 1 (PostgreSQL cannot be reached)."""
    from triggerd.cli.main import _load, _run_async  # main registers this group
    from triggerd.config.plugins import Registry
    from triggerd.state.factory import postgres_store, sqlite_path
    from triggerd.state.pgschema import is_postgres_url

    cfg = _load(resolve_config(None, config_path), Registry.discover())
    try:
        if not is_postgres_url(target):
            raise ConfigError(["daemon.state: give a postgresql://user@host:port/database URL"])
        store = postgres_store(target)
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(f"triggerd: {problem.replace('daemon.state: ', '--to: ', 1)}", err=True)
        sys.exit(ExitCode.CONFIG_INVALID)
    try:
        source = sqlite_path(cfg.daemon.state)
    except ConfigError as exc:  # already a PostgreSQL store: nothing to migrate from
        for problem in exc.problems:
            click.echo(f"triggerd: {problem}: migrate copies an SQLite store", err=True)
        sys.exit(ExitCode.CONFIG_INVALID)
    work_dir = Path(cfg.daemon.work_dir) if cfg.daemon.work_dir else Path(source).parent / "run"

    async def go() -> int:
        from triggerd.cli.state_migrate import migrate_sqlite_to_postgres

        try:
            counts = await migrate_sqlite_to_postgres(source, work_dir, store, force=force)
        except OperatorError as exc:
            return say_operator_error(exc)
        click.echo(
            f"copied {counts.checkpoints} checkpoints, {counts.events} queued events, "
            f"{counts.dlq_entries} DLQ entries, {counts.paused} paused triggers, "
            f"{counts.sns_resources} SNS topics/subscriptions and {counts.archived_events} "
            f"archived bus events from "
            f"{source} to {store.display}; now set [daemon] state to the PostgreSQL URL"
        )
        return 0

    sys.exit(_run_async(go()))
