"""The kinesis source against moto_server through the real poll pipeline (scripted function):
Lambda's record shape, several shards in order per shard, checkpoints after success and resume
from them, partial batch responses, bisect, a poison record to the on-failure destination with
KinesisBatchInfo, parallelization by partition key and LATEST."""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from tests.fakes import FakeBackend
from tests.integration.kinesis_support import (
    data_of,
    failure_records,
    kinesis_client,
    make_stream,
    put_json,
    registry,
    source,
)
from tests.integration.trigger_harness import trigger_harness

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


GOLDEN = Path(__file__).resolve().parents[1] / "golden"


def layout(value: Any) -> Any:
    """The keys of a JSON value, in order, with the JSON types of the leaves."""
    if isinstance(value, dict):
        return [(k, layout(v)) for k, v in value.items()]
    return type(value).__name__


def delivered(backend: FakeBackend) -> list[Any]:
    return [v for event in backend.calls for v in data_of(event)]


async def test_records_arrive_in_lambdas_kinesis_shape(moto_server: str, tmp_path: Path) -> None:
    async with kinesis_client(moto_server) as client:
        stream = await make_stream(client)
        seqs = await put_json(client, stream, [("user-1", {"n": 1})])
        backend = FakeBackend()
        async with trigger_harness(tmp_path, registry(), source(moto_server, stream), backend) as h:
            await h.run_until(lambda: len(backend.calls) >= 1)
    rec = backend.calls[0]["Records"][0]
    arn = f"arn:aws:kinesis:us-east-1:123456789012:stream/{stream}"
    assert list(rec) == [
        "kinesis",
        "eventSource",
        "eventVersion",
        "eventID",
        "eventName",
        "invokeIdentityArn",
        "awsRegion",
        "eventSourceARN",
    ]
    assert rec["kinesis"]["partitionKey"] == "user-1"
    assert rec["kinesis"]["sequenceNumber"] == seqs[0]
    assert rec["kinesis"]["kinesisSchemaVersion"] == "1.0"
    assert isinstance(rec["kinesis"]["approximateArrivalTimestamp"], float)
    assert rec["eventID"] == f"shardId-000000000000:{seqs[0]}"
    assert rec["eventSourceARN"] == arn
    assert rec["eventName"] == "aws:kinesis:record"
    assert rec["invokeIdentityArn"] == "arn:aws:iam::123456789012:role/triggerd"
    assert data_of(backend.calls[0]) == [{"n": 1}]
    # The golden file's layout: the same keys in the same order, with the same JSON types.
    golden = json.loads((GOLDEN / "kinesis_event.json").read_text())["Records"][0]
    assert layout(rec) == layout(golden)


async def test_wire_values_client_gets_base64_text_and_epoch_seconds_only_for_itself(
    moto_server: str,
) -> None:
    """The source's client (`wire_values`) skips botocore's datetime and base64 decoding; a
    client of another session in the same process keeps botocore's defaults."""
    from contextlib import AsyncExitStack

    from triggerd.config.aws import open_client

    async with kinesis_client(moto_server) as plain, AsyncExitStack() as stack:
        stream = await make_stream(plain)
        await put_json(plain, stream, [("k", {"n": 1})])
        wire = await open_client(
            stack,
            "kinesis",
            extra="kinesis",
            needed_by="this test",
            region="us-east-1",
            endpoint_url=moto_server,
            credentials={"aws_access_key_id": "testing", "aws_secret_access_key": "testing"},
            wire_values=True,
        )
        got = []
        for client in (wire, plain):
            shard = (await client.list_shards(StreamName=stream))["Shards"][0]["ShardId"]
            it = await client.get_shard_iterator(
                StreamName=stream, ShardId=shard, ShardIteratorType="TRIM_HORIZON"
            )
            page = await client.get_records(ShardIterator=it["ShardIterator"])
            got.append(page["Records"][0])
    wire_rec, plain_rec = got
    assert wire_rec["Data"] == base64.b64encode(plain_rec["Data"]).decode()
    assert isinstance(wire_rec["ApproximateArrivalTimestamp"], float)
    assert (
        wire_rec["ApproximateArrivalTimestamp"]
        == plain_rec["ApproximateArrivalTimestamp"].timestamp()
    )


async def test_several_shards_each_in_order_then_resume_from_checkpoints(
    moto_server: str, tmp_path: Path
) -> None:
    async with kinesis_client(moto_server) as client:
        stream = await make_stream(client, shards=3)
        items = [(f"k{i % 7}", {"k": f"k{i % 7}", "i": i}) for i in range(60)]
        await put_json(client, stream, items)
        backend = FakeBackend()
        cfg = source(moto_server, stream)
        async with trigger_harness(tmp_path, registry(), cfg, backend, batch_size=7) as h:
            await h.run_until(lambda: len(delivered(backend)) >= 60)
            stats = h.source.stats()  # type: ignore[attr-defined]
        got = delivered(backend)
        # One partition per shard, each checkpointed at its last record, caught up.
        last = {}
        for event in backend.calls:
            for r in event["Records"]:
                last[r["eventID"].split(":")[0]] = int(r["kinesis"]["sequenceNumber"])
        assert {p.partition: p.committed_offset for p in stats.partitions} == last
        assert all(p.lag_seconds == 0 for p in stats.partitions)
        assert sorted(v["i"] for v in got) == list(range(60))
        shards_seen = {e["Records"][0]["eventID"].split(":")[0] for e in backend.calls}
        assert len(shards_seen) == 3
        for event in backend.calls:  # a batch holds one shard's records
            assert len({r["eventID"].split(":")[0] for r in event["Records"]}) == 1
        for key in {k for k, _ in items}:  # per partition key (one shard each): in order
            order = [v["i"] for v in got if v["k"] == key]
            assert order == sorted(order)
        # A new run of the trigger resumes after the checkpoints: only the new records.
        await put_json(client, stream, [("k1", {"k": "k1", "i": 60}), ("k2", {"k": "k2", "i": 61})])
        again = FakeBackend()
        async with trigger_harness(tmp_path, registry(), cfg, again) as h:
            await h.run_until(lambda: len(delivered(again)) >= 2)
        assert sorted(v["i"] for v in delivered(again)) == [60, 61]


async def test_partial_batch_failure_retries_from_the_lowest_failed_record(
    moto_server: str, tmp_path: Path
) -> None:
    failed_once: set[int] = set()

    def respond(event: dict[str, Any]) -> Any:
        for rec, value in zip(event["Records"], data_of(event), strict=True):
            if value["i"] == 3 and 3 not in failed_once:
                failed_once.add(3)
                return {"batchItemFailures": [{"itemIdentifier": rec["kinesis"]["sequenceNumber"]}]}
        return {"batchItemFailures": []}

    async with kinesis_client(moto_server) as client:
        stream = await make_stream(client)
        await put_json(client, stream, [("p", {"i": i}) for i in range(6)])
        backend = FakeBackend(respond)
        async with trigger_harness(
            tmp_path,
            registry(),
            source(moto_server, stream),
            backend,
            batch_size=10,
            report_batch_item_failures=True,
            retry_base_delay_s=0.05,
        ) as h:
            await h.run_until(lambda: h.succeeded >= 6)
    batches = [[v["i"] for v in data_of(e)] for e in backend.calls]
    assert batches[0] == [0, 1, 2, 3, 4, 5]
    assert batches[1] == [3, 4, 5]  # from the failed record on, nothing before it again
    assert len(batches) == 2


async def test_poison_record_bisected_to_the_destination_with_kinesis_batch_info(
    moto_server: str, tmp_path: Path
) -> None:
    def respond(event: dict[str, Any]) -> Any:
        if {"i": 4} in data_of(event):
            raise ValueError("poison")
        return None

    dlq = tmp_path / "dlq.jsonl"
    async with kinesis_client(moto_server) as client:
        stream = await make_stream(client)
        seqs = await put_json(client, stream, [("p", {"i": i}) for i in range(8)])
        backend = FakeBackend(respond)
        async with trigger_harness(
            tmp_path,
            registry(),
            source(moto_server, stream),
            backend,
            batch_size=8,
            bisect_batch_on_function_error=True,
            maximum_retry_attempts=1,
            retry_base_delay_s=0.05,
            on_failure={"type": "file", "path": str(dlq)},
        ) as h:
            await h.run_until(lambda: h.succeeded >= 7 and bool(failure_records(dlq)))
    succeeded = sorted(
        v["i"] for e in backend.calls for v in data_of(e) if {"i": 4} not in data_of(e)
    )
    assert set(succeeded) == {0, 1, 2, 3, 5, 6, 7}
    [failure] = failure_records(dlq)
    info = failure["KinesisBatchInfo"]
    assert info["shardId"] == "shardId-000000000000"
    assert info["startSequenceNumber"] == info["endSequenceNumber"] == seqs[4]
    assert info["batchSize"] == 1
    assert info["streamArn"] == f"arn:aws:kinesis:us-east-1:123456789012:stream/{stream}"
    assert info["approximateArrivalOfFirstRecord"].endswith("Z")
    assert failure["requestContext"]["condition"] == "RetryAttemptsExhausted"


async def test_parallelization_factor_keeps_each_partition_key_in_order(
    moto_server: str, tmp_path: Path
) -> None:
    async with kinesis_client(moto_server) as client:
        stream = await make_stream(client)
        items = [(f"key-{i % 5}", {"k": i % 5, "i": i}) for i in range(50)]
        await put_json(client, stream, items)
        backend = FakeBackend(delay_s=0.02)
        async with trigger_harness(
            tmp_path,
            registry(),
            source(moto_server, stream, parallelization_factor=4),
            backend,
            batch_size=5,
        ) as h:
            await h.run_until(lambda: len(delivered(backend)) >= 50)
    got = delivered(backend)
    assert sorted(v["i"] for v in got) == list(range(50))
    for k in range(5):
        order = [v["i"] for v in got if v["k"] == k]
        assert order == sorted(order)
    assert backend.max_concurrent > 1  # batches of one shard ran side by side


async def test_latest_skips_what_was_there_before_start(moto_server: str, tmp_path: Path) -> None:
    async with kinesis_client(moto_server) as client:
        stream = await make_stream(client)
        await put_json(client, stream, [("p", {"i": 0})])
        backend = FakeBackend()
        async with trigger_harness(
            tmp_path, registry(), source(moto_server, stream, starting_position="LATEST"), backend
        ) as h:
            await put_json(client, stream, [("p", {"i": 1})])
            await h.run_until(lambda: len(delivered(backend)) >= 1)
    assert delivered(backend) == [{"i": 1}]


async def test_at_timestamp_starts_at_records_arrived_from_then_on(
    moto_server: str, tmp_path: Path
) -> None:
    import asyncio
    import time

    async with kinesis_client(moto_server) as client:
        stream = await make_stream(client)
        await put_json(client, stream, [("p", {"i": 0})])
        await asyncio.sleep(1.1)
        since = time.time()
        await put_json(client, stream, [("p", {"i": 1}), ("p", {"i": 2})])
        backend = FakeBackend()
        cfg = source(
            moto_server,
            stream,
            starting_position="AT_TIMESTAMP",
            starting_position_timestamp=since - 0.5,
        )
        async with trigger_harness(tmp_path, registry(), cfg, backend) as h:
            await h.run_until(lambda: len(delivered(backend)) >= 2)
    assert delivered(backend) == [{"i": 1}, {"i": 2}]


async def test_validate_check_names_a_missing_stream_in_one_line(moto_server: str) -> None:
    import triggerd_kinesis
    from triggerd.types import ConfigError

    config = triggerd_kinesis.KinesisSourceConfig.model_validate(source(moto_server, "nope-none"))
    with pytest.raises(ConfigError) as info:
        await triggerd_kinesis.check(config, "clicks", "us-east-1")
    assert info.value.problems == [
        "trigger 'clicks': source.stream nope-none: ResourceNotFoundException"
    ]
    async with kinesis_client(moto_server) as client:
        stream = await make_stream(client)
    await triggerd_kinesis.check(
        triggerd_kinesis.KinesisSourceConfig.model_validate(source(moto_server, stream)),
        "clicks",
        "us-east-1",
    )


async def test_filtered_out_records_are_dropped_and_checkpointed(
    moto_server: str, tmp_path: Path
) -> None:
    from triggerd.state.sqlite import SQLiteStateStore

    async with kinesis_client(moto_server) as client:
        stream = await make_stream(client)
        seqs = await put_json(
            client, stream, [("p", {"kind": k, "i": i}) for i, k in enumerate("abab")]
        )
        backend = FakeBackend()
        cfg = source(moto_server, stream)
        async with trigger_harness(
            tmp_path, registry(), cfg, backend, filters=[{"data": {"kind": ["a"]}}]
        ) as h:
            await h.run_until(lambda: len(delivered(backend)) >= 2)
    assert delivered(backend) == [{"kind": "a", "i": 0}, {"kind": "a", "i": 2}]
    # The checkpoint is past the last record, a dropped one: it is not read again.
    state = SQLiteStateStore(str(tmp_path / "state-t.db"))
    await state.open()
    try:
        saved = await state.list_checkpoints("t", "shard:")
    finally:
        await state.close()
    assert saved == {"shard:shardId-000000000000": seqs[3]}


async def test_tumbling_window_state_sums_over_invocations_to_a_final_invocation(
    moto_server: str, tmp_path: Path
) -> None:
    async with kinesis_client(moto_server) as client:
        stream = await make_stream(client)
        await put_json(client, stream, [("k", {"v": v}) for v in range(1, 8)])

        def summing(event: dict[str, Any]) -> dict[str, Any]:
            total = event["state"].get("sum", 0) + sum(d["v"] for d in data_of(event))
            return {"state": {"sum": total}, "batchItemFailures": []}

        def final_sums() -> int:
            return sum(e["state"]["sum"] for e in backend.calls if e["isFinalInvokeForWindow"])

        backend = FakeBackend(respond=summing)
        cfg = source(moto_server, stream, tumbling_window_s=2)
        async with trigger_harness(tmp_path, registry(), cfg, backend, batch_size=2) as h:
            await h.run_until(lambda: final_sums() >= 28)
    arn = f"arn:aws:kinesis:us-east-1:123456789012:stream/{stream}"
    first = backend.calls[0]
    assert list(first) == [
        "Records",
        "window",
        "state",
        "shardId",
        "eventSourceARN",
        "isFinalInvokeForWindow",
        "isWindowTerminatedEarly",
    ]
    assert first["shardId"] == "shardId-000000000000" and first["eventSourceARN"] == arn
    assert first["state"] == {}
    # Per window: each invocation gets the state the previous one returned, the last one is
    # the final invocation without records, with the window's whole sum.
    by_window: dict[str, list[dict[str, Any]]] = {}
    for event in backend.calls:
        by_window.setdefault(event["window"]["start"], []).append(event)
    for events in by_window.values():
        running = 0
        for event in events:
            assert event["state"] == ({"sum": running} if running else {})
            assert not event["isWindowTerminatedEarly"]
            running += sum(d["v"] for d in data_of(event))
        assert [e["isFinalInvokeForWindow"] for e in events] == [False] * (len(events) - 1) + [True]
        assert events[-1]["Records"] == [] and events[-1]["state"] == {"sum": running}
    assert sorted(v["v"] for e in backend.calls for v in data_of(e)) == list(range(1, 8))
    assert final_sums() == 28
    assert len(backend.calls) >= 5  # batches of 2: several invocations carried the state


async def test_filters_never_drop_a_tumbling_windows_final_invocation(
    moto_server: str, tmp_path: Path
) -> None:
    async with kinesis_client(moto_server) as client:
        stream = await make_stream(client)
        await put_json(client, stream, [("k", {"v": v}) for v in range(1, 7)])

        def summing(event: dict[str, Any]) -> dict[str, Any]:
            return {
                "state": {"sum": event["state"].get("sum", 0) + sum(d["v"] for d in data_of(event))}
            }

        def final_sums() -> int:
            return sum(
                e["state"].get("sum", 0) for e in backend.calls if e["isFinalInvokeForWindow"]
            )

        backend = FakeBackend(respond=summing)
        cfg = source(moto_server, stream, tumbling_window_s=2)
        filters = [{"data": {"v": [{"numeric": [">", 3]}]}}]
        async with trigger_harness(tmp_path, registry(), cfg, backend, filters=filters) as h:
            await h.run_until(lambda: final_sums() >= 15)
    assert sorted(v["v"] for e in backend.calls for v in data_of(e)) == [4, 5, 6]
    assert final_sums() == 15


async def test_a_response_without_state_is_retried_as_a_function_error(
    moto_server: str, tmp_path: Path
) -> None:
    async with kinesis_client(moto_server) as client:
        stream = await make_stream(client)
        await put_json(client, stream, [("k", {"v": 1})])

        def stateless_once(event: dict[str, Any]) -> dict[str, Any]:
            if len(backend.calls) == 1:
                return {"batchItemFailures": []}
            return {"state": {"seen": event["state"].get("seen", 0) + len(event["Records"])}}

        backend = FakeBackend(respond=stateless_once)
        cfg = source(moto_server, stream, tumbling_window_s=2)
        async with trigger_harness(
            tmp_path, registry(), cfg, backend, retry_base_delay_s=0.01
        ) as h:
            await h.run_until(lambda: any(e["isFinalInvokeForWindow"] for e in backend.calls))
    first, again = backend.calls[0], backend.calls[1]
    assert data_of(first) == data_of(again) == [{"v": 1}]
    assert again["state"] == {}  # the refused response's state was not kept
    assert backend.calls[-1]["state"] == {"seen": 1}


async def test_latest_pins_its_start_so_a_restart_misses_nothing_put_while_down(
    moto_server: str, tmp_path: Path
) -> None:
    import asyncio

    async with kinesis_client(moto_server) as client:
        stream = await make_stream(client)
        cfg = source(moto_server, stream, starting_position="LATEST")
        async with trigger_harness(tmp_path, registry(), cfg, FakeBackend()):
            pass  # stopped before any record: only the pin is stored
        await put_json(client, stream, [("p", {"i": 1})])
        backend = FakeBackend()
        async with trigger_harness(tmp_path, registry(), cfg, backend) as h:
            await h.run_until(lambda: len(delivered(backend)) >= 1)
            await asyncio.sleep(0.3)
    assert delivered(backend) == [{"i": 1}]


async def test_a_trigger_moved_to_another_stream_reads_all_of_it(
    moto_server: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Checkpoints are stored per shard id, and every stream numbers its shards alike: after
    the trigger's `stream` changed, the new stream's shardId-000000000000 must not take the
    old one's checkpoint (there SHARD_END, after a split: it would never be read, and
    nothing said so; a sequence number would start it after another stream's position)."""
    import logging

    async with kinesis_client(moto_server) as client:
        old = await make_stream(client)
        await put_json(client, old, [("k", {"old": 1})])
        [shard] = (await client.list_shards(StreamName=old))["Shards"]
        low, high = (int(v) for v in shard["HashKeyRange"].values())
        await client.split_shard(
            StreamName=old, ShardToSplit=shard["ShardId"], NewStartingHashKey=str((low + high) // 2)
        )
        async with trigger_harness(
            tmp_path, registry(), source(moto_server, old), FakeBackend()
        ) as h:
            reader = h.source.reader  # type: ignore[attr-defined]
            await h.run_until(lambda: "shardId-000000000000" not in reader.shards)
        new = await make_stream(client, shards=2)
        await put_json(client, new, [(f"k{i}", {"new": i}) for i in range(6)])
        backend = FakeBackend()
        caplog.set_level(logging.WARNING)
        async with trigger_harness(tmp_path, registry(), source(moto_server, new), backend) as h:
            await h.run_until(lambda: len(delivered(backend)) >= 6)
    assert sorted(v["new"] for v in delivered(backend)) == list(range(6))
    [reset] = [r for r in caplog.records if r.getMessage() == "stream.checkpoints_reset"]
    assert reset.previous_stream.endswith(f"stream/{old}")  # type: ignore[attr-defined]


async def test_a_stream_deleted_and_created_again_is_read_again(
    moto_server: str, tmp_path: Path
) -> None:
    """The stream (resharded: shardId-000000000000 read to its end) is deleted and created
    again under its name while the trigger runs: same ARN, and a new shardId-000000000000
    that must not be skipped as the old one, finished."""
    import asyncio

    async with kinesis_client(moto_server) as client:
        stream = await make_stream(client)
        await put_json(client, stream, [("k", {"old": 1})])
        [shard] = (await client.list_shards(StreamName=stream))["Shards"]
        low, high = (int(v) for v in shard["HashKeyRange"].values())
        await client.split_shard(
            StreamName=stream,
            ShardToSplit=shard["ShardId"],
            NewStartingHashKey=str((low + high) // 2),
        )
        backend = FakeBackend()
        cfg = source(moto_server, stream, shard_refresh_s=0.5)
        async with trigger_harness(tmp_path, registry(), cfg, backend) as h:
            reader = h.source.reader  # type: ignore[attr-defined]

            async def recreate() -> None:
                while "shardId-000000000000" in reader.shards:  # read to its end
                    await asyncio.sleep(0.02)
                await client.delete_stream(StreamName=stream)
                await make_stream(client, name=stream)
                await put_json(client, stream, [(f"k{i}", {"new": i}) for i in range(3)])

            task = asyncio.create_task(recreate())
            await h.run_until(lambda: len(delivered(backend)) >= 4)
            await task
    assert delivered(backend) == [{"old": 1}, {"new": 0}, {"new": 1}, {"new": 2}]


async def test_a_stream_created_again_while_down_is_read_from_its_start(
    moto_server: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The stream (split: its children read and checkpointed) is deleted and created again
    under its name with two shards while the daemon is down: same ARN, the same shard ids,
    but another creation time. The new shardId-000000000001 must not start after the old
    one's checkpoint (moto numbers the new stream's records from the start again: they were
    skipped): every record of the new stream is delivered."""
    async with kinesis_client(moto_server) as client:
        stream = await make_stream(client)
        [shard] = (await client.list_shards(StreamName=stream))["Shards"]
        low, high = (int(v) for v in shard["HashKeyRange"].values())
        await client.split_shard(
            StreamName=stream,
            ShardToSplit=shard["ShardId"],
            NewStartingHashKey=str((low + high) // 2),
        )
        await put_json(client, stream, [(f"k{i}", {"old": i}) for i in range(8)])
        cfg = source(moto_server, stream)
        old = FakeBackend()
        async with trigger_harness(tmp_path, registry(), cfg, old) as h:
            await h.run_until(lambda: len(delivered(old)) >= 8)
        await client.delete_stream(StreamName=stream)
        await make_stream(client, shards=2, name=stream)
        await put_json(client, stream, [(f"k{i}", {"new": i}) for i in range(8)])
        backend = FakeBackend()
        caplog.set_level(logging.WARNING)
        async with trigger_harness(tmp_path, registry(), cfg, backend) as h:
            await h.run_until(lambda: len(delivered(backend)) >= 8)
    assert sorted(v["new"] for v in delivered(backend)) == list(range(8))
    # Told by the stream's creation time (moto gives one), not left to the shard listing.
    [replaced] = [r for r in caplog.records if r.getMessage() == "stream.replaced"]
    assert "created again" in replaced.hint  # type: ignore[attr-defined]
