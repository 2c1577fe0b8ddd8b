"""The s3 source without a server: notification parsing and normalisation, and the poll diff
against a scripted client (failing listings, unselected events, starting positions)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from fractions import Fraction
from typing import Any

import pytest

from tests.fakes import FakeClock
from triggerd.state.sqlite import MEMORY_PATH, SQLiteStateStore
from triggerd.types import Clock, SourceContext, SystemClock
from triggerd_s3 import S3SourceConfig
from triggerd_s3.notifications import (
    NotificationError,
    normalise_record,
    parse_body,
    raw_key,
)
from triggerd_s3.poll import INITIALIZED_KEY, PollSource

# ---- notifications --------------------------------------------------------------------------


def moto_record(event: str = "ObjectCreated:Put", **obj: Any) -> dict[str, Any]:
    return {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": "eu-west-1",
        "eventTime": "2024-05-01T12:00:00.123Z",
        "eventName": event,
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "cfg",
            "bucket": {"name": "bkt", "arn": "arn:aws:s3:::bkt"},
            "object": {"key": "a+b%2Bc", "size": 3, "eTag": "e", **obj},
        },
    }


def normalise(rec: dict[str, Any]) -> dict[str, Any]:
    return normalise_record(
        rec, region="us-east-1", configuration_id="dflt", owner_id="OWNER", now=0.0
    )


def test_test_event_is_recognised() -> None:
    body = '{"Service":"Amazon S3","Event":"s3:TestEvent","Time":"x","Bucket":"b"}'
    assert parse_body(body).test


def test_sns_wrapped_notification_is_unwrapped() -> None:
    inner = json.dumps({"Records": [moto_record()]})
    parsed = parse_body(json.dumps({"Type": "Notification", "Message": inner}))
    assert [r["eventName"] for r in parsed.records] == ["ObjectCreated:Put"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("nope", "not JSON"),
        ("[1]", "not a JSON object"),
        ('{"Records": []}', "no Records"),
        ('{"Records": [{"eventSource": "aws:sqs"}]}', "not an aws:s3 event"),
        ('{"Records": [{"eventName": "x", "s3": {}}]}', "no s3.object"),
    ],
)
def test_bodies_that_are_not_notifications_raise_with_a_reason(body: str, message: str) -> None:
    with pytest.raises(NotificationError, match=message):
        parse_body(body)


def test_normalising_fills_missing_fields_in_aws_order_and_keeps_the_rest() -> None:
    out = normalise(moto_record())
    assert list(out) == [
        "eventVersion",
        "eventSource",
        "awsRegion",
        "eventTime",
        "eventName",
        "userIdentity",
        "requestParameters",
        "responseElements",
        "s3",
    ]
    assert out["awsRegion"] == "eu-west-1"
    assert out["eventTime"] == "2024-05-01T12:00:00.123Z"
    assert out["userIdentity"] == {"principalId": "OWNER"}
    assert out["s3"]["configurationId"] == "cfg"
    assert out["s3"]["bucket"] == {
        "name": "bkt",
        "ownerIdentity": {"principalId": "OWNER"},
        "arn": "arn:aws:s3:::bkt",
    }
    assert out["s3"]["object"] == {"key": "a+b%2Bc", "size": 3, "eTag": "e"}


def test_normalising_keeps_version_sequencer_and_extra_fields() -> None:
    rec = moto_record(versionId="v1", sequencer="0055AED6DCD90281E5")
    rec["glacierEventData"] = {"restoreEventData": {}}
    rec["userIdentity"] = {"principalId": "AWS:AIDA"}
    out = normalise(rec)
    assert out["s3"]["object"]["versionId"] == "v1"
    assert out["s3"]["object"]["sequencer"] == "0055AED6DCD90281E5"
    assert out["glacierEventData"] == {"restoreEventData": {}}
    assert out["userIdentity"] == {"principalId": "AWS:AIDA"}


def test_removed_records_lose_size_and_etag() -> None:
    out = normalise(moto_record("ObjectRemoved:Delete", versionId="v2"))
    assert out["s3"]["object"] == {"key": "a+b%2Bc", "versionId": "v2"}


def test_missing_configuration_id_and_version_get_defaults() -> None:
    rec = moto_record()
    del rec["eventVersion"]
    del rec["s3"]["configurationId"]
    out = normalise(rec)
    assert out["eventVersion"] == "2.1"
    assert out["s3"]["configurationId"] == "dflt"


def test_raw_key_decodes_the_url_encoding() -> None:
    assert raw_key(moto_record()) == "a b+c"


# ---- poll diff with a scripted client ---------------------------------------------------------


class Boom(Exception):
    pass


class FakeS3:
    """A bucket as a dict; list_objects_v2 pages of `page` keys; can fail after N pages."""

    def __init__(self, objects: dict[str, bytes], page: int = 2) -> None:
        self.objects = objects
        self.page = page
        self.fail_after_pages: int | None = None

    def get_paginator(self, name: str) -> Any:
        assert name == "list_objects_v2"
        return self

    async def paginate(self, **kwargs: Any) -> AsyncIterator[dict[str, Any]]:
        keys = sorted(k for k in self.objects if k.startswith(kwargs.get("Prefix", "")))
        stamp = datetime(2024, 5, 1, tzinfo=UTC)
        for n, i in enumerate(range(0, len(keys), self.page)):
            if self.fail_after_pages is not None and n >= self.fail_after_pages:
                raise Boom("listing broke")
            yield {
                "Name": "bkt",
                "Contents": [
                    {
                        "Key": k,
                        "ETag": f'"{len(self.objects[k])}"',
                        "Size": len(self.objects[k]),
                        "LastModified": stamp,
                    }
                    for k in keys[i : i + self.page]
                ],
            }
            await asyncio.sleep(0)

    async def get_bucket_versioning(self, **kwargs: Any) -> dict[str, Any]:
        return {}


@pytest.fixture
async def store() -> AsyncIterator[SQLiteStateStore]:
    state = SQLiteStateStore(MEMORY_PATH)
    await state.open()
    yield state
    await state.close()


def poller(
    client: FakeS3, store: SQLiteStateStore, clock: Clock | None = None, **options: Any
) -> PollSource:
    config = S3SourceConfig.model_validate(
        {"type": "s3", "bucket": "bkt", "mode": "poll", **options}
    )
    ctx = SourceContext(
        trigger="t", state=store, clock=clock or SystemClock(), log=logging.getLogger("test.s3")
    )
    return PollSource(config, ctx, client)


async def drain(source: PollSource, store: SQLiteStateStore) -> list[tuple[str, str]]:
    """Run one scan while acking (and committing) everything it emits."""
    out: list[tuple[str, str]] = []
    scan = asyncio.create_task(source.scan_once())
    while not scan.done() or not source._ready.empty():
        batch = await source.receive(100, 0.01)
        for rec in batch:
            await store.set_checkpoints("t", rec.checkpoint or {})
            out.append((rec.payload["eventName"], rec.payload["s3"]["object"]["key"]))
        await source.ack(batch)
    await scan
    return sorted(out)


async def test_latest_first_scan_records_state_without_events(store: SQLiteStateStore) -> None:
    source = poller(FakeS3({"a": b"1", "b": b"22", "c": b"333"}), store)
    assert await drain(source, store) == []
    assert await store.get_checkpoint("t", INITIALIZED_KEY) == "1"
    assert json.loads(await store.get_checkpoint("t", "o:b") or "") == {
        "etag": "2",
        "size": 2,
        "last_modified": "2024-05-01T00:00:00.000Z",
    }


async def test_a_listing_failing_half_way_emits_no_deletions(store: SQLiteStateStore) -> None:
    client = FakeS3({k: b"x" for k in "abcdef"})
    source = poller(client, store, starting_position="TRIM_HORIZON")
    assert len(await drain(source, store)) == 6
    client.fail_after_pages = 1
    with pytest.raises(Boom):
        await drain(source, store)
    assert len(await store.list_checkpoints("t", "o:")) == 6


async def test_a_scan_after_a_failed_one_waits_for_its_records_and_emits_none_twice(
    store: SQLiteStateStore,
) -> None:
    """The failed listing's first page gave events that were not committed yet (the pipeline
    behind, the store slow): the next scan compared against the old state and emitted the
    ones still uncommitted again (here b: 5 records for 4 objects)."""
    client = FakeS3({k: b"x" for k in "abcd"})
    source = poller(client, store, starting_position="TRIM_HORIZON")
    client.fail_after_pages = 1
    with pytest.raises(Boom):
        await source.scan_once()
    client.fail_after_pages = None
    assert await drain(source, store) == [
        ("ObjectCreated:Put", "a"),
        ("ObjectCreated:Put", "b"),
        ("ObjectCreated:Put", "c"),
        ("ObjectCreated:Put", "d"),
    ]


class Enough(Exception):
    pass


@pytest.mark.parametrize("interval", [86400.0, 300.0, 60.0, 0.001, 1e-200, 5e-324])
async def test_failed_listings_wait_poll_interval_s_doubled_up_to_five_minutes(
    store: SQLiteStateStore, interval: float
) -> None:
    # Each delay is min(poll_interval_s * 2 ** (failures - 1), 300 s), for any interval the
    # config accepts, after 1,100 failures in a row too: that product overflowed at the
    # 1,025th (3.5 days of a bucket not answering, at the cap) and the poll loop died. A
    # tiny interval doubles for over 1,000 failures before it reaches the cap
    # (an exponent bounded at 512 left it at 1e-46 s: the loop listed a failing bucket
    # without pause, for ever).
    class Counted(FakeClock):
        def __init__(self) -> None:
            super().__init__()
            self.delays: list[float] = []

        async def sleep(self, seconds: float) -> None:
            self.delays.append(seconds)
            if len(self.delays) == 1100:
                raise Enough

    clock = Counted()
    source = poller(FakeS3({}), store, clock=clock, poll_interval_s=interval)

    async def failing() -> Any:
        raise Boom("the bucket does not answer")

    source.scan_once = failing  # type: ignore[method-assign]
    with pytest.raises(Enough):
        await source._poll_loop()
    expected = [float(min(Fraction(interval) * 2**n, 300)) for n in range(1100)]
    assert clock.delays == expected
    assert clock.delays[-1] == 300.0


async def test_unchanged_objects_emit_nothing_on_the_next_scan(store: SQLiteStateStore) -> None:
    client = FakeS3({"a": b"1", "b": b"2"})
    source = poller(client, store, starting_position="TRIM_HORIZON")
    assert await drain(source, store) == [("ObjectCreated:Put", "a"), ("ObjectCreated:Put", "b")]
    assert await drain(source, store) == []
    client.objects["a"] = b"longer"
    del client.objects["b"]
    assert await drain(source, store) == [
        ("ObjectCreated:Put", "a"),
        ("ObjectRemoved:Delete", "b"),
    ]


async def test_stored_keys_outside_changed_rules_are_not_reported_deleted(
    store: SQLiteStateStore,
) -> None:
    client = FakeS3({"a.jpg": b"1", "b.png": b"2"})
    await drain(poller(client, store, starting_position="TRIM_HORIZON"), store)
    narrower = poller(client, store, suffix=".jpg")
    assert await drain(narrower, store) == []
    assert "o:b.png" in await store.list_checkpoints("t", "o:")


async def test_next_scan_waits_until_the_previous_records_are_acked(
    store: SQLiteStateStore,
) -> None:
    source = poller(FakeS3({"a": b"1"}), store, starting_position="TRIM_HORIZON")
    scan = asyncio.create_task(source.scan_once())
    [record] = await source.receive(10, 5)
    await asyncio.sleep(0.05)
    assert not scan.done()
    await store.set_checkpoints("t", record.checkpoint or {})
    await source.ack([record])
    stats = await asyncio.wait_for(scan, 5)
    assert (stats.listed, stats.created) == (1, 1)


async def test_nacked_records_are_handed_out_again_first(store: SQLiteStateStore) -> None:
    source = poller(FakeS3({"a": b"1", "b": b"2"}), store, starting_position="TRIM_HORIZON")
    scan = asyncio.create_task(source.scan_once())
    first = await source.receive(1, 5)
    await source.nack(first)
    again = await source.receive(1, 5)
    assert again[0] is first[0]
    rest = await source.receive(10, 5)
    await source.ack(again + rest)
    await asyncio.wait_for(scan, 5)
