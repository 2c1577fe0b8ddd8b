"""The postgres source against a real cluster with wal_level = logical: publication and slot
set-up and reuse, INSERT / MODIFY / REMOVE / TRUNCATE records, replica identity DEFAULT vs
FULL, multi-statement transactions in commit order, checkpoints (slot advance only after
acknowledgement), ALTER TABLE mid-stream, and clear errors."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from tests.integration.postgres_support import (
    connect,
    ddb,
    drop,
    pg_source,
    receive_n,
    slot_confirmed,
    source_config,
    unique,
)
from triggerd.types import ConfigError, SourceContext, SystemClock
from triggerd_postgres.source import CHECKPOINT_INTERVAL_S, PostgresSource

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


async def make_table(
    cluster: Any, ddl: str = "id int PRIMARY KEY, v text", full: bool = False
) -> str:
    name = unique("orders")
    async with connect(cluster) as conn:
        await conn.execute(f"CREATE TABLE {name} ({ddl})")
        if full:
            await conn.execute(f"ALTER TABLE {name} REPLICA IDENTITY FULL")
    return name


async def test_insert_update_delete_with_default_identity(pg_cluster: Any, store: Any) -> None:
    table = await make_table(pg_cluster)
    async with pg_source(pg_cluster, store, tables=[table]) as source:
        async with connect(pg_cluster) as conn:
            await conn.execute(f"INSERT INTO {table} VALUES (1, 'a')")
            await conn.execute(f"UPDATE {table} SET v = 'b' WHERE id = 1")
            await conn.execute(f"DELETE FROM {table} WHERE id = 1")
        records = await receive_n(source, 3)
    names = [r.payload["eventName"] for r in records]
    assert names == ["INSERT", "MODIFY", "REMOVE"]
    ins, mod, rem = ddb(records)
    assert ins["Keys"] == {"id": {"N": "1"}}
    assert ins["NewImage"] == {"id": {"N": "1"}, "v": {"S": "a"}}
    assert mod["NewImage"]["v"] == {"S": "b"} and "OldImage" not in mod
    assert rem["Keys"] == {"id": {"N": "1"}} and "NewImage" not in rem
    assert all(d["StreamViewType"] == "NEW_IMAGE" for d in (ins, mod, rem))
    seqs = [d["SequenceNumber"] for d in (ins, mod, rem)]
    assert seqs == sorted(seqs) and len({len(s) for s in seqs}) == 1
    arn = records[0].payload["eventSourceARN"]
    assert arn.startswith("arn:aws:dynamodb:us-east-1:123456789012:table/postgres.public.")
    assert arn.endswith(f"/stream/{source.slot}")
    assert records[0].key == f"public.{table}"


async def test_full_identity_gives_old_images(pg_cluster: Any, store: Any) -> None:
    table = await make_table(pg_cluster, full=True)
    async with pg_source(
        pg_cluster, store, tables=[table], stream_view_type="NEW_AND_OLD_IMAGES"
    ) as source:
        async with connect(pg_cluster) as conn:
            await conn.execute(f"INSERT INTO {table} VALUES (1, 'a')")
            await conn.execute(f"UPDATE {table} SET v = 'b' WHERE id = 1")
            await conn.execute(f"DELETE FROM {table} WHERE id = 1")
        records = await receive_n(source, 3)
    ins, mod, rem = ddb(records)
    assert "OldImage" not in ins
    assert mod["OldImage"] == {"id": {"N": "1"}, "v": {"S": "a"}}
    assert mod["NewImage"] == {"id": {"N": "1"}, "v": {"S": "b"}}
    assert rem["OldImage"] == {"id": {"N": "1"}, "v": {"S": "b"}} and "NewImage" not in rem


async def test_old_images_without_full_identity_is_a_clear_error(
    pg_cluster: Any, store: Any
) -> None:
    table = await make_table(pg_cluster)
    cfg = source_config(pg_cluster, tables=[table], stream_view_type="OLD_IMAGE")
    source = PostgresSource(
        cfg,
        SourceContext(trigger="t", state=store, clock=SystemClock(), log=logging.getLogger()),
    )
    with pytest.raises(ConfigError) as err:
        await source.start()
    (problem,) = err.value.problems
    assert f"needs REPLICA IDENTITY FULL on public.{table}" in problem
    assert f'ALTER TABLE "public"."{table}" REPLICA IDENTITY FULL' in problem


async def test_table_without_identity_and_missing_table_are_errors(
    pg_cluster: Any, store: Any
) -> None:
    table = await make_table(pg_cluster, ddl="id int, v text")
    cfg = source_config(pg_cluster, tables=[table, "nope"])
    source = PostgresSource(
        cfg,
        SourceContext(trigger="t", state=store, clock=SystemClock(), log=logging.getLogger()),
    )
    with pytest.raises(ConfigError) as err:
        await source.start()
    text = "\n".join(err.value.problems)
    assert "table public.nope does not exist" in text
    assert f"public.{table} has no replica identity" in text


async def test_multi_statement_transactions_arrive_in_commit_order(
    pg_cluster: Any, store: Any
) -> None:
    a, b = await make_table(pg_cluster), await make_table(pg_cluster)
    async with pg_source(pg_cluster, store, tables=[a, b]) as source:
        async with connect(pg_cluster) as c1, connect(pg_cluster) as c2:
            t1 = c1.transaction()
            await t1.start()
            await c1.execute(f"INSERT INTO {a} VALUES (1, 'first-started')")
            async with c2.transaction():
                await c2.execute(f"INSERT INTO {b} VALUES (1, 'second-started')")
                await c2.execute(f"INSERT INTO {a} VALUES (2, 'second-started')")
            await c1.execute(f"INSERT INTO {b} VALUES (2, 'first-started')")
            await t1.commit()
        records = await receive_n(source, 4)
    images = [(r.key, r.payload["dynamodb"]["NewImage"]["v"]["S"]) for r in records]
    assert images == [
        (f"public.{b}", "second-started"),
        (f"public.{a}", "second-started"),
        (f"public.{a}", "first-started"),
        (f"public.{b}", "first-started"),
    ], "the transaction that committed first comes first, its statements in order"
    seqs = [r.item_id for r in records]
    assert seqs == sorted(seqs)


async def test_truncate_is_a_record_that_waits_for_earlier_ones(
    pg_cluster: Any, store: Any
) -> None:
    table = await make_table(pg_cluster)
    async with pg_source(pg_cluster, store, tables=[table]) as source:
        async with connect(pg_cluster) as conn:
            await conn.execute(f"INSERT INTO {table} VALUES (1, 'a')")
            await conn.execute(f"TRUNCATE {table}")
            await conn.execute(f"INSERT INTO {table} VALUES (2, 'b')")
        first = await receive_n(source, 1, ack=False)
        await asyncio.sleep(0.3)
        assert await source.receive(10, 0.2) == [], "TRUNCATE waits for the INSERT before it"
        await source.ack(first)
        (truncate,) = await receive_n(source, 1, ack=False)
        assert await source.receive(10, 0.2) == [], "nothing after TRUNCATE until it settles"
        await source.ack([truncate])
        (after,) = await receive_n(source, 1)
    assert truncate.payload["eventName"] == "TRUNCATE"
    assert truncate.payload["dynamodb"]["Keys"] == {}
    assert truncate.payload["dynamodb"]["Truncate"] == {"cascade": False, "restartIdentity": False}
    assert after.payload["dynamodb"]["NewImage"]["id"] == {"N": "2"}


async def test_slot_advances_only_after_acknowledgement_and_restart_resumes(
    pg_cluster: Any, store: Any
) -> None:
    table = await make_table(pg_cluster)
    trigger = unique("trig")
    async with pg_source(pg_cluster, store, trigger, tables=[table]) as source:
        slot = source.slot
        start = await slot_confirmed(pg_cluster, slot)
        async with connect(pg_cluster) as conn:
            for i in range(5):
                await conn.execute(f"INSERT INTO {table} VALUES ({i}, 'x')")
        records = await receive_n(source, 5, ack=False)
        await asyncio.sleep(0.3)
        assert await slot_confirmed(pg_cluster, slot) == start, "nothing acked: slot unmoved"
        await source.ack(records[:2])
        await _until(lambda: _moved(pg_cluster, slot, start))
        # stop without acking the rest; a new source on the same slot gets exactly them
        await source.stop()
        again = PostgresSource(source.config, source.ctx)
        await again.start()
        try:
            rest = await receive_n(again, 3)
            assert await again.receive(10, 0.3) == []
        finally:
            await again.stop()
    assert [r.item_id for r in rest] == [r.item_id for r in records[2:]]


async def test_a_new_peek_does_not_fetch_again_what_was_acknowledged(
    pg_cluster: Any, store: Any
) -> None:
    # A peek starts at the slot's confirmed position: before each new peek the slot is
    # advanced over what is settled, not only on the checkpoint loop's next turn, so the
    # changes delivered by the peek before are not fetched (and skipped) again; once the
    # spacing of advances allows (each decodes the WAL from the slot's restart position).
    table = await make_table(pg_cluster)
    async with pg_source(pg_cluster, store, tables=[table], peek_changes=3) as source:
        assert source._runner is not None
        source._runner.cancel()  # no checkpoint loop: only the advance before a peek
        fetched = 0
        process = source.changes.process

        async def counted(session: Any, rows: list[Any]) -> int:
            nonlocal fetched
            fetched += len(rows)
            return await process(session, rows)

        source.changes.process = counted  # type: ignore[method-assign]
        async with connect(pg_cluster) as conn:
            for i in range(12):
                await conn.execute(f"INSERT INTO {table} VALUES ({i}, 'x')")
        records: list[Any] = []
        for _ in range(12):  # a peek each (one transaction: more than 3 rows)
            records += await receive_n(source, 1)
            await asyncio.sleep(2.5 * CHECKPOINT_INTERVAL_S)  # more than the advances' spacing
    assert [d["Keys"]["id"]["N"] for d in ddb(records)] == [str(i) for i in range(12)]
    # Begin, Relation (sent again to each peek), Insert and Commit of each transaction, once
    assert fetched == 12 * 4


async def _moved(cluster: Any, slot: str, start: int) -> bool:
    return await slot_confirmed(cluster, slot) > start


async def _until(cond: Any, timeout: float = 30) -> None:
    async with asyncio.timeout(timeout):
        while not await cond():
            await asyncio.sleep(0.05)


async def test_a_partly_acknowledged_transaction_resumes_inside_it(
    pg_cluster: Any, store: Any
) -> None:
    table = await make_table(pg_cluster)
    trigger = unique("trig")
    async with pg_source(pg_cluster, store, trigger, tables=[table]) as source:
        async with connect(pg_cluster) as conn:
            await conn.execute(f"INSERT INTO {table} SELECT g, 'x' FROM generate_series(1, 10) g")
        records = await receive_n(source, 10, ack=False)
        await source.ack(records[:4])
        await _until(lambda: _saved(store, trigger, records[3].item_id))
        await source.stop()
        again = PostgresSource(source.config, source.ctx)
        await again.start()
        try:
            rest = await receive_n(again, 6)
            assert await again.receive(10, 0.3) == []
        finally:
            await again.stop()
    assert [r.item_id for r in rest] == [r.item_id for r in records[4:]]


async def _saved(store: Any, trigger: str, item_id: str) -> bool:
    return await store.get_checkpoint(trigger, "postgres.position") == item_id


async def test_existing_publication_and_slot_are_reused_and_checked(
    pg_cluster: Any, store: Any
) -> None:
    table, other = await make_table(pg_cluster), await make_table(pg_cluster)
    trigger = unique("trig")
    async with pg_source(pg_cluster, store, trigger, tables=[table]) as source:
        await source.stop()
        again = PostgresSource(source.config, source.ctx)
        await again.start()  # reuses both
        await again.stop()
        wrong = PostgresSource(source_config(pg_cluster, tables=[other]), source.ctx)
        with pytest.raises(ConfigError, match="exists but captures tables"):
            await wrong.start()


async def test_schema_change_mid_stream(pg_cluster: Any, store: Any) -> None:
    table = await make_table(pg_cluster)
    async with pg_source(pg_cluster, store, tables=[table]) as source, connect(pg_cluster) as conn:
        await conn.execute(f"INSERT INTO {table} VALUES (1, 'a')")
        first = await receive_n(source, 1)
        await conn.execute(f"ALTER TABLE {table} ADD COLUMN extra jsonb DEFAULT '{{}}'")
        await conn.execute(f"INSERT INTO {table} VALUES (2, 'b', '{{\"k\": [1, true]}}')")
        second = await receive_n(source, 1)
    assert set(first[0].payload["dynamodb"]["NewImage"]) == {"id", "v"}
    assert second[0].payload["dynamodb"]["NewImage"]["extra"] == {
        "M": {"k": {"L": [{"N": "1"}, {"BOOL": True}]}}
    }


TYPES_DDL = """
    id bigint PRIMARY KEY,
    c_smallint smallint, c_int integer, c_bigint bigint,
    c_numeric numeric(12, 4), c_numeric_big numeric, c_numeric_nan numeric,
    c_real real, c_double double precision, c_double_inf double precision,
    c_text text, c_varchar varchar(20), c_char char(5), c_empty text,
    c_bool boolean, c_bytea bytea,
    c_timestamp timestamp, c_timestamptz timestamptz, c_date date, c_time time,
    c_timetz timetz, c_interval interval, c_uuid uuid,
    c_json json, c_jsonb jsonb, c_jsonb_array jsonb, c_jsonb_scalar jsonb,
    c_int_array int[], c_text_array text[], c_nested int[][], c_bool_array boolean[],
    c_enum mood, c_enum_array mood[], c_domain positive_int,
    c_inet inet, c_money money, c_null text
"""

TYPES_ROW = """(
    1, -32768, 2147483647, 9223372036854775807,
    12345678.1234, 123456789012345678901234567890123456789012, 'NaN',
    1.5, 0.1, 'Infinity',
    'héllo "quoted"', 'var', 'ab', '',
    true, '\\x00ff10',
    '2024-05-01 12:34:56.789', '2024-05-01 14:34:56.789+02', '2024-05-01', '12:34:56',
    '12:34:56+02', '1 day 2 hours 3 minutes', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
    '{"a": 1, "b": [true, null, "x"]}', '{"n": 1.50, "big": 123456789012345678901234567890}',
    '[1, {"k": "v"}]', '"just a string"',
    '{1,2,NULL}', '{"a b","c,d",NULL,"e\\"f"}', '{{1,2},{3,4}}', '{t,f}',
    'happy', '{sad,happy}', 42,
    '192.168.0.1/24', 12.5, NULL
)"""


async def test_every_type_of_the_mapping_matches_the_golden_file(
    pg_cluster: Any, store: Any
) -> None:
    table = unique("types")
    async with connect(pg_cluster) as conn:
        await conn.execute(
            "DO $$ BEGIN CREATE TYPE mood AS ENUM ('sad', 'happy'); "
            "EXCEPTION WHEN duplicate_object THEN NULL; END $$"
        )
        await conn.execute(
            "DO $$ BEGIN CREATE DOMAIN positive_int AS integer CHECK (VALUE > 0); "
            "EXCEPTION WHEN duplicate_object THEN NULL; END $$"
        )
        await conn.execute(f"CREATE TABLE {table} ({TYPES_DDL})")
    async with pg_source(pg_cluster, store, tables=[table]) as source:
        async with connect(pg_cluster) as conn:
            await conn.execute(f"INSERT INTO {table} VALUES {TYPES_ROW}")
        (record,) = await receive_n(source, 1)
    image = record.payload["dynamodb"]["NewImage"]
    # A DynamoDB Streams handler that validates its events with Powertools' parser (which
    # deserialises every AttributeValue with boto3's TypeDeserializer) accepts the record.
    from aws_lambda_powertools.utilities.parser.models import DynamoDBStreamModel

    parsed = DynamoDBStreamModel.model_validate({"Records": [record.payload]}).Records[0]
    assert parsed.dynamodb is not None and parsed.dynamodb.NewImage is not None
    assert parsed.dynamodb.NewImage["c_nested"] == [[1, 2], [3, 4]]
    assert _golden("postgres_types_new_image.json", image)


def _golden(name: str, value: Any) -> bool:
    """Compare with tests/golden/NAME (rewritten with TRIGGERD_UPDATE_GOLDEN=1)."""
    import json
    import os
    from pathlib import Path

    text = json.dumps(value, indent=2, ensure_ascii=False) + "\n"
    golden = Path(__file__).resolve().parents[1] / "golden" / name
    if os.environ.get("TRIGGERD_UPDATE_GOLDEN") == "1":
        golden.write_text(text)
    return golden.read_text() == text


@pytest.mark.parametrize("full", [False, True], ids=["default-identity", "full-identity"])
async def test_unchanged_toasted_columns_come_from_the_old_row_or_are_marked(
    pg_cluster: Any, store: Any, full: bool
) -> None:
    table = await make_table(pg_cluster, "id int PRIMARY KEY, big text, n int", full=full)
    big = "SELECT string_agg(md5(g::text || random()::text), '') FROM generate_series(1, 400) g"
    async with pg_source(pg_cluster, store, tables=[table]) as source:
        async with connect(pg_cluster) as conn:
            await conn.execute(f"INSERT INTO {table} VALUES (1, ({big}), 0)")
            await conn.execute(f"UPDATE {table} SET n = 1 WHERE id = 1")
            value = await conn.fetchval(f"SELECT big FROM {table}")
        _, update = await receive_n(source, 2)
    image = update.payload["dynamodb"]["NewImage"]
    assert image["n"] == {"N": "1"}
    expected = value if full else "__triggerd_unchanged_toast__"
    assert image["big"] == {"S": expected}


async def test_idle_polling_backs_off_and_notify_wakes_it_at_once(
    pg_cluster: Any, store: Any
) -> None:
    table = await make_table(pg_cluster)
    async with pg_source(
        pg_cluster,
        store,
        tables=[table],
        poll_interval_s=0.05,
        max_poll_interval_s=2.0,
        wake_channel="orders_changed",
    ) as source:
        peeks = 0
        original = source._open_peek

        async def counting() -> Any:
            nonlocal peeks
            peeks += 1
            return await original()

        source._open_peek = counting  # type: ignore[method-assign]
        assert await source.receive(10, 3.0) == []
        assert peeks <= 7, f"{peeks} peeks in 3 s idle: no busy polling (0.05 s doubling to 2 s)"
        # Now in the 2 s wait: a NOTIFY ends it at once.
        waiter = asyncio.create_task(source.receive(10, 5.0))
        await asyncio.sleep(0.5)
        async with connect(pg_cluster) as conn:
            await conn.execute(f"INSERT INTO {table} VALUES (1, 'a')")
            await conn.execute("NOTIFY orders_changed")
        records = await waiter
        assert len(records) == 1
        # Woken by the NOTIFY (its wake event set), not by the poll timer: no time bound,
        # which a loaded machine can exceed whatever woke it.
        assert source._wake.is_set(), "woken by NOTIFY"
        await source.ack(records)


async def test_wal_retention_above_the_threshold_is_a_warning(
    pg_cluster: Any, store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    table = await make_table(pg_cluster)
    async with pg_source(
        pg_cluster, store, tables=[table], wal_retention_warning_mb=0.001
    ) as source:
        async with connect(pg_cluster) as conn:
            await conn.execute(
                f"INSERT INTO {table} SELECT g, repeat('x', 100) FROM generate_series(1, 500) g"
            )
        with caplog.at_level(logging.WARNING, logger="test.postgres"):
            lag = await source.measure_lag()
    assert lag.partition == source.slot and lag.retained_bytes and lag.retained_bytes > 1024
    assert lag.lag_bytes is not None and lag.lag_bytes > 0, "nothing acknowledged yet"
    assert source.stats().partitions == (lag,)
    assert [r for r in caplog.records if r.getMessage() == "postgres.wal_retention"]


async def test_streamed_transactions_are_delivered_at_commit_without_aborted_parts(
    pg_cluster: Any, store: Any
) -> None:
    table = await make_table(pg_cluster)
    async with connect(pg_cluster) as conn:
        # Stream anything over 64 kB instead of spilling it on the server.
        await conn.execute("ALTER SYSTEM SET logical_decoding_work_mem = '64kB'")
        await conn.execute("SELECT pg_reload_conf()")
    try:
        async with pg_source(pg_cluster, store, tables=[table], streaming=True) as source:
            async with connect(pg_cluster) as c1, connect(pg_cluster) as c2:
                async with c1.transaction():
                    await c1.execute(
                        f"INSERT INTO {table} SELECT g, repeat('a', 200) FROM "
                        "generate_series(1, 1000) g"
                    )
                    await c2.execute(f"INSERT INTO {table} VALUES (5000, 'between')")
                    await c1.execute("SAVEPOINT undone")
                    await c1.execute(
                        f"INSERT INTO {table} SELECT g, repeat('b', 200) FROM "
                        "generate_series(2001, 2500) g"
                    )
                    await c1.execute("ROLLBACK TO SAVEPOINT undone")
                    await c1.execute(
                        f"INSERT INTO {table} SELECT g, repeat('c', 200) FROM "
                        "generate_series(3001, 3500) g"
                    )
                tx = c2.transaction()
                await tx.start()
                await c2.execute(
                    f"INSERT INTO {table} SELECT g, repeat('d', 200) FROM "
                    "generate_series(6001, 7000) g"
                )
                await tx.rollback()
                await c2.execute(f"INSERT INTO {table} VALUES (9000, 'last')")
            records = await receive_n(source, 1502, timeout=30)
            assert await source.receive(10, 0.5) == []
            assert source.changes.streamed_transactions >= 1
    finally:
        async with connect(pg_cluster) as conn:
            await conn.execute("ALTER SYSTEM RESET logical_decoding_work_mem")
            await conn.execute("SELECT pg_reload_conf()")
    ids = [int(r.payload["dynamodb"]["Keys"]["id"]["N"]) for r in records]
    expected = [5000, *range(1, 1001), *range(3001, 3501), 9000]
    assert ids == expected, "commit order; the rolled-back savepoint and transaction left out"
    seqs = [r.item_id for r in records]
    assert seqs == sorted(seqs)


async def test_resume_rereads_the_slot_and_a_stale_readers_late_ack_moves_nothing_back(
    pg_cluster: Any, store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Two daemons' sources on one slot, as around a failover: the successor resumes and
    acknowledges everything; the stale reader's late acknowledgement of older changes is a
    no-op (never an error, never backwards); when the stale one leads again, `resume` makes
    it go on from the slot's position, not from what it had read."""
    table = await make_table(pg_cluster)
    trigger = unique("trig")
    async with pg_source(pg_cluster, store, trigger, tables=[table]) as stale:
        assert stale.singleton_lease == f"pgslot:{stale.database}/{stale.slot}"
        start = await slot_confirmed(pg_cluster, stale.slot)
        async with connect(pg_cluster) as conn:
            for i in range(5):
                await conn.execute(f"INSERT INTO {table} VALUES ({i}, 'x')")
        old = await receive_n(stale, 5, ack=False)
        successor = PostgresSource(stale.config, stale.ctx)
        await successor.start()
        try:
            await successor.resume()
            again = await receive_n(successor, 5)
            assert [r.item_id for r in again] == [r.item_id for r in old]
            await _until(lambda: _moved(pg_cluster, stale.slot, start))
            moved = await slot_confirmed(pg_cluster, stale.slot)
        finally:
            await successor.stop()
        with caplog.at_level(logging.WARNING):
            await stale.ack(old[:2])
            async with asyncio.timeout(10):
                while stale._to_advance is not None:
                    await asyncio.sleep(0.05)
        assert "postgres.checkpoint_failed" not in caplog.text
        assert await slot_confirmed(pg_cluster, stale.slot) == moved
        await stale.resume()
        async with connect(pg_cluster) as conn:
            await conn.execute(f"INSERT INTO {table} VALUES (99, 'y')")
        [new] = await receive_n(stale, 1)
    assert new.payload["dynamodb"]["Keys"] == {"id": {"N": "99"}}


async def test_two_daemons_starting_at_once_share_one_new_slot_and_publication(
    pg_cluster: Any, store: Any
) -> None:
    """Both look for the slot and the publication, find neither, and create them at the same
    moment: the one that loses each race checks and reuses the winner's."""
    table = await make_table(pg_cluster)
    cfg = source_config(pg_cluster, tables=[table])
    log = logging.getLogger("test.postgres")
    ctx = SourceContext(trigger=unique("trig"), state=store, clock=SystemClock(), log=log)
    first, second = PostgresSource(cfg, ctx), PostgresSource(cfg, ctx)
    try:
        await asyncio.gather(first.start(), second.start())
        assert first.slot == second.slot and first._advanced_lsn == second._advanced_lsn
    finally:
        await asyncio.gather(first.stop(), second.stop())
        await drop(pg_cluster, first.slot, first.publication)
