"""The s3 source in poll mode against moto_server, with the real SQLite store."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.async_source import TRIGGER, events_of, pump
from tests.integration.s3_support import (
    aws_clients,
    make_config,
    make_source,
    unique,
)
from triggerd.events.s3 import encode_s3_key
from triggerd.state.sqlite import SQLiteStateStore
from triggerd_s3.poll import PollSource

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("aws_env")]

ODD_KEYS = ["red flower+1.jpg", "dir/ünïcødé ✓.txt", "a+b/c d~e.txt"]


@pytest.fixture
async def s3(moto_server: str) -> AsyncIterator[Any]:
    async with aws_clients(moto_server) as (s3_client, _sqs):
        yield s3_client


async def new_bucket(s3: Any, keys: list[str] = (), versioned: bool = False) -> str:  # type: ignore[assignment]
    bucket = unique("pb")
    await s3.create_bucket(Bucket=bucket)
    if versioned:
        await s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    for key in keys:
        await s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
    return bucket


def poller(moto_server: str, bucket: str, store: SQLiteStateStore, **options: Any) -> PollSource:
    options.setdefault("poll_interval_s", 0.1)
    source = make_source(make_config(moto_server, bucket, mode="poll", **options), store)
    assert isinstance(source, PollSource)
    return source


async def quiet(source: PollSource, store: SQLiteStateStore) -> None:
    """Two more complete scans pass without any record."""
    target = source.scans + 2
    while source.scans < target:
        assert await source.receive(10, 0.05) == []


async def test_trim_horizon_emits_every_object_with_the_s3_event_shape(
    moto_server: str, s3: Any, store: SQLiteStateStore
) -> None:
    bucket = await new_bucket(s3, ODD_KEYS)
    source = poller(moto_server, bucket, store, starting_position="TRIM_HORIZON")
    await source.start()
    try:
        records = await pump(source, store, 3)
        await quiet(source, store)
    finally:
        await source.stop()
    assert events_of(records) == sorted(("ObjectCreated:Put", encode_s3_key(k)) for k in ODD_KEYS)
    rec = next(
        r.payload for r in records if r.payload["s3"]["object"]["key"] == "red+flower%2B1.jpg"
    )
    assert rec["eventVersion"] == "2.1"
    assert rec["eventSource"] == "aws:s3"
    assert rec["awsRegion"] == "us-east-1"
    assert rec["eventTime"].endswith("Z")
    s3_part = rec["s3"]
    assert s3_part["configurationId"] == "triggerd"
    assert s3_part["bucket"] == {
        "name": bucket,
        "ownerIdentity": {"principalId": "123456789012"},
        "arn": f"arn:aws:s3:::{bucket}",
    }
    obj = s3_part["object"]
    assert obj["size"] == len(b"red flower+1.jpg")
    assert len(obj["eTag"]) == 32 and '"' not in obj["eTag"]
    assert "versionId" not in obj
    assert len(obj["sequencer"]) == 16
    assert set(rec["responseElements"]) == {"x-amz-request-id", "x-amz-id-2"}


async def test_latest_baselines_then_reports_put_overwrite_and_delete(
    moto_server: str, s3: Any, store: SQLiteStateStore
) -> None:
    bucket = await new_bucket(s3, ["keep.txt", "change.txt", "gone.txt"])
    source = poller(moto_server, bucket, store)
    await source.start()
    try:
        await quiet(source, store)
        await s3.put_object(Bucket=bucket, Key="new one.txt", Body=b"n")
        await s3.put_object(Bucket=bucket, Key="change.txt", Body=b"changed!")
        await s3.delete_object(Bucket=bucket, Key="gone.txt")
        records = await pump(source, store, 3)
        await quiet(source, store)
    finally:
        await source.stop()
    assert events_of(records) == [
        ("ObjectCreated:Put", "change.txt"),
        ("ObjectCreated:Put", "new+one.txt"),
        ("ObjectRemoved:Delete", "gone.txt"),
    ]
    deleted = next(r.payload for r in records if r.payload["eventName"] == "ObjectRemoved:Delete")
    assert set(deleted["s3"]["object"]) == {"key", "sequencer"}
    stored = await store.list_checkpoints(TRIGGER, "o:")
    assert sorted(stored) == ["o:change.txt", "o:keep.txt", "o:new one.txt"]


async def test_latest_first_listing_done_again_after_an_interruption_misses_nothing(
    moto_server: str, s3: Any, store: SQLiteStateStore
) -> None:
    """A first listing (LATEST) was interrupted (its lister died): it had stored when it
    started and recorded gone.txt. The next lister's first listing gives the objects put
    since that start and the deletions since their events; the older objects stay silent."""
    import asyncio
    import math
    import time

    bucket = await new_bucket(s3, ["old.txt", "gone.txt"])
    await asyncio.sleep(2.1)  # old.txt's LastModified (whole seconds) before the start
    started = math.floor(time.time() - 1.0)
    await store.set_checkpoints(
        TRIGGER,
        {"meta:latest_from": str(started), "o:gone.txt": '{"etag":"e","size":1}'},
    )
    await s3.delete_object(Bucket=bucket, Key="gone.txt")
    await s3.put_object(Bucket=bucket, Key="new.txt", Body=b"n")
    source = poller(moto_server, bucket, store)
    await source.start()
    try:
        records = await pump(source, store, 2)
        await quiet(source, store)
    finally:
        await source.stop()
    assert events_of(records) == [
        ("ObjectCreated:Put", "new.txt"),
        ("ObjectRemoved:Delete", "gone.txt"),
    ]
    stored = await store.list_checkpoints(TRIGGER, "o:")
    assert sorted(stored) == ["o:new.txt", "o:old.txt"]
    assert await store.get_checkpoint(TRIGGER, "meta:latest_from") == str(started)


async def test_pagination_with_five_keys_a_page_delivers_23_objects_once(
    moto_server: str, s3: Any, store: SQLiteStateStore
) -> None:
    keys = [f"obj-{i:02d}" for i in range(23)]
    bucket = await new_bucket(s3, keys)
    source = poller(moto_server, bucket, store, page_size=5, starting_position="TRIM_HORIZON")
    await source.start()
    try:
        records = await pump(source, store, 23)
        await quiet(source, store)
    finally:
        await source.stop()
    assert sorted(r.payload["s3"]["object"]["key"] for r in records) == keys


async def test_restart_delivers_changes_made_while_down_and_replays_nothing(
    moto_server: str, s3: Any, store: SQLiteStateStore
) -> None:
    bucket = await new_bucket(s3, [f"k{i}" for i in range(6)])
    first = poller(moto_server, bucket, store, starting_position="TRIM_HORIZON")
    await first.start()
    try:
        await pump(first, store, 6)
        await quiet(first, store)
    finally:
        await first.stop()
    await s3.put_object(Bucket=bucket, Key="while down", Body=b"x")
    await s3.put_object(Bucket=bucket, Key="k0", Body=b"rewritten")
    await s3.delete_object(Bucket=bucket, Key="k1")
    second = poller(moto_server, bucket, store, starting_position="TRIM_HORIZON")
    await second.start()
    try:
        records = await pump(second, store, 3)
        await quiet(second, store)
    finally:
        await second.stop()
    assert events_of(records) == [
        ("ObjectCreated:Put", "k0"),
        ("ObjectCreated:Put", "while+down"),
        ("ObjectRemoved:Delete", "k1"),
    ]


async def test_records_not_committed_before_a_stop_are_emitted_again(
    moto_server: str, s3: Any, store: SQLiteStateStore
) -> None:
    bucket = await new_bucket(s3, [f"k{i}" for i in range(8)])
    first = poller(moto_server, bucket, store, starting_position="TRIM_HORIZON")
    await first.start()
    try:
        committed = await pump(first, store, 3)
        await pump(first, store, 2, ack=False)  # received, never enqueued: a crash
    finally:
        await first.stop()
    second = poller(moto_server, bucket, store, starting_position="TRIM_HORIZON")
    await second.start()
    try:
        rest = await pump(second, store, 5)
        await quiet(second, store)
    finally:
        await second.stop()
    done = {r.payload["s3"]["object"]["key"] for r in committed}
    again = {r.payload["s3"]["object"]["key"] for r in rest}
    assert not done & again
    assert done | again == {f"k{i}" for i in range(8)}


async def test_prefix_and_suffix_rules_select_keys(
    moto_server: str, s3: Any, store: SQLiteStateStore
) -> None:
    bucket = await new_bucket(
        s3, ["in/a.jpg", "in/b.png", "out/c.jpg", "in/sub/d.jpg", "inbox.jpg"]
    )
    source = poller(
        moto_server, bucket, store, prefix="in/", suffix=".jpg", starting_position="TRIM_HORIZON"
    )
    await source.start()
    try:
        records = await pump(source, store, 2)
        await quiet(source, store)
        await s3.delete_object(Bucket=bucket, Key="out/c.jpg")
        await s3.delete_object(Bucket=bucket, Key="in/a.jpg")
        deleted = await pump(source, store, 1)
        await quiet(source, store)
    finally:
        await source.stop()
    assert events_of(records) == [
        ("ObjectCreated:Put", "in/a.jpg"),
        ("ObjectCreated:Put", "in/sub/d.jpg"),
    ]
    assert events_of(deleted) == [("ObjectRemoved:Delete", "in/a.jpg")]


async def test_unselected_event_types_update_state_without_events(
    moto_server: str, s3: Any, store: SQLiteStateStore
) -> None:
    bucket = await new_bucket(s3, ["a"])
    source = poller(moto_server, bucket, store, events=["s3:ObjectRemoved:*"])
    await source.start()
    try:
        await quiet(source, store)
        await s3.put_object(Bucket=bucket, Key="b", Body=b"b")
        await quiet(source, store)
        assert "o:b" in await store.list_checkpoints(TRIGGER, "o:")
        await s3.delete_object(Bucket=bucket, Key="b")
        records = await pump(source, store, 1)
        await quiet(source, store)
    finally:
        await source.stop()
    assert events_of(records) == [("ObjectRemoved:Delete", "b")]


async def test_versioned_bucket_events_carry_the_version_id(
    moto_server: str, s3: Any, store: SQLiteStateStore
) -> None:
    bucket = await new_bucket(s3, versioned=True)
    source = poller(moto_server, bucket, store)
    await source.start()
    try:
        await quiet(source, store)
        put = await s3.put_object(Bucket=bucket, Key="v.txt", Body=b"v1")
        [record] = await pump(source, store, 1)
    finally:
        await source.stop()
    assert record.payload["s3"]["object"]["versionId"] == put["VersionId"]


async def test_missing_bucket_is_logged_with_its_code_and_never_the_secret(
    moto_server: str, store: SQLiteStateStore, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "wJalrXUtnFEMI-SUPER-SECRET-KEY"
    source = poller(
        moto_server,
        unique("missing"),
        store,
        aws_access_key_id="AKIDTESTKEY",
        aws_secret_access_key=secret,
        poll_interval_s=0.05,
    )
    caplog.set_level(logging.DEBUG)
    await source.start()
    try:
        for _ in range(200):
            if any(r.getMessage() == "s3.poll_failed" for r in caplog.records):
                break
            assert await source.receive(10, 0.05) == []  # the first receive starts listing
    finally:
        await source.stop()
    failed = [r for r in caplog.records if r.getMessage() == "s3.poll_failed"]
    assert failed and failed[0].__dict__["code"] == "NoSuchBucket"
    text = caplog.text + " ".join(str(r.__dict__) for r in caplog.records)
    assert secret not in text
    assert source.scans == 0


async def test_an_endpoint_answering_200_with_a_web_page_fails_the_listing_without_deletes(
    store: SQLiteStateStore,
) -> None:
    """botocore parses any 200 body into an empty ListObjectsV2 answer: taken as a listing
    of an empty bucket, every object known got an ObjectRemoved:Delete (a proxy's page, or a
    wrong endpoint_url, and the function was told the whole bucket was deleted)."""
    from tests.integration.sqs_harness import error_page

    known = '{"etag":"1","size":1,"last_modified":"2024-05-01T00:00:00.000Z"}'
    await store.set_checkpoints(TRIGGER, {"meta:initialized": "1", "o:a": known, "o:b": known})
    async with error_page(200) as endpoint:
        source = poller(endpoint, "bkt", store, path_style=True)
        await source.start()
        scan = asyncio.create_task(source.scan_once())
        emitted = asyncio.create_task(source._ready.get())
        try:
            await asyncio.wait({scan, emitted}, return_when=asyncio.FIRST_COMPLETED)
            assert not emitted.done(), f"emitted {emitted.result().payload['eventName']}"
            with pytest.raises(RuntimeError, match=r"ListObjectsV2 .*no Name .*text/html"):
                await scan
        finally:
            for task in (scan, emitted):
                task.cancel()
            await asyncio.gather(scan, emitted, return_exceptions=True)
            await source.stop()
    assert sorted(await store.list_checkpoints(TRIGGER, "o:")) == ["o:a", "o:b"]
