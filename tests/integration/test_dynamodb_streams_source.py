"""The dynamodb_streams source against moto_server (a table with a stream) through the real
poll pipeline (scripted function): INSERT / MODIFY / REMOVE records in Lambda's shape, the
table name resolved to its stream, partial batch responses, a poison record to the on-failure
destination with DDBStreamBatchInfo, and resume from the checkpoint."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiobotocore.session import get_session

import triggerd_dynamodb_streams
from tests.fakes import FakeBackend
from tests.integration.kinesis_support import failure_records
from tests.integration.trigger_harness import trigger_harness
from triggerd.config.plugins import Registry
from triggerd.delivery.destinations import file_plugin

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


@contextlib.asynccontextmanager
async def dynamodb(endpoint: str) -> AsyncIterator[Any]:
    async with get_session().create_client(
        "dynamodb",
        region_name="us-east-1",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    ) as client:
        yield client


async def make_table(client: Any, view: str = "NEW_AND_OLD_IMAGES") -> str:
    name = f"t-{uuid.uuid4().hex[:12]}"
    await client.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": view},
    )
    return name


async def put(client: Any, table: str, item_id: str, value: str) -> None:
    await client.put_item(TableName=table, Item={"id": {"S": item_id}, "v": {"S": value}})


def registry() -> Registry:
    reg = Registry()
    reg.register("source", "dynamodb_streams", triggerd_dynamodb_streams.plugin)
    reg.register("destination", "file", file_plugin)
    return reg


def source(endpoint: str, table: str, **extra: Any) -> dict[str, Any]:
    return {
        "type": "dynamodb_streams",
        "stream": table,
        "endpoint_url": endpoint,
        "region": "us-east-1",
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
        "poll_interval_s": 0.05,
        **extra,
    }


def records(backend: FakeBackend) -> list[dict[str, Any]]:
    return [r for event in backend.calls for r in event["Records"]]


def values(event: dict[str, Any]) -> list[str]:
    out = []
    for r in event["Records"]:
        image = r["dynamodb"].get("NewImage") or r["dynamodb"].get("OldImage")
        out.append(image["v"]["S"])
    return out


async def test_insert_modify_remove_in_lambdas_shape_then_resume(
    moto_server: str, tmp_path: Path
) -> None:
    async with dynamodb(moto_server) as client:
        table = await make_table(client)
        await put(client, table, "a", "one")
        await put(client, table, "a", "two")
        await client.delete_item(TableName=table, Key={"id": {"S": "a"}})
        backend = FakeBackend()
        cfg = source(moto_server, table)
        async with trigger_harness(tmp_path, registry(), cfg, backend) as h:
            await h.run_until(lambda: len(records(backend)) >= 3)
        got = records(backend)
        assert [r["eventName"] for r in got] == ["INSERT", "MODIFY", "REMOVE"]
        insert, modify, remove = got
        assert list(insert) == [
            "eventID",
            "eventName",
            "eventVersion",
            "eventSource",
            "awsRegion",
            "dynamodb",
            "eventSourceARN",
        ]
        assert insert["eventSource"] == "aws:dynamodb"
        assert insert["eventSourceARN"].startswith(
            f"arn:aws:dynamodb:us-east-1:123456789012:table/{table}/stream/"
        )
        assert insert["dynamodb"]["Keys"] == {"id": {"S": "a"}}
        assert insert["dynamodb"]["NewImage"] == {"id": {"S": "a"}, "v": {"S": "one"}}
        assert "OldImage" not in insert["dynamodb"]
        assert modify["dynamodb"]["OldImage"]["v"] == {"S": "one"}
        assert modify["dynamodb"]["NewImage"]["v"] == {"S": "two"}
        assert remove["dynamodb"]["OldImage"]["v"] == {"S": "two"}
        assert "NewImage" not in remove["dynamodb"]
        assert isinstance(insert["dynamodb"]["ApproximateCreationDateTime"], int)
        assert insert["dynamodb"]["StreamViewType"] == "NEW_AND_OLD_IMAGES"
        # The golden file's layout (a MODIFY): the same keys in the same order, the same JSON
        # types (the images' attribute names are the table's).
        golden = json.loads((GOLDEN / "dynamodb_stream_event.json").read_text())["Records"][0]
        assert [(k, type(v).__name__) for k, v in modify.items()] == [
            (k, type(v).__name__) for k, v in golden.items()
        ]
        assert [(k, type(v).__name__) for k, v in modify["dynamodb"].items()] == [
            (k, type(v).__name__) for k, v in golden["dynamodb"].items()
        ]
        # A new run resumes after the checkpoint: only the new change.
        await put(client, table, "b", "three")
        again = FakeBackend()
        async with trigger_harness(tmp_path, registry(), cfg, again) as h:
            await h.run_until(lambda: len(records(again)) >= 1)
        assert [r["eventName"] for r in records(again)] == ["INSERT"]
        assert records(again)[0]["dynamodb"]["Keys"] == {"id": {"S": "b"}}


async def test_binary_attributes_arrive_as_base64_as_in_lambda(
    moto_server: str, tmp_path: Path
) -> None:
    """The source's client passes binary values on as the wire's base64 text (no decode and
    encode per record): B and BS come out as Lambda delivers them."""
    async with dynamodb(moto_server) as client:
        table = await make_table(client)
        item = {"id": {"S": "b"}, "bin": {"B": b"\x00\xffhi"}, "bs": {"BS": [b"\x01", b"\x02"]}}
        await client.put_item(TableName=table, Item=item)
        backend = FakeBackend()
        async with trigger_harness(tmp_path, registry(), source(moto_server, table), backend) as h:
            await h.run_until(lambda: len(records(backend)) >= 1)
    image = records(backend)[0]["dynamodb"]["NewImage"]
    assert image["bin"] == {"B": "AP9oaQ=="}
    assert sorted(image["bs"]["BS"]) == ["AQ==", "Ag=="]


async def test_partial_failure_retries_from_the_lowest_failed_sequence_number(
    moto_server: str, tmp_path: Path
) -> None:
    failed: set[str] = set()

    def respond(event: dict[str, Any]) -> Any:
        for rec, value in zip(event["Records"], values(event), strict=True):
            if value == "v2" and "v2" not in failed:
                failed.add("v2")
                return {
                    "batchItemFailures": [{"itemIdentifier": rec["dynamodb"]["SequenceNumber"]}]
                }
        return None

    async with dynamodb(moto_server) as client:
        table = await make_table(client)
        for i in range(5):
            await put(client, table, f"k{i}", f"v{i}")
        backend = FakeBackend(respond)
        async with trigger_harness(
            tmp_path,
            registry(),
            source(moto_server, table),
            backend,
            report_batch_item_failures=True,
            retry_base_delay_s=0.05,
        ) as h:
            await h.run_until(lambda: h.succeeded >= 5)
    assert [values(e) for e in backend.calls] == [
        ["v0", "v1", "v2", "v3", "v4"],
        ["v2", "v3", "v4"],
    ]


async def test_poison_record_goes_to_the_destination_with_ddb_stream_batch_info(
    moto_server: str, tmp_path: Path
) -> None:
    def respond(event: dict[str, Any]) -> Any:
        if "poison" in values(event):
            raise ValueError("poison")
        return None

    dlq = tmp_path / "dlq.jsonl"
    async with dynamodb(moto_server) as client:
        table = await make_table(client, view="NEW_IMAGE")
        for v in ("ok1", "ok2", "poison", "ok3"):
            await put(client, table, v, v)
        backend = FakeBackend(respond)
        async with trigger_harness(
            tmp_path,
            registry(),
            source(moto_server, table),
            backend,
            bisect_batch_on_function_error=True,
            maximum_retry_attempts=0,
            on_failure={"type": "file", "path": str(dlq)},
        ) as h:
            await h.run_until(lambda: h.succeeded >= 3 and bool(failure_records(dlq)))
    [failure] = failure_records(dlq)
    info = failure["DDBStreamBatchInfo"]
    assert info["batchSize"] == 1
    assert info["startSequenceNumber"] == info["endSequenceNumber"]
    assert info["streamArn"].startswith(f"arn:aws:dynamodb:us-east-1:123456789012:table/{table}/")
    assert info["shardId"].startswith("shardId-")
    assert failure["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert failure["payload"]["Records"][0]["dynamodb"]["NewImage"]["v"] == {"S": "poison"}


async def test_a_table_without_a_stream_is_a_one_line_config_error(
    moto_server: str, tmp_path: Path
) -> None:
    async with dynamodb(moto_server) as client:
        name = f"t-{uuid.uuid4().hex[:12]}"
        await client.create_table(
            TableName=name,
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
    from triggerd.types import ConfigError

    with pytest.raises(ConfigError, match="has no stream enabled"):
        async with trigger_harness(tmp_path, registry(), source(moto_server, name), FakeBackend()):
            pass


async def test_tumbling_window_state_goes_from_invocation_to_invocation_to_the_final_one(
    moto_server: str, tmp_path: Path
) -> None:
    async with dynamodb(moto_server) as client:
        table = await make_table(client)
        for i in range(1, 6):
            await put(client, table, f"id-{i}", str(i))

        def summing(event: dict[str, Any]) -> dict[str, Any]:
            total = event["state"].get("sum", 0) + sum(int(v) for v in values(event))
            return {"state": {"sum": total}}

        def final_sums() -> int:
            return sum(
                e["state"].get("sum", 0) for e in backend.calls if e["isFinalInvokeForWindow"]
            )

        backend = FakeBackend(respond=summing)
        cfg = source(moto_server, table, tumbling_window_s=2)
        async with trigger_harness(tmp_path, registry(), cfg, backend, batch_size=2) as h:
            await h.run_until(lambda: final_sums() >= 15)
    assert final_sums() == 15
    assert sorted(int(v) for e in backend.calls for v in values(e)) == [1, 2, 3, 4, 5]
    assert all(e["eventSourceARN"].startswith("arn:aws:dynamodb:") for e in backend.calls)
    assert all(e["Records"] == [] for e in backend.calls if e["isFinalInvokeForWindow"])
    assert backend.calls[0]["state"] == {} and len(backend.calls) >= 4


async def test_latest_pins_its_start_so_a_restart_misses_nothing_put_while_down(
    moto_server: str, tmp_path: Path
) -> None:
    """No AT_TIMESTAMP on DynamoDB Streams: the restart reads from TRIM_HORIZON and skips
    what was created before the pinned start."""
    import asyncio

    async with dynamodb(moto_server) as client:
        table = await make_table(client)
        await put(client, table, "old", "before the first start")
        await asyncio.sleep(2.1)  # past the pin's margin
        cfg = source(moto_server, table, starting_position="LATEST")
        async with trigger_harness(tmp_path, registry(), cfg, FakeBackend()):
            pass  # stopped before any record: only the pin is stored
        await put(client, table, "new", "while the daemon was down")
        backend = FakeBackend()
        async with trigger_harness(tmp_path, registry(), cfg, backend) as h:
            await h.run_until(lambda: len(records(backend)) >= 1)
            await asyncio.sleep(0.3)
        assert [r["dynamodb"]["Keys"] for r in records(backend)] == [{"id": {"S": "new"}}]


async def test_a_table_given_a_new_stream_while_down_is_read_on_with_latest(
    moto_server: str, tmp_path: Path
) -> None:
    """`stream` names the table, LATEST: the table got a new stream (a new stream ARN) while
    the daemon was down (streams disabled and enabled again; moto 5.2.5 refuses that, so
    here the table is created again under its name). The trigger follows the table: the
    change put in the new stream before the restart is delivered, not skipped as if this
    were the trigger's first start."""
    async with dynamodb(moto_server) as client:
        table = await make_table(client)
        cfg = source(moto_server, table, starting_position="LATEST")
        backend = FakeBackend()
        async with trigger_harness(tmp_path, registry(), cfg, backend) as h:
            await put(client, table, "a", "read by the first start")
            await h.run_until(lambda: len(records(backend)) >= 1)
        old = (await client.describe_table(TableName=table))["Table"]["LatestStreamArn"]
        await client.delete_table(TableName=table)
        await client.create_table(
            TableName=table,
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
            StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"},
        )
        new = (await client.describe_table(TableName=table))["Table"]["LatestStreamArn"]
        assert new != old
        await put(client, table, "b", "put in the new stream while the daemon was down")
        again = FakeBackend()
        async with trigger_harness(tmp_path, registry(), cfg, again) as h:
            await h.run_until(lambda: len(records(again)) >= 1)
        assert [r["dynamodb"]["Keys"] for r in records(again)] == [{"id": {"S": "b"}}]
        assert records(again)[0]["eventSourceARN"] == new
