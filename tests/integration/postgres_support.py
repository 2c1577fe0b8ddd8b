"""Helpers for tests of the postgres source against the session's throwaway cluster: unique
table names, an autocommit connection, a started source (its slot and publication dropped
afterwards), and receiving with acks."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from triggerd.state.base import StateStore
from triggerd.types import Record, SourceContext, SystemClock
from triggerd_postgres.config import PostgresSourceConfig
from triggerd_postgres.source import PostgresSource

log = logging.getLogger("test.postgres")


def unique(prefix: str = "t") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


@asynccontextmanager
async def connect(cluster: Any) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(cluster.dsn)
    try:
        yield conn
    finally:
        await conn.close()


def source_config(cluster: Any, **extra: Any) -> PostgresSourceConfig:
    data: dict[str, Any] = {
        "type": "postgres",
        "dsn": cluster.dsn,
        "poll_interval_s": 0.02,
        "max_poll_interval_s": 0.1,
        **extra,
    }
    return PostgresSourceConfig.model_validate(data)


async def drop(cluster: Any, slot: str, publication: str) -> None:
    async with connect(cluster) as conn:
        for _ in range(50):
            active = await conn.fetchval(
                "SELECT active FROM pg_replication_slots WHERE slot_name = $1", slot
            )
            if not active:
                break
            await asyncio.sleep(0.1)
        await conn.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
            "WHERE slot_name = $1",
            slot,
        )
        await conn.execute(f'DROP PUBLICATION IF EXISTS "{publication}"')


@asynccontextmanager
async def pg_source(
    cluster: Any, store: StateStore, trigger: str | None = None, **extra: Any
) -> AsyncIterator[PostgresSource]:
    trigger = trigger or unique("trig")
    cfg = source_config(cluster, **extra)
    source = PostgresSource(
        cfg, SourceContext(trigger=trigger, state=store, clock=SystemClock(), log=log)
    )
    await source.start()
    try:
        yield source
    finally:
        await source.stop()
        await drop(cluster, source.slot, source.publication)


async def receive_n(
    source: PostgresSource, count: int, timeout: float = 30.0, *, ack: bool = True
) -> list[Record]:
    """Receive until `count` records arrived (acking them), or fail after `timeout`."""
    got: list[Record] = []
    async with asyncio.timeout(timeout):
        while len(got) < count:
            records = await source.receive(count - len(got), 0.2)
            if ack and records:
                await source.ack(records)
            got += records
    return got


async def slot_confirmed(cluster: Any, slot: str) -> int:
    async with connect(cluster) as conn:
        return int(
            await conn.fetchval(
                "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = $1", slot
            )
        )


def ddb(records: list[Record]) -> list[dict[str, Any]]:
    return [r.payload["dynamodb"] for r in records]
