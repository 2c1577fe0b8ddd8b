"""`triggerd record`: the events a trigger would deliver become fixtures, nothing is invoked and
nothing is acknowledged at the source, and `triggerd invoke --event FIXTURE` replays one
unchanged. Directory (the CLI as users run it, then replay), a webhook (the caller is told),
SQS on moto_server (the messages are still there afterwards, visible at once), RabbitMQ (the
messages are requeued), Kafka (a group of its own, nothing committed), and a trigger that
cannot be found."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bench.harness import TansuBroker
from tests.conftest import free_port
from tests.integration.kafka_support import FAST_GROUP, create_topic, produce
from tests.integration.rabbitmq_support import broker
from tests.integration.sqs_harness import make_queue, send_json, sqs_client
from tests.triggerd_cli import triggerd_cli
from triggerd.config.load import validate_data
from triggerd.config.plugins import Registry
from triggerd.daemon.record import record
from triggerd.types import ConfigError

pytestmark = pytest.mark.integration

RECORDER = Path(__file__).parents[1] / "system" / "functions" / "recorder"


def cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return triggerd_cli(cwd, *args, env={"TRIGGERD_CONFIG": str(cwd / "triggerd.toml")})


def test_directory_record_then_replay(tmp_path: Path) -> None:
    (tmp_path / "inbox").mkdir()
    for name in ("a.txt", "b.txt"):
        (tmp_path / "inbox" / name).write_text(name)
    (tmp_path / "triggerd.toml").write_text(
        f"""
[daemon]
state = "sqlite:///state/state.db"
listen = ""
control_listen = ""

[functions.recorder]
handler = "app.handler"
code = "{RECORDER}"
environment = {{ RECORD_FILE = "{tmp_path / "calls.jsonl"}" }}

[[triggers]]
name = "inbox"
function = "recorder"
source = {{ type = "directory", path = "inbox", starting_position = "TRIM_HORIZON" }}
"""
    )
    done = cli(tmp_path, "record", "inbox", "--out", "fixtures", "--count", "2", "--timeout", "20")
    assert done.returncode == 0, done.stderr
    files = sorted((tmp_path / "fixtures").iterdir())
    assert [f.name for f in files] == ["inbox-0001.json", "inbox-0002.json"]
    assert done.stdout.split() == [str(Path("fixtures") / f.name) for f in files]
    events = [json.loads(f.read_text()) for f in files]
    keys = sorted(e["Records"][0]["s3"]["object"]["key"] for e in events)
    assert keys == ["a.txt", "b.txt"]
    assert all(e["Records"][0]["eventName"] == "ObjectCreated:Put" for e in events)
    # Nothing invoked, no state written: the trigger delivers both files when it runs.
    assert not (tmp_path / "calls.jsonl").exists()
    assert not (tmp_path / "state").exists()

    replay = cli(tmp_path, "invoke", "recorder", "--event", str(files[0]))
    assert replay.returncode == 0, replay.stderr
    calls = [json.loads(line) for line in (tmp_path / "calls.jsonl").read_text().splitlines()]
    assert [c["event"] for c in calls] == [events[0]]


def base_config(tmp: Path, trigger: dict[str, Any], listen: str = "") -> dict[str, Any]:
    return {
        "daemon": {"state": "sqlite:///state/state.db", "listen": listen, "control_listen": ""},
        "functions": {
            "recorder": {
                "handler": "app.handler",
                "code": str(RECORDER),
                "environment": {"RECORD_FILE": str(tmp / "calls.jsonl")},
            }
        },
        "triggers": [{"function": "recorder", **trigger}],
    }


async def test_webhook_caller_is_told_it_was_recorded(tmp_path: Path) -> None:
    registry = Registry.discover()
    port = free_port()
    trigger = {
        "name": "hook",
        "source": {"type": "webhook", "path": "/orders/{id}", "invocation_mode": "sync"},
    }
    cfg = validate_data(base_config(tmp_path, trigger, f"127.0.0.1:{port}"), registry, tmp_path)
    out = tmp_path / "fixtures"
    task = asyncio.create_task(record(cfg, registry, "hook", out, count=1, timeout_s=20))
    async with aiohttp.ClientSession() as http:
        for _ in range(100):  # until the listener is up
            try:
                async with http.post(
                    f"http://127.0.0.1:{port}/orders/7?x=1", json={"qty": 2}
                ) as resp:
                    status, body = resp.status, await resp.text()
                break
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.05)
    files = await asyncio.wait_for(task, 20)
    assert status == 202
    assert "recorded" in body
    event = json.loads(files[0].read_text())
    assert event["rawPath"] == "/orders/7"
    assert event["pathParameters"] == {"id": "7"}
    assert json.loads(event["body"]) == {"qty": 2}
    assert not (tmp_path / "calls.jsonl").exists()


async def test_sqs_messages_stay_on_the_queue(
    tmp_path: Path, moto_server: str, aws_env: None
) -> None:
    registry = Registry.discover()
    async with sqs_client(moto_server) as client:
        url = await make_queue(client, "record", VisibilityTimeout="60")
        await send_json(client, url, [{"n": i} for i in range(3)])
        trigger = {
            "name": "orders",
            "batch_size": 10,
            "source": {"type": "sqs", "queue_url": url, "endpoint_url": moto_server},
        }
        cfg = validate_data(base_config(tmp_path, trigger), registry, tmp_path)
        files = await record(cfg, registry, "orders", tmp_path / "fx", count=5, timeout_s=3)
        bodies = sorted(
            json.loads(r["body"])["n"] for f in files for r in json.loads(f.read_text())["Records"]
        )
        assert bodies == [0, 1, 2]
        # Given back at once (not left to the 60 s visibility timeout), none deleted.
        got = await client.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=2)
        assert sorted(json.loads(m["Body"])["n"] for m in got["Messages"]) == [0, 1, 2]
    assert not (tmp_path / "calls.jsonl").exists()


async def test_unknown_trigger_names_the_known_ones(tmp_path: Path) -> None:
    registry = Registry.discover()
    trigger = {"name": "inbox", "source": {"type": "directory", "path": str(tmp_path)}}
    cfg = validate_data(base_config(tmp_path, trigger), registry, tmp_path)
    with pytest.raises(ConfigError, match="no trigger 'nope' in the config \\(triggers: inbox\\)"):
        await record(cfg, registry, "nope", tmp_path / "fx", count=1, timeout_s=1)


async def test_rabbitmq_messages_are_requeued(tmp_path: Path, rabbitmq_url: str) -> None:
    registry = Registry.discover()
    async with broker(rabbitmq_url) as rmq:
        queue = await rmq.queue("record")
        for i in range(3):
            await rmq.publish(queue, json.dumps({"n": i}).encode())
        trigger = {
            "name": "jobs",
            "batch_size": 10,
            "source": {"type": "rabbitmq", "url": rabbitmq_url, "queue": queue},
        }
        cfg = validate_data(base_config(tmp_path, trigger), registry, tmp_path)
        files = await record(cfg, registry, "jobs", tmp_path / "fx", count=5, timeout_s=2)
        recorded = [
            json.loads(base64.b64decode(m["data"]))["n"]
            for f in files
            for ms in json.loads(f.read_text())["rmqMessagesByQueue"].values()
            for m in ms
        ]
        assert sorted(recorded) == [0, 1, 2]
        # Requeued, not acked: all three are still on the queue.
        again = await rmq.wait_drain(queue, 3, timeout=5)
        assert sorted(json.loads(m.body)["n"] for m in again) == [0, 1, 2]
        assert all(m.redelivered for m in again)


async def test_kafka_reads_with_a_group_of_its_own(
    tmp_path: Path, kafka_broker: TansuBroker
) -> None:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    registry = Registry.discover()
    bootstrap = kafka_broker.bootstrap
    topic = await create_topic(bootstrap, prefix="record")
    await produce(bootstrap, topic, [b'{"n": 0}', b'{"n": 1}'])
    trigger = {
        "name": "events",
        "source": {
            "type": "kafka",
            "bootstrap_servers": bootstrap,
            "topics": [topic],
            "group_id": f"{topic}-real",
            "starting_position": "TRIM_HORIZON",
            **FAST_GROUP,
        },
    }
    cfg = validate_data(base_config(tmp_path, trigger), registry, tmp_path)
    files = await record(cfg, registry, "events", tmp_path / "fx", count=1, timeout_s=15)
    (records,) = json.loads(files[0].read_text())["records"].values()
    assert [json.loads(base64.b64decode(r["value"]))["n"] for r in records] == [0, 1]
    # The trigger's group is untouched; the recording's commits nothing (a later recording
    # starts at starting_position again, and the broker keeps no offsets of it).
    committed = {}
    for group in (f"{topic}-real", f"{topic}-real-triggerd-record"):
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
        await consumer.start()
        try:
            committed[group] = await consumer.committed(TopicPartition(topic, 0))
        finally:
            await consumer.stop()
    assert committed == {f"{topic}-real": None, f"{topic}-real-triggerd-record": None}


async def test_postgres_needs_an_existing_slot_and_never_moves_it(
    tmp_path: Path, pg_cluster: Any, store: Any
) -> None:
    from tests.integration.postgres_support import connect, pg_source, slot_confirmed, unique

    registry = Registry.discover()
    table, name = unique("orders"), unique("trig")
    async with connect(pg_cluster) as conn:
        await conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, v text)")
    trigger = {
        "name": name,
        "source": {"type": "postgres", "dsn": pg_cluster.dsn, "tables": [table]},
    }
    cfg = validate_data(base_config(tmp_path, trigger), registry, tmp_path)
    # No slot yet: refused in one line, and nothing is created on the server.
    with pytest.raises(ConfigError) as refused:
        await record(cfg, registry, name, tmp_path / "fx", count=1, timeout_s=10)
    assert len(refused.value.problems) == 1
    assert "triggerd record` creates nothing" in refused.value.problems[0]
    async with connect(pg_cluster) as conn:
        slots = await conn.fetchval("SELECT count(*) FROM pg_replication_slots")
        pubs = await conn.fetchval("SELECT count(*) FROM pg_publication WHERE pubname = $1", name)
    assert pubs == 0
    # The trigger created them (as `run` does): the recording peeks, the slot stays put.
    async with pg_source(pg_cluster, store, name, tables=[table]) as source:
        await source.stop()
        slot = source.slot
        start = await slot_confirmed(pg_cluster, slot)
        async with connect(pg_cluster) as conn:
            await conn.execute(f"INSERT INTO {table} VALUES (1, 'a'), (2, 'b')")
            assert await conn.fetchval("SELECT count(*) FROM pg_replication_slots") == slots + 1
        files = await record(cfg, registry, name, tmp_path / "fx", count=1, timeout_s=10)
        (event,) = [json.loads(f.read_text()) for f in files]
        assert [r["dynamodb"]["Keys"]["id"]["N"] for r in event["Records"]] == ["1", "2"]
        assert await slot_confirmed(pg_cluster, slot) == start


async def test_s3_notifications_are_all_given_back_none_deleted(
    tmp_path: Path, moto_server: str, aws_env: None
) -> None:
    from tests.integration.s3_support import aws_clients, notifying_bucket

    registry = Registry.discover()
    async with aws_clients(moto_server) as (s3, sqs):
        bucket, url = await notifying_bucket(s3, sqs, visibility_s=60)
        await s3.put_object(Bucket=bucket, Key="in/a.txt", Body=b"a")
        await s3.put_object(Bucket=bucket, Key="other/b.txt", Body=b"b")
        trigger = {
            "name": "uploads",
            "source": {
                "type": "s3",
                "bucket": bucket,
                "mode": "notifications",
                "queue_url": url,
                "endpoint_url": moto_server,
                "prefix": "in/",
                "wait_time_s": 1,
            },
        }
        cfg = validate_data(base_config(tmp_path, trigger), registry, tmp_path)
        files = await record(cfg, registry, "uploads", tmp_path / "fx", count=1, timeout_s=10)
        (event,) = [json.loads(f.read_text()) for f in files]
        key = event["Records"][0]["s3"]["object"]["key"]
        assert key in ("in/a.txt", "in%2Fa.txt")  # moto encodes `/` too
        # The matching message, the other key's and s3:TestEvent: all visible again at once
        # (not after the 60 s visibility timeout), none deleted.
        got = await sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=2)
        bodies = [m["Body"] for m in got.get("Messages", [])]
        assert len(bodies) == 3, bodies
        assert sum("s3:TestEvent" in b for b in bodies) == 1


async def test_checkpoints_come_from_a_postgresql_store_too(tmp_path: Path) -> None:
    import asyncpg

    from tests.pg_state import fresh_database
    from triggerd.daemon.record import _prepare_scratch
    from triggerd.state.factory import postgres_store
    from triggerd.state.sqlite import SQLiteStateStore

    registry = Registry.discover()
    trigger = {"name": "inbox", "source": {"type": "directory", "path": str(tmp_path)}}
    with fresh_database("triggerd_record") as url:
        data = base_config(tmp_path, trigger)
        data["daemon"]["state"] = url
        cfg = validate_data(data, registry, tmp_path)
        # A database without triggerd's schema: nothing to copy, and it is not given one.
        await _prepare_scratch(cfg, "inbox", tmp_path / "a")  # type: ignore[arg-type]
        conn = await asyncpg.connect(url)
        try:
            assert await conn.fetchval("SELECT to_regclass('triggerd.queue')") is None
        finally:
            await conn.close()
        store = postgres_store(url)
        await store.open()
        try:
            await store.set_checkpoints("inbox", {"directory.seen": "42"})
            await store.set_checkpoints("other", {"k": "v"})
        finally:
            await store.close()
        (tmp_path / "b").mkdir()
        await _prepare_scratch(cfg, "inbox", tmp_path / "b")  # type: ignore[arg-type]
    copy = SQLiteStateStore(str(tmp_path / "b" / "state.db"))
    await copy.open()
    try:
        assert await copy.list_checkpoints("inbox") == {"directory.seen": "42"}
        assert await copy.list_checkpoints("other") == {}
    finally:
        await copy.close()
