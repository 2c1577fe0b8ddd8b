"""Tumbling windows of the shard reader (Kinesis, DynamoDB Streams), against the scripted
Kinesis-like API of test_shard_reader: records fall into windows aligned to their arrival
time, a window's end is a final invocation without records after the window's records, the
function's `state` goes to the next invocation of the same window only, it survives a restart
through the state store, and a response without `state` fails the invocation."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from tests.unit.test_shard_reader import Clock, FakeApi
from triggerd.delivery.shards import ShardReader, WindowEnd
from triggerd.state.sqlite import SQLiteStateStore
from triggerd.types import InvokeResult, Outcome, Record
from triggerd_kinesis.config import KinesisSourceConfig


def shape(raw: Any, shard_id: str) -> Record:
    """Records whose sequence number is also their arrival time (epoch seconds)."""
    return Record(
        payload={"n": raw}, item_id=str(raw), size=10, created_at=float(raw), key=shard_id
    )


@pytest.fixture
async def store(tmp_path: Any) -> AsyncIterator[SQLiteStateStore]:
    state = SQLiteStateStore(str(tmp_path / "state.db"))
    await state.open()
    yield state
    await state.close()


def windowed(api: FakeApi, store: Any, clock: Clock, window_s: int) -> ShardReader:
    return ShardReader(
        api=api,
        shape=shape,
        state=store,
        clock=clock,
        log=logging.getLogger("test.tumbling"),
        trigger="t",
        page_limit=2,
        poll_interval_s=0.01,
        tumbling_window_s=window_s,
    )


async def invoke_summing(r: ShardReader, batch: list[Record]) -> dict[str, Any]:
    """What the pipeline does with a batch, with a function that sums `n` into its state."""
    fields = r.window_fields(batch)
    values = [rec.payload["n"] for rec in batch if not isinstance(rec, WindowEnd)]
    state = {"sum": fields["state"].get("sum", 0) + sum(values)}
    result = r.on_result(batch, InvokeResult(Outcome.OK, orjson.dumps({"state": state}), "rid"))
    assert result.outcome is Outcome.OK
    await r.ack(batch)
    return {**fields, "values": values}


async def invocations(r: ShardReader, finals: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for _ in range(5000):
        r.check()
        batch = r.take(100)
        if batch:
            out.append(await invoke_summing(r, batch))
            if sum(1 for i in out if i["isFinalInvokeForWindow"]) >= finals:
                return out
        await asyncio.sleep(0.001)
    raise AssertionError(f"only {out} came")


async def test_windows_follow_arrival_and_state_is_carried_to_the_final_invocation(
    store: Any,
) -> None:
    api = FakeApi(records={"shard-0": [1001, 1010, 1019, 1021, 1030]})
    clock = Clock()
    r = windowed(api, store, clock, 20)
    await r.start()
    try:
        got = await invocations(r, finals=2)
    finally:
        await r.stop()
    first = ("1970-01-01T00:16:40Z", "1970-01-01T00:17:00Z")
    second = ("1970-01-01T00:17:00Z", "1970-01-01T00:17:20Z")
    windows = [(i["window"]["start"], i["window"]["end"]) for i in got]
    # 1001..1019 belong to [1000, 1020), 1021 and 1030 to [1020, 1040): the first window's
    # invocations, its final one, then the second's.
    cut = windows.index(second)
    assert windows[:cut] == [first] * cut and windows[cut:] == [second] * (len(windows) - cut)
    assert got[cut - 1]["isFinalInvokeForWindow"] and got[-1]["isFinalInvokeForWindow"]
    finals = [i for i in got if i["isFinalInvokeForWindow"]]
    assert [f["values"] for f in finals] == [[], []]
    assert [f["state"] for f in finals] == [{"sum": 1001 + 1010 + 1019}, {"sum": 1021 + 1030}]
    # Each window starts from an empty state; only the final invocation is flagged.
    starts = [i for n, i in enumerate(got) if n == 0 or got[n - 1]["isFinalInvokeForWindow"]]
    assert [s["state"] for s in starts] == [{}, {}]
    assert all(i["shardId"] == "shard-0" and not i["isWindowTerminatedEarly"] for i in got)
    assert sorted(v for i in got for v in i["values"]) == [1001, 1010, 1019, 1021, 1030]
    # After the final invocations the state is gone from the store, the checkpoint is at the end.
    assert await store.list_checkpoints("t", "window:") == {}
    assert (await store.list_checkpoints("t", "shard:"))["shard:shard-0"] == "1030"


async def test_a_windows_state_survives_a_restart_and_is_deleted_by_its_final_invocation(
    store: Any,
) -> None:
    api = FakeApi(records={"shard-0": [1001, 1010]})
    clock = Clock()
    r = windowed(api, store, clock, 900)  # window [900, 1800)
    await r.start()
    try:
        done = 0
        for _ in range(2000):
            batch = r.take(100)
            if batch:
                await invoke_summing(r, batch)
                done += len(batch)
            if done >= 2:
                break
            await asyncio.sleep(0.001)
    finally:
        await r.stop()
    saved = await store.list_checkpoints("t", "window:")
    assert orjson.loads(saved["window:shard-0"]) == {"start": 900.0, "state": {"sum": 2011}}

    api.records["shard-0"].append(1500)
    r2 = windowed(api, store, clock, 900)
    await r2.start()
    try:
        got: list[dict[str, Any]] = []
        for _ in range(2000):
            batch = r2.take(100)
            if batch:
                got.append(await invoke_summing(r2, batch))
                if got[-1]["values"] == [1500]:
                    break
            await asyncio.sleep(0.001)
        assert got == [
            {
                "window": {"start": "1970-01-01T00:15:00Z", "end": "1970-01-01T00:30:00Z"},
                "state": {"sum": 2011},
                "shardId": "shard-0",
                "isFinalInvokeForWindow": False,
                "isWindowTerminatedEarly": False,
                "values": [1500],
            }
        ]
        clock.now = 1800.0  # the window's end: a final invocation with no records
        final = (await invocations(r2, finals=1))[-1]
    finally:
        await r2.stop()
    assert final["isFinalInvokeForWindow"] is True
    assert final["values"] == []
    assert final["state"] == {"sum": 2011 + 1500}
    assert await store.list_checkpoints("t", "window:") == {}
    assert (await store.list_checkpoints("t", "shard:"))["shard:shard-0"] == "1500"


async def test_a_response_without_state_fails_the_invocation(store: Any) -> None:
    api = FakeApi(records={"shard-0": [1001]})
    r = windowed(api, store, Clock(), 900)
    await r.start()
    try:
        batch: list[Record] = []
        for _ in range(2000):
            batch = r.take(100)
            if batch:
                break
            await asyncio.sleep(0.001)
        for body in (b"", b"null", b'{"batchItemFailures": []}', b'{"state": [1]}'):
            result = r.on_result(batch, InvokeResult(Outcome.OK, body, "rid"))
            assert result.outcome is Outcome.FUNCTION_ERROR
            assert orjson.loads(result.payload)["errorType"] == "InvalidStateResponse"
        ok = r.on_result(batch, InvokeResult(Outcome.OK, b'{"state": {}}', "rid"))
        assert ok.outcome is Outcome.OK
    finally:
        await r.stop()


def test_tumbling_windows_refuse_a_parallelization_factor_above_one() -> None:
    with pytest.raises(ValidationError, match="tumbling_window_s needs parallelization_factor 1"):
        KinesisSourceConfig(
            type="kinesis", stream="s", tumbling_window_s=60, parallelization_factor=2
        )
    with pytest.raises(ValidationError):
        KinesisSourceConfig(type="kinesis", stream="s", tumbling_window_s=901)
    assert KinesisSourceConfig(type="kinesis", stream="s", tumbling_window_s=900)


async def test_a_state_over_1_mb_ends_the_window_early_and_the_window_goes_on_from_empty(
    store: Any,
) -> None:
    api = FakeApi(records={"shard-0": [1001, 1002]})
    r = windowed(api, store, Clock(), 900)
    await r.start()
    big = {"blob": "x" * (1024 * 1024)}

    async def next_batch() -> list[Record]:
        for _ in range(3000):
            batch = r.take(1)
            if batch:
                return batch
            await asyncio.sleep(0.001)
        raise AssertionError("nothing came")

    def answer(batch: list[Record], state: dict[str, Any]) -> None:
        result = InvokeResult(Outcome.OK, orjson.dumps({"state": state}), "rid")
        assert r.on_result(batch, result).outcome is Outcome.OK

    try:
        first = await next_batch()
        first_fields = r.window_fields(first)
        answer(first, big)
        await r.ack(first)
        early = await next_batch()
        # Given back (the pipeline stopping), the early end comes again before anything else.
        r.nack(early)
        assert await next_batch() == early
        early_fields = r.window_fields(early)
        answer(early, {})
        await r.ack(early)
        after = await next_batch()
        after_fields = r.window_fields(after)
    finally:
        await r.stop()
    assert [rec.item_id for rec in first] == ["1001"] and first_fields["state"] == {}
    assert isinstance(early[0], WindowEnd)
    assert early_fields["isWindowTerminatedEarly"] and early_fields["isFinalInvokeForWindow"]
    assert early_fields["state"] == big and early_fields["window"] == first_fields["window"]
    assert [rec.item_id for rec in after] == ["1002"]
    assert not after_fields["isWindowTerminatedEarly"] and after_fields["state"] == {}
    assert after_fields["window"] == first_fields["window"]
