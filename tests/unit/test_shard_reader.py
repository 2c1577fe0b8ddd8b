"""The shard reader shared by the Kinesis and DynamoDB Streams sources, against a scripted
Kinesis-like API: children of a split or merge start only after their parents are finished
(checkpointed at their end), throttling backs off without losing or repeating a record, an
expired iterator is replaced just after the last record read, and a new reader resumes after
the checkpoints."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import pytest

from triggerd.delivery.shards import (
    SHARD_END,
    IteratorExpired,
    Page,
    ShardGone,
    ShardInfo,
    ShardReader,
    Throttled,
    Trimmed,
)
from triggerd.state.sqlite import SQLiteStateStore
from triggerd.types import Record


class Clock:
    """Fake time that moves on when someone sleeps; sleeping still yields to the loop."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept = 0.0

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.slept += seconds
        await asyncio.sleep(0.001)


@dataclass
class FakeApi:
    """Shards of integer sequence numbers; an iterator is `shard:index`."""

    records: dict[str, list[int]]
    parents: dict[str, tuple[str, ...]] = field(default_factory=dict)
    closed: set[str] = field(default_factory=set)
    throttle: int = 0
    expire_after_first_page: bool = False
    #: Sequence numbers up to this one are gone (AFTER_SEQUENCE_NUMBER before it: Trimmed).
    trimmed_upto: int = 0
    #: AFTER_SEQUENCE_NUMBER before `trimmed_upto` gives an iterator all the same, and
    #: GetRecords with it raises Trimmed.
    lenient_iterators: bool = False
    #: Shards trimmed away: not listed, ShardGone for their iterators and records.
    gone: set[str] = field(default_factory=set)
    #: Behave like servers that never return a null iterator for a closed shard.
    keep_iterator_at_end: bool = False
    #: Every GetRecords call answers ExpiredIteratorException (a server that misbehaves).
    always_expired: bool = False
    expired_calls: int = 0
    calls: list[str] = field(default_factory=list)
    _pages: int = 0

    async def list_shards(self) -> list[ShardInfo]:
        return [
            ShardInfo(
                sid,
                self.parents.get(sid, ()),
                str(max(recs, default=0)) if sid in self.closed else None,
            )
            for sid, recs in self.records.items()
            if sid not in self.gone
        ]

    async def iterator(
        self, shard_id: str, kind: str, *, sequence: str | None, timestamp: float | None
    ) -> str:
        recs = self.records[shard_id]
        self.calls.append(f"iterator {shard_id} {kind} {sequence}")
        if shard_id in self.gone:
            raise ShardGone("ResourceNotFoundException")
        if kind == "TRIM_HORIZON":
            return f"{shard_id}:{sum(1 for r in recs if r < self.trimmed_upto)}"
        if kind == "LATEST":
            return f"{shard_id}:{len(recs)}"
        assert kind == "AFTER_SEQUENCE_NUMBER" and sequence is not None
        if int(sequence) < self.trimmed_upto and not self.lenient_iterators:
            raise Trimmed("TrimmedDataAccessException")
        return f"{shard_id}:{sum(1 for r in recs if r <= int(sequence))}"

    async def get_records(self, iterator: str, limit: int) -> Page:
        if self.throttle:
            self.throttle -= 1
            raise Throttled("ProvisionedThroughputExceededException")
        self._pages += 1
        if self.always_expired:
            self.expired_calls += 1
            await asyncio.sleep(0)  # a real call yields
            raise IteratorExpired("ExpiredIteratorException")
        if self.expire_after_first_page and self._pages == 2:
            raise IteratorExpired("ExpiredIteratorException")
        sid, _, index = iterator.partition(":")
        start = int(index)
        recs = self.records[sid]
        if sid in self.gone or (start < len(recs) and recs[start] < self.trimmed_upto):
            self.calls.append(f"get_records {sid} refused")
            await asyncio.sleep(0)  # a real call yields: a reader retrying it cannot starve us
            raise ShardGone("ResourceNotFoundException") if sid in self.gone else Trimmed("")
        page = recs[start : start + limit]
        end = start + len(page)
        done = sid in self.closed and end >= len(recs) and not self.keep_iterator_at_end
        return Page(list(page), None if done else f"{sid}:{end}", 0)


def shape(raw: Any, shard_id: str) -> Record:
    return Record(payload={"n": raw, "shard": shard_id}, item_id=str(raw), size=10, created_at=0.0)


@pytest.fixture
async def store(tmp_path: Any) -> Any:
    state = SQLiteStateStore(str(tmp_path / "state.db"))
    await state.open()
    yield state
    await state.close()


def reader(api: FakeApi, store: Any, clock: Clock, **kw: Any) -> ShardReader:
    return ShardReader(
        api=api,
        shape=shape,
        state=store,
        clock=clock,
        log=logging.getLogger("test.shards"),
        trigger="t",
        page_limit=2,
        poll_interval_s=1.0,
        **kw,
    )


async def consume(r: ShardReader, count: int) -> list[Record]:
    """Take and acknowledge records until `count` came (or a bounded number of rounds)."""
    got: list[Record] = []
    for _ in range(2000):
        r.check()
        batch = r.take(100)
        if batch:
            got += batch
            await r.ack(batch)
        if len(got) >= count:
            return got
        await asyncio.sleep(0.001)
    raise AssertionError(f"only {len(got)} of {count} records came")


async def read_through(r: ShardReader, count: int) -> list[Record]:
    """Start `r`, take and acknowledge `count` records, stop it."""
    await r.start()
    try:
        return await consume(r, count)
    finally:
        await r.stop()


async def test_children_start_only_after_their_parents_finished(store: Any) -> None:
    # shard-0 split into shard-1 and shard-2, which were merged into shard-3.
    api = FakeApi(
        records={
            "shard-0": [1, 2, 3, 4, 5],
            "shard-1": [10, 11],
            "shard-2": [20, 21, 22],
            "shard-3": [30],
        },
        parents={
            "shard-1": ("shard-0",),
            "shard-2": ("shard-0",),
            "shard-3": ("shard-1", "shard-2"),
        },
        closed={"shard-0", "shard-1", "shard-2"},
    )
    r = reader(api, store, Clock())
    await r.start()
    try:
        assert r.shard_state() == {
            "shard-0": "reading",
            "shard-1": "waiting for parents",
            "shard-2": "waiting for parents",
            "shard-3": "waiting for parents",
        }
        got = await consume(r, 11)
    finally:
        await r.stop()
    order = [rec.payload["n"] for rec in got]
    assert sorted(order) == [1, 2, 3, 4, 5, 10, 11, 20, 21, 22, 30]
    pos = {n: i for i, n in enumerate(order)}
    assert max(pos[n] for n in (1, 2, 3, 4, 5)) < min(pos[n] for n in (10, 11, 20, 21, 22))
    assert max(pos[n] for n in (10, 11, 20, 21, 22)) < pos[30]
    saved = await store.list_checkpoints("t", "shard:")
    assert saved["shard:shard-0"] == saved["shard:shard-1"] == saved["shard:shard-2"] == SHARD_END


async def test_a_child_waits_while_its_parents_last_record_is_unacknowledged(store: Any) -> None:
    api = FakeApi(records={"p": [1], "c": [2]}, parents={"c": ("p",)}, closed={"p"})
    r = reader(api, store, Clock())
    await r.start()
    try:
        first: list[Record] = []
        for _ in range(200):
            first += r.take(10)
            if first:
                break
            await asyncio.sleep(0.001)
        for _ in range(50):  # the parent's record is out, not acknowledged: c must not start
            await asyncio.sleep(0.001)
            assert r.take(10) == []
        assert r.shard_state()["c"] == "waiting for parents"
        await r.ack(first)
        got = await consume(r, 1)
    finally:
        await r.stop()
    assert [x.payload["n"] for x in first + got] == [1, 2]


async def test_throttling_backs_off_and_loses_nothing(store: Any) -> None:
    api = FakeApi(records={"s": [1, 2, 3, 4, 5]}, throttle=4)
    clock = Clock()
    r = reader(api, store, clock)
    got = await read_through(r, 5)
    assert [x.payload["n"] for x in got] == [1, 2, 3, 4, 5]
    assert api.throttle == 0
    assert clock.slept >= 0.2 + 0.4 + 0.8  # exponential backoff before reading again


async def test_an_expired_iterator_is_renewed_after_the_last_record_read(store: Any) -> None:
    api = FakeApi(records={"s": [1, 2, 3, 4, 5]}, expire_after_first_page=True)
    r = reader(api, store, Clock())
    got = await read_through(r, 5)
    assert [x.payload["n"] for x in got] == [1, 2, 3, 4, 5]  # no gap, no repeat
    assert "iterator s AFTER_SEQUENCE_NUMBER 2" in api.calls


class SleepLog(Clock):
    """The fake clock, keeping every sleep asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.sleeps: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        await super().sleep(seconds)


async def test_an_iterator_that_expires_again_and_again_is_renewed_with_a_backoff(
    store: Any,
) -> None:
    """The first expiry is renewed at once; one more without a page read in between waits
    the reader's backoff (0.2 s doubling to 10 s), so a server that answers every fresh
    iterator with ExpiredIteratorException is not called (and logged) in a hot loop."""
    api = FakeApi(records={"s": [1]}, always_expired=True)
    clock = SleepLog()
    r = reader(api, store, clock)
    await r.start()
    try:
        for _ in range(5000):
            if api.expired_calls >= 12:
                break
            await asyncio.sleep(0.001)
    finally:
        await r.stop()
    assert api.expired_calls >= 12
    # Besides the shard listing's period: a wait before each renewal after the first.
    waits = [s for s in clock.sleeps if s != r.refresh_s]
    assert len(waits) >= 10
    assert waits[0] <= 0.2 and 8 <= waits[9] <= 10  # doubling, capped (less its jitter)


async def test_a_new_reader_resumes_after_the_checkpoint(store: Any) -> None:
    api = FakeApi(records={"s": [1, 2, 3]})
    r = reader(api, store, Clock())
    await read_through(r, 3)
    api.records["s"] += [4, 5]
    again = reader(api, store, Clock())
    got = await read_through(again, 2)
    assert [x.payload["n"] for x in got] == [4, 5]
    assert api.calls[-1] == "iterator s AFTER_SEQUENCE_NUMBER 3"


async def test_latest_at_the_first_start_skips_closed_shards_and_old_records(store: Any) -> None:
    api = FakeApi(records={"old": [1, 2], "new": [3, 4]}, parents={"new": ("old",)}, closed={"old"})
    r = reader(api, store, Clock(), starting_position="LATEST")
    await r.start()
    try:
        api.records["new"].append(5)
        got = await consume(r, 1)
    finally:
        await r.stop()
    assert [x.payload["n"] for x in got] == [5]
    assert "old" not in r.shard_state()


async def test_latest_applies_at_the_triggers_first_start_not_at_a_restart_after_a_reshard(
    store: Any,
) -> None:
    """The parent was checkpointed part way, its child never: after a restart the child is
    read from its beginning once the parent is finished, not from LATEST."""
    await store.set_checkpoints("t", {"shard:p": "2"})
    api = FakeApi(records={"p": [1, 2, 3], "c": [4, 5]}, parents={"c": ("p",)}, closed={"p"})
    r = reader(api, store, Clock(), starting_position="LATEST")
    got = await read_through(r, 3)
    assert [x.payload["n"] for x in got] == [3, 4, 5]
    assert "iterator c TRIM_HORIZON None" in api.calls


async def test_iterator_age_per_shard_is_the_oldest_unprocessed_record(store: Any) -> None:
    api = FakeApi(records={"s": [1, 2]})
    clock = Clock()
    r = reader(api, store, clock)
    await r.start()
    try:
        for _ in range(200):
            if r.take(1):
                break
            await asyncio.sleep(0.001)
        clock.now += 30
        [part] = r.stats().partitions
    finally:
        await r.stop()
    assert part.partition == "s"
    assert part.lag_seconds >= 30  # record created at 0: far older than now


class _ThrottlingClient:
    """A Kinesis client whose GetRecords raises AWS's errors before it answers."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = errors

    async def get_records(self, **kwargs: Any) -> dict[str, Any]:
        from botocore.exceptions import ClientError

        if self.errors:
            code = self.errors.pop(0)
            raise ClientError({"Error": {"Code": code, "Message": "slow down"}}, "GetRecords")
        return {"Records": [], "NextShardIterator": "next", "MillisBehindLatest": 0}


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("ProvisionedThroughputExceededException", Throttled),
        ("LimitExceededException", Throttled),
        ("ExpiredIteratorException", IteratorExpired),
        ("ResourceNotFoundException", ShardGone),
    ],
)
async def test_kinesis_api_maps_aws_errors_to_the_readers_policy(
    code: str, expected: type[Exception]
) -> None:
    from triggerd_kinesis.client import KinesisApi

    api = KinesisApi(_ThrottlingClient([code]), "arn:aws:kinesis:us-east-1:1:stream/s")
    with pytest.raises(expected):
        await api.get_records("it", 10)
    page = await api.get_records("it", 10)
    assert page.next_iterator == "next"


async def test_dynamodb_streams_api_maps_throttling_too() -> None:
    from triggerd_dynamodb_streams.client import StreamsApi

    api = StreamsApi(_ThrottlingClient(["ProvisionedThroughputExceededException"]), "arn")
    with pytest.raises(Throttled):
        await api.get_records("it", 10)


class _RefusingListing(FakeApi):
    """A FakeApi whose shard listing fails `failures` times with `error` first."""

    error: Exception = Throttled("LimitExceededException")
    failures: int = 1

    async def list_shards(self) -> list[ShardInfo]:
        if self.failures:
            self.failures -= 1
            raise self.error
        return await super().list_shards()


def _client_error(code: str, status: int, operation: str) -> Exception:
    from botocore.exceptions import ClientError

    return ClientError(
        {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},
        operation,
    )


@pytest.mark.parametrize(
    "error",
    [
        Throttled("LimitExceededException"),
        _client_error("InternalFailure", 500, "ListShards"),
        _client_error("ServiceUnavailable", 503, "DescribeStream"),
        _client_error("ResourceInUseException", 400, "ListShards"),  # a CREATING stream
    ],
    ids=["throttled", "internal-failure", "unavailable", "stream-being-created"],
)
async def test_a_busy_server_at_start_is_retryable_and_the_next_start_reads(
    store: Any, error: Exception
) -> None:
    """A throttled (or 5xx) shard listing at start: a RetryableError, which the daemon
    retries later (`source.start_deferred`), not an exception that ends it with a traceback."""
    from triggerd.types import RetryableError

    api = _RefusingListing(records={"s": [1, 2]})
    api.error = error
    r = reader(api, store, Clock())
    with pytest.raises(
        RetryableError, match="trigger 't': source \\(stream\\): listing the shards"
    ):
        await r.start()
    again = reader(api, store, Clock())
    got = await read_through(again, 2)
    assert [x.payload["n"] for x in got] == [1, 2]


async def test_a_refused_shard_listing_at_start_is_a_one_line_config_error(store: Any) -> None:
    """The credentials may not list the shards (no kinesis:ListShards): a ConfigError that
    names the trigger and AWS's code (the daemon exits 2 with it), not a traceback."""
    from triggerd.types import ConfigError

    api = _RefusingListing(records={"s": [1]})
    api.error = _client_error("AccessDeniedException", 400, "ListShards")
    with pytest.raises(ConfigError) as caught:
        await reader(api, store, Clock()).start()
    assert caught.value.problems == [
        "trigger 't': source (stream): listing the shards failed: AccessDeniedException: m"
    ]


class _DescribeClient:
    """A client whose describe calls raise `error`."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    async def describe_stream_summary(self, **kwargs: Any) -> dict[str, Any]:
        raise self.error

    async def describe_stream(self, **kwargs: Any) -> dict[str, Any]:
        raise self.error


@pytest.mark.parametrize(
    ("code", "status", "retryable"),
    [
        ("LimitExceededException", 400, True),
        ("ThrottlingException", 400, True),
        ("InternalFailure", 500, True),
        ("ResourceNotFoundException", 400, False),
        ("AccessDeniedException", 400, False),
    ],
)
async def test_stream_lookup_at_start_retries_a_busy_server_and_refuses_a_wrong_stream(
    code: str, status: int, retryable: bool
) -> None:
    """DescribeStreamSummary (Kinesis: 20 calls/s per account) and DescribeStream (DynamoDB
    Streams: 10 calls/s) throttled, or failing on the server's side, at start: the daemon
    tries again later; only a refusal of the stream itself is the config's error."""
    from contextlib import AsyncExitStack
    from unittest import mock

    from triggerd.types import ConfigError, RetryableError
    from triggerd_dynamodb_streams import client as ddb_client
    from triggerd_dynamodb_streams.config import DynamoDBStreamsSourceConfig
    from triggerd_kinesis.client import stream_arn
    from triggerd_kinesis.config import KinesisSourceConfig

    expected = RetryableError if retryable else ConfigError
    fake = _DescribeClient(_client_error(code, status, "DescribeStreamSummary"))
    kinesis = KinesisSourceConfig(type="kinesis", stream="clicks")
    with pytest.raises(expected, match=code):
        await stream_arn(fake, kinesis, "t")
    ddb = DynamoDBStreamsSourceConfig(
        type="dynamodb_streams",
        stream="arn:aws:dynamodb:us-east-1:123456789012:table/orders/stream/2026-01-01T00:00:00.000",
    )

    async def opened(*args: Any) -> _DescribeClient:
        return fake

    async with AsyncExitStack() as stack:
        with (
            mock.patch.object(ddb_client, "open_client", opened),
            pytest.raises(expected, match=code),
        ):
            await ddb_client.resolve_stream(stack, ddb, "us-east-1", "t")


class _RefusingIterators:
    def __init__(self, code: str) -> None:
        self.code = code

    async def get_shard_iterator(self, **kwargs: Any) -> dict[str, Any]:
        from botocore.exceptions import ClientError

        raise ClientError({"Error": {"Code": self.code, "Message": "no"}}, "GetShardIterator")


async def test_kinesis_api_maps_a_refused_starting_sequence_to_trimmed() -> None:
    from botocore.exceptions import ClientError

    from triggerd_kinesis.client import KinesisApi

    api = KinesisApi(_RefusingIterators("InvalidArgumentException"), "arn")
    with pytest.raises(Trimmed):
        await api.iterator("s", "AFTER_SEQUENCE_NUMBER", sequence="5", timestamp=None)
    with pytest.raises(ClientError):  # no sequence: a real argument error
        await api.iterator("s", "TRIM_HORIZON", sequence=None, timestamp=None)
    gone = KinesisApi(_RefusingIterators("ResourceNotFoundException"), "arn")
    with pytest.raises(ShardGone):
        await gone.iterator("s", "TRIM_HORIZON", sequence=None, timestamp=None)


async def test_dynamodb_streams_api_maps_a_shard_not_found_to_shard_gone() -> None:
    from triggerd_dynamodb_streams.client import StreamsApi

    api = StreamsApi(_ThrottlingClient(["ResourceNotFoundException"]), "arn")
    with pytest.raises(ShardGone):
        await api.get_records("it", 10)
    trimmed = StreamsApi(_RefusingIterators("TrimmedDataAccessException"), "arn")
    with pytest.raises(Trimmed):
        await trimmed.iterator("s", "AFTER_SEQUENCE_NUMBER", sequence="5", timestamp=None)


class FlakyStore:
    """A state store whose checkpoint writes fail `failures` times first."""

    def __init__(self, inner: Any, failures: int) -> None:
        self.inner = inner
        self.failures = failures

    async def set_checkpoints(self, scope: str, items: Any) -> None:
        if self.failures:
            self.failures -= 1
            raise OSError("disk full")
        await self.inner.set_checkpoints(scope, items)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_a_failed_checkpoint_write_is_retried_and_never_fails_the_ack(store: Any) -> None:
    api = FakeApi(records={"p": [1, 2], "c": [3]}, parents={"c": ("p",)}, closed={"p"})
    flaky = FlakyStore(store, failures=2)
    r = reader(api, flaky, Clock())
    got = await read_through(r, 3)
    # The parent's end was written after the failures, then its child was read.
    assert [x.payload["n"] for x in got] == [1, 2, 3]
    saved = await store.list_checkpoints("t", "shard:")
    assert saved == {"shard:p": SHARD_END, "shard:c": "3"}


async def test_a_checkpoint_older_than_the_retention_goes_on_from_the_oldest_record(
    store: Any,
) -> None:
    await store.set_checkpoints("t", {"shard:s": "2"})
    api = FakeApi(records={"s": [5, 6]}, trimmed_upto=5)
    r = reader(api, store, Clock())
    got = await read_through(r, 2)
    assert [x.payload["n"] for x in got] == [5, 6]
    assert "iterator s TRIM_HORIZON None" in api.calls


def _trim_warnings(caplog: pytest.LogCaptureFixture) -> list[tuple[str, Any, str]]:
    return [
        (r.shard, r.after, r.skipped)  # type: ignore[attr-defined]
        for r in caplog.records
        if r.getMessage() == "stream.records_trimmed"
    ]


async def test_records_trimmed_after_the_position_are_skipped_once_from_the_trim_horizon(
    store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Kinesis-like: the iterator after the checkpoint is given, its GetRecords is refused."""
    await store.set_checkpoints("t", {"shard:s": "2"})
    api = FakeApi(records={"s": [1, 2, 3, 4, 5, 6]}, trimmed_upto=5, lenient_iterators=True)
    r = reader(api, store, Clock())
    got = await read_through(r, 2)
    assert [x.payload["n"] for x in got] == [5, 6]  # 3 and 4 are lost upstream
    assert api.calls.count("get_records s refused") == 1
    assert api.calls.count("iterator s TRIM_HORIZON None") == 1
    assert _trim_warnings(caplog) == [("s", "2", "up_to_trim_horizon")]
    assert await store.get_checkpoint("t", "shard:s") == "6"


async def test_a_shard_trimmed_away_while_read_is_finished_and_its_children_start(
    store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    api = FakeApi(records={"p": [1, 2]})
    r = reader(api, store, Clock(), refresh_s=1e9)  # no refresh: the reader lists itself
    await r.start()
    try:
        got = await consume(r, 2)
        # Resharded, then the parent went past the retention before it was read to its end.
        api.records["c"] = [3]
        api.parents["c"] = ("p",)
        api.gone.add("p")
        got += await consume(r, 1)
        assert "p" not in r.shards  # finished: its task ended, not retrying
    finally:
        await r.stop()
    assert [x.payload["n"] for x in got] == [1, 2, 3]
    assert await store.list_checkpoints("t", "shard:") == {"shard:p": SHARD_END, "shard:c": "3"}
    assert _trim_warnings(caplog) == [("p", "2", "rest_of_shard")]
    assert api.calls.count("get_records p refused") == 1


async def test_a_shard_not_found_but_still_listed_is_retried_from_its_position(
    store: Any,
) -> None:
    """ResourceNotFoundException while the listing still has the shard (e.g. a listing
    that lags): no records skipped, the same position tried again after a backoff."""
    api = FakeApi(records={"s": [1, 2, 3]})
    api.gone.add("s")
    listed = FakeApi(records={"s": [1, 2, 3]})
    api.list_shards = listed.list_shards  # type: ignore[method-assign]
    await store.set_checkpoints("t", {"shard:s": "1"})
    clock = Clock()
    r = reader(api, store, clock)
    await r.start()
    try:
        while api.calls.count("iterator s AFTER_SEQUENCE_NUMBER 1") < 2:
            await asyncio.sleep(0.001)
        api.gone.clear()
        got = await consume(r, 2)
    finally:
        await r.stop()
    assert [x.payload["n"] for x in got] == [2, 3]
    assert not [c for c in api.calls if "TRIM_HORIZON" in c]
    assert clock.slept > 0  # backed off between the tries


async def test_a_shard_closed_after_start_lets_its_children_run_after_a_refresh(
    store: Any,
) -> None:
    # A server that keeps returning an iterator at the end of a closed shard: the reader
    # learns from the next shard listing that it closed, and ends it there.
    api = FakeApi(records={"p": [1, 2]})
    r = reader(api, store, Clock(), refresh_s=5.0)
    await r.start()
    try:
        await consume(r, 2)
        api.records["c"] = [3]
        api.parents["c"] = ("p",)
        api.closed.add("p")
        api.keep_iterator_at_end = True
        got = await consume(r, 1)
    finally:
        await r.stop()
    assert [x.payload["n"] for x in got] == [3]


async def test_latest_after_a_restart_reads_a_child_shard_from_its_start(store: Any) -> None:
    # The mapping ran before (the parent has a checkpoint): its children appeared after the
    # first start, so a restart reads them from TRIM_HORIZON, not from LATEST. The closed
    # child (split again since) was never read either: it is not skipped as "closed before
    # the first start".
    await store.set_checkpoints("t", {"shard:p": "1"})
    api = FakeApi(
        records={"p": [1, 2], "c": [3, 4], "g": [5]},
        parents={"c": ("p",), "g": ("c",)},
        closed={"p", "c"},
    )
    r = reader(api, store, Clock(), starting_position="LATEST")
    got = await read_through(r, 4)
    assert [x.payload["n"] for x in got] == [2, 3, 4, 5]


@dataclass
class FlakyApi(FakeApi):
    """GetRecords fails once with a transient error, while a record is put meanwhile."""

    fail_once: bool = True

    async def get_records(self, iterator: str, limit: int) -> Page:
        if self.fail_once:
            self.fail_once = False
            self.records["s"].append(3)
            raise OSError("connection reset")
        return await super().get_records(iterator, limit)


async def test_latest_keeps_its_iterator_across_a_transient_read_error(store: Any) -> None:
    # Nothing was read yet, so a fresh LATEST iterator would start after the record put
    # while the call failed: the reader goes on with the iterator it has instead.
    api = FlakyApi(records={"s": [1, 2]})
    r = reader(api, store, Clock(), starting_position="LATEST")
    got = await read_through(r, 1)
    assert [x.payload["n"] for x in got] == [3]


class SlowClock(Clock):
    """A clock whose sleeps move it on by 10 ms only (everything happens within a second)."""

    async def sleep(self, seconds: float) -> None:
        await super().sleep(min(seconds, 0.01))


async def test_stats_count_the_records_acknowledged_per_second_per_shard(store: Any) -> None:
    api = FakeApi(records={"a": [1, 2, 3, 4, 5], "b": [6]})
    clock = SlowClock()
    r = reader(api, store, clock)
    await r.start()
    try:
        await consume(r, 6)
        elapsed = clock.now - 1000.0  # since the shards started: under the minute
        rates = {p.partition: p.records_per_s for p in r.stats().partitions}
    finally:
        await r.stop()
    assert rates == {"a": round(5 / elapsed, 1), "b": round(1 / elapsed, 1)}
    assert 0 < elapsed < 60
    assert rates["a"] > rates["b"] > 0


@pytest.mark.parametrize("restart", [False, True], ids=["while-running", "after-a-restart"])
async def test_a_stream_created_again_has_its_finished_shard_ids_read_again(
    store: Any, restart: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """A stream deleted and created again under its name keeps its ARN, and Kinesis names
    the new stream's shards as it named the old one's: a shard id finished before
    (SHARD_END stored) and now listed open is the new stream's shard. It is read from its
    start with one warning, not skipped as finished (a silent stall: the new stream's
    records never came)."""
    api = FakeApi(records={"shard-0": [1, 2], "shard-1": [3]}, parents={"shard-1": ("shard-0",)})
    api.closed.add("shard-0")  # split (here into one child, for short)
    r = reader(api, store, Clock(), refresh_s=5.0, reused_shard_ids=True)
    await r.start()
    try:
        await consume(r, 3)
        for _ in range(2000):  # shard-0's SHARD_END written
            if "shard-0" not in r.shards:
                break
            await asyncio.sleep(0.001)
        # Deleted and created again with one shard: shard-0, open, new records (the old
        # stream's shard-1 is not found any more).
        api.records["shard-0"] = [7, 8]
        api.gone.add("shard-1")
        api.closed.clear()
        if restart:
            await r.stop()
            r = reader(api, store, Clock(), refresh_s=5.0, reused_shard_ids=True)
            await r.start()
        caplog.set_level(logging.WARNING)
        got = await consume(r, 2)
    finally:
        await r.stop()
    assert [x.payload["n"] for x in got] == [7, 8]
    reopened = [x for x in caplog.records if x.getMessage() == "stream.shard_reopened"]
    assert [x.shard for x in reopened] == ["shard-0"]  # type: ignore[attr-defined]


_ORDERS = "arn:aws:dynamodb:us-east-1:123456789012:table/orders/stream/"


@pytest.mark.parametrize("follows", [True, False], ids=["table-named", "stream-named"])
async def test_a_tables_new_stream_is_read_from_its_start_when_the_config_names_the_table(
    store: Any, follows: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """`stream = "orders"` (a table name) with LATEST: the table's streams were disabled and
    enabled again, so the next start finds a new stream ARN. That is still the trigger's
    source, read since its first start: the records put in the new stream before this start
    are delivered, also after a start cut short, and not after the old stream's position
    under the same shard id (moto names every DynamoDB stream's shard alike). A config
    naming another stream (here the new stream by its ARN) starts it from LATEST, as a new
    event source mapping."""
    from triggerd_dynamodb_streams.source import same_table

    old, new = _ORDERS + "2026-01-01T00:00:00.000", _ORDERS + "2026-02-01T00:00:00.000"
    await store.set_checkpoints("t", {"stream": old, "shard:shardId-1": "5"})
    api = FakeApi(records={"shardId-1": [1, 2]})
    continues = (lambda previous: same_table(previous, new)) if follows else None
    caplog.set_level(logging.WARNING)
    kw: dict[str, Any] = {"starting_position": "LATEST", "stream": new, "continues": continues}
    if follows:  # a start cut short (FakeApi has no AT_TIMESTAMP for a LATEST pin)
        cut_short = reader(api, store, Clock(), **kw)
        await cut_short.start()
        await cut_short.stop()
    r = reader(api, store, Clock(), **kw)
    await r.start()
    api.records["shardId-1"].append(3)  # put after the start
    try:
        got = await consume(r, 3 if follows else 1)
    finally:
        await r.stop()
    assert [x.payload["n"] for x in got] == ([1, 2, 3] if follows else [3])
    assert await store.get_checkpoint("t", "stream") == new
    events = [x.getMessage() for x in caplog.records]
    assert events == ["stream.replaced" if follows else "stream.checkpoints_reset"]
    assert not same_table(_ORDERS.replace("orders", "other") + "x", new)


class _FailingPages(FakeApi):
    """A FakeApi whose GetRecords fails `failures` times in a row first (an error that is
    neither throttling nor expiry: AccessDenied for hours, a server down)."""

    failures: int = 0

    async def get_records(self, iterator: str, limit: int) -> Page:
        if self.failures:
            self.failures -= 1
            await asyncio.sleep(0)
            raise RuntimeError("InternalFailure")
        return await super().get_records(iterator, limit)


async def test_a_shard_failing_for_hours_is_read_once_the_server_answers(store: Any) -> None:
    """1,100 failed reads in a row (about three hours at the 10 s cap of the backoff): the
    delay's exponent overflowed (OverflowError at the 1,025th), ending the reader's task
    group, so the shard was never read again (nor the trigger's other shards)."""
    api = _FailingPages(records={"s": [1, 2]})
    api.failures = 1100
    r = reader(api, store, Clock())
    await r.start()
    try:
        for _ in range(600):  # fake time: about 1 ms a failure here
            if not api.failures:
                break
            await asyncio.sleep(0.05)
        got = await consume(r, 2)
    finally:
        await r.stop()
    assert [x.payload["n"] for x in got] == [1, 2]


async def test_a_stream_created_again_and_resharded_while_down_is_read_from_its_start(
    store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A Kinesis stream deleted and created again under its name keeps its ARN and its shard
    ids; here it was also split while the daemon was down, so its new shard-0 is listed
    closed: taken for the old shard-0 (SHARD_END stored), its records were skipped without a
    word, and shard-1's old position started the new shard-1 after it. The stream's creation
    time tells: the old stream's checkpoints are dropped and the new stream is read from its
    start (also with LATEST: the trigger's first start is past)."""
    arn = "arn:aws:kinesis:us-east-1:123456789012:stream/clicks"
    await store.set_checkpoints(
        "t",
        {
            "stream": arn,
            "stream_created": "1000.5",
            "shard:shard-0": SHARD_END,
            "shard:shard-1": "5",
        },
    )
    api = FakeApi(
        records={"shard-0": [1, 2], "shard-1": [3], "shard-2": [4]},
        parents={"shard-1": ("shard-0",), "shard-2": ("shard-0",)},
        closed={"shard-0"},
    )
    caplog.set_level(logging.WARNING)
    kw: dict[str, Any] = {"stream": arn, "stream_created": "2000.25", "reused_shard_ids": True}
    r = reader(api, store, Clock(), starting_position="LATEST", **kw)
    got = await read_through(r, 4)
    assert sorted(x.payload["n"] for x in got) == [1, 2, 3, 4]
    assert [x.getMessage() for x in caplog.records] == ["stream.replaced"]
    assert await store.get_checkpoint("t", "stream_created") == "2000.25"
    # The same stream at the next start: nothing dropped.
    again = reader(api, store, Clock(), **kw)
    await again.start()
    await again.stop()
    assert await store.get_checkpoint("t", "shard:shard-0") == SHARD_END
    assert [x.getMessage() for x in caplog.records] == ["stream.replaced"]
