"""A slot the server invalidates (it fell further behind than `max_slot_wal_keep_size`, and a
checkpoint removed the WAL it had not delivered): a warning while it is at risk, then one line
saying what was lost and what to do, at once and at every start, instead of a traceback per
retry for ever; `triggerd postgres drop-slot` lets the trigger start afresh."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from tests.integration.postgres_support import connect, pg_source, receive_n, unique
from triggerd.types import ConfigError, PermanentError, SourceContext, SystemClock
from triggerd_postgres import plugin
from triggerd_postgres.source import PostgresSource

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


async def fall_behind(cluster: Any) -> None:
    """About 16 MB of WAL in changes no publication has, over segment switches: every slot
    that did not read meanwhile is past the 1 MB the server keeps for it."""
    filler = unique("filler")
    async with connect(cluster) as conn:
        await conn.execute(f"CREATE TABLE {filler} (v text)")
        for _ in range(4):
            await conn.execute(
                f"INSERT INTO {filler} SELECT repeat('x', 1000) FROM generate_series(1, 3000)"
            )
            await conn.fetchval("SELECT pg_switch_wal()")


async def test_an_invalidated_slot_stops_the_trigger_with_one_line_saying_what_to_do(
    pg_cluster_small_wal_keep: Any, store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    cluster = pg_cluster_small_wal_keep
    table = unique("orders")
    async with connect(cluster) as conn:
        await conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY)")
    caplog.set_level(logging.INFO)
    async with pg_source(cluster, store, tables=[table]) as source:
        trigger = source.trigger
        async with connect(cluster) as conn:
            await conn.execute(f"INSERT INTO {table} VALUES (1)")
        await receive_n(source, 1)
        await fall_behind(cluster)
        lag = await source.measure_lag()
        assert lag.partition == source.slot
        [at_risk] = [r for r in caplog.records if r.getMessage() == "postgres.slot_at_risk"]
        assert at_risk.levelno == logging.WARNING
        assert "max_slot_wal_keep_size" in at_risk.__dict__["reason"]
        config = source.config
        assert "the next checkpoint invalidates it" in str(await plugin.status(config, trigger))

        async with connect(cluster) as conn:
            await conn.execute(f"INSERT INTO {table} VALUES (2)")  # never delivered
            await conn.execute("CHECKPOINT")  # removes the WAL: the slot is invalidated
        with pytest.raises(PermanentError) as failed:
            await receive_n(source, 1, timeout=20)
        message = str(failed.value)
        assert f"slot {source.slot} was invalidated by the server" in message
        assert "max_slot_wal_keep_size" in message
        assert f"triggerd postgres drop-slot {trigger}" in message
        assert failed.value.__cause__ is None and failed.value.__suppress_context__
        assert str(await plugin.status(config, trigger)) == message
        assert plugin.check is not None
        with pytest.raises(ConfigError) as checked:  # triggerd validate --connect
            await plugin.check(config, trigger)
        assert checked.value.problems == [message]

        # Every start says the same, before anything is read.
        again = PostgresSource(
            config,
            SourceContext(
                trigger=trigger, state=store, clock=SystemClock(), log=logging.getLogger("t")
            ),
        )
        with pytest.raises(ConfigError, match="was invalidated by the server"):
            await again.start()
        await again.stop()

        dropped = await plugin.commands["drop-slot"].run(config, trigger, store)
        assert dropped.startswith("dropped slot")

    # Dropped: the trigger starts afresh and delivers what is committed from then on.
    async with pg_source(cluster, store, trigger=trigger, tables=[table]) as fresh:
        async with connect(cluster) as conn:
            await conn.execute(f"INSERT INTO {table} VALUES (3)")
        [record] = await receive_n(fresh, 1)
        assert record.payload["dynamodb"]["Keys"] == {"id": {"N": "3"}}
