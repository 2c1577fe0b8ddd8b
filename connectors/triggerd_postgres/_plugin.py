"""The plugin of `triggerd_postgres` (see the package): its config model, `create` and
the hooks the CLI uses."""

from __future__ import annotations

from typing import Any

from triggerd.types import (
    ConfigError,
    Source,
    SourceCommand,
    SourceContext,
    SourcePlugin,
)

from . import SAMPLE_OPTIONS, sample_event
from .config import PostgresSourceConfig

__all__ = ["PostgresSourceConfig", "check", "create", "drop_slot", "plugin", "status"]


def _config(config: Any) -> PostgresSourceConfig:
    if not isinstance(config, PostgresSourceConfig):
        raise TypeError(f"expected PostgresSourceConfig, got {type(config).__name__}")
    return config


def create(config: Any, ctx: SourceContext) -> Source:
    from .source import PostgresSource

    return PostgresSource(_config(config), ctx)


async def status(config: Any, trigger: str) -> str | None:
    """The slot's WAL lag (behind its confirmed position) and the WAL it retains."""
    from . import server

    cfg = _config(config)
    slot = cfg.slot_name(trigger)
    conn = await server.connect(cfg, trigger, "status")
    try:
        lag = await server.slot_lag(conn, slot)
    finally:
        await conn.close()
    if lag is None:
        return f"slot {slot} does not exist (it is created when the daemon starts)"
    if lag.invalidation is not None:
        return server.invalidated_message(trigger, slot, lag.invalidation)
    at_risk = ""
    if lag.wal_status == "unreserved":
        at_risk = " (past max_slot_wal_keep_size: the next checkpoint invalidates it)"
    return (
        f"slot {slot}: {_size(lag.lag_bytes)} of WAL behind, {_size(lag.retained_bytes)} "
        f"of WAL retained{at_risk}"
    )


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"


async def check(config: Any, trigger: str) -> None:
    """wal_level, REPLICATION, the tables and their replica identities, and a slot the
    server invalidated (ConfigError)."""
    from . import server

    cfg = _config(config)
    conn = await server.connect(cfg, trigger, "validate")
    try:
        await server.check_server(conn, cfg, trigger)
        await server.check_tables(conn, cfg, trigger)
        slot = cfg.slot_name(trigger)
        lag = await server.slot_lag(conn, slot)
        if lag is not None and lag.invalidation is not None:
            raise ConfigError([server.invalidated_message(trigger, slot, lag.invalidation)])
    finally:
        await conn.close()


async def drop_slot(config: Any, trigger: str, state: Any) -> str:
    """Drop the trigger's replication slot and publication (the daemon must be stopped), and
    its position in the state store."""
    from . import server
    from .source import POSITION_KEY

    cfg = _config(config)
    slot, publication = cfg.slot_name(trigger), cfg.publication_name(trigger)
    conn = await server.connect(cfg, trigger, "drop-slot")
    try:
        dropped = await server.drop_slot_and_publication(conn, slot, publication)
    finally:
        await conn.close()
    await state.set_checkpoints(trigger, {POSITION_KEY: None})
    if not dropped:
        return f"nothing to drop: no slot {slot} and no publication {publication}"
    return "dropped " + " and ".join(dropped)


plugin = SourcePlugin(
    config_model=PostgresSourceConfig,
    create=create,
    sample_event=sample_event,
    sample_options=SAMPLE_OPTIONS,
    status=status,
    check=check,
    commands={
        "drop-slot": SourceCommand(
            help="Drop TRIGGER's replication slot and publication (stop the daemon first). "
            "The WAL they kept is released; changes not delivered yet are lost.",
            run=drop_slot,
        )
    },
)
