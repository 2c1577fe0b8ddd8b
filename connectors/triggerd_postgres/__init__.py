"""The `postgres` source: change data capture from PostgreSQL through logical decoding (the
built-in `pgoutput` plugin), delivered as DynamoDB Streams records so that DynamoDB Streams
handlers run unchanged. Also `triggerd postgres drop-slot TRIGGER`, a line in `triggerd
status` (slot lag and retained WAL) and checks in `triggerd validate`.

Importing this package is cheap: asyncpg is imported only when a connection is made.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from triggerd.types import (
    JSONDict,
    Source,
    SourceCommand,
    SourceContext,
    SourcePlugin,
)

from .config import PostgresSourceConfig

__all__ = ["PostgresSourceConfig", "check", "create", "drop_slot", "plugin", "status"]


def _config(config: Any) -> PostgresSourceConfig:
    if not isinstance(config, PostgresSourceConfig):
        raise TypeError(f"expected PostgresSourceConfig, got {type(config).__name__}")
    return config


def create(config: Any, ctx: SourceContext) -> Source:
    from .source import PostgresSource

    return PostgresSource(_config(config), ctx)


SAMPLE_OPTIONS = {
    "table": "schema.table (default public.orders)",
    "event": "INSERT (default), MODIFY or REMOVE",
    "id": "the row's key (default 101)",
    "view": "stream view: KEYS_ONLY, NEW_IMAGE, OLD_IMAGE or NEW_AND_OLD_IMAGES (default)",
    "database": "database name in eventSourceARN (default postgres)",
    "slot": "replication slot name in eventSourceARN (default triggerd_orders)",
    "region": "awsRegion (default us-east-1)",
    "account": "account id in the ARNs (default 123456789012)",
}


def sample_event(options: Mapping[str, str]) -> JSONDict:
    from .shape import sample_event as sample

    return sample(options)


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
    return (
        f"slot {slot}: {_size(lag.lag_bytes)} of WAL behind, {_size(lag.retained_bytes)} "
        "of WAL retained"
    )


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"


async def check(config: Any, trigger: str) -> None:
    """wal_level, REPLICATION, the tables and their replica identities (ConfigError)."""
    from . import server

    cfg = _config(config)
    conn = await server.connect(cfg, trigger, "validate")
    try:
        await server.check_server(conn, cfg, trigger)
        await server.check_tables(conn, cfg, trigger)
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
