"""Kinesis records in Lambda's shape (LAMBDA_SEMANTICS.md §1.6), compared with the golden
file; the view filter patterns see (data decoded); the batch info of an on-failure record."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from triggerd.events.filters import compile_filters
from triggerd_kinesis.shape import Shaper, sample_event
from triggerd_kinesis.source import KinesisSource

GOLDEN = Path(__file__).resolve().parents[1] / "golden"


def test_sample_event_matches_the_golden_file() -> None:
    expected = json.loads((GOLDEN / "kinesis_event.json").read_text())
    assert sample_event({}) == expected
    assert list(sample_event({})["Records"][0]) == list(expected["Records"][0])


def test_arrival_time_from_botocore_datetime_is_epoch_seconds_with_milliseconds() -> None:
    shaper = Shaper("arn:aws:kinesis:eu-west-1:1:stream/s", "eu-west-1", "arn:aws:iam::1:role/r")
    raw = {
        "SequenceNumber": "42",
        "PartitionKey": "pk",
        "Data": b"\x00\x01",
        "ApproximateArrivalTimestamp": datetime(2024, 5, 1, 0, 38, 4, 835000, tzinfo=UTC),
    }
    record = shaper.record(raw, "shardId-000000000001")
    assert record.payload["kinesis"]["approximateArrivalTimestamp"] == 1714523884.835
    assert record.payload["kinesis"]["data"] == "AAE="
    assert record.item_id == "42"
    assert record.key == "shardId-000000000001"


def test_parallelization_factor_spreads_keys_over_lanes_of_the_shard() -> None:
    shaper = Shaper("arn", "us-east-1", "role", parallelization_factor=3)
    keys = set()
    for i in range(30):
        raw = {
            "SequenceNumber": str(i),
            "PartitionKey": f"k{i % 6}",
            "Data": b"x",
            "ApproximateArrivalTimestamp": 1.0,
        }
        rec = shaper.record(raw, "shardId-1")
        keys.add((f"k{i % 6}", rec.key))
    lanes = {lane for _, lane in keys}
    assert len(keys) == 6  # one lane per partition key
    assert lanes <= {"shardId-1#0", "shardId-1#1", "shardId-1#2"} and len(lanes) > 1


def test_filters_match_the_decoded_data_and_the_kinesis_metadata() -> None:
    shaper = Shaper("arn", "us-east-1", "role")
    data = base64.b64decode(base64.b64encode(b'{"kind": "order", "n": 3}'))
    raw = {
        "SequenceNumber": "1",
        "PartitionKey": "p1",
        "Data": data,
        "ApproximateArrivalTimestamp": 1.0,
    }
    record = shaper.record(raw, "shardId-1")
    view = KinesisSource.filter_view(None, record)  # type: ignore[arg-type]
    assert compile_filters([{"data": {"kind": ["order"]}}]).matches(view)
    assert compile_filters([{"partitionKey": ["p1"]}]).matches(view)
    assert not compile_filters([{"data": {"kind": ["refund"]}}]).matches(view)


def test_wire_values_give_the_same_record_as_botocores_default_parsing() -> None:
    """The source's client hands over `Data` as base64 text and the arrival time as epoch
    seconds (`wire_values`): the record is the one bytes and a datetime give."""
    shaper = Shaper("arn", "us-east-1", "role")
    parsed = {
        "SequenceNumber": "7",
        "PartitionKey": "pk",
        "Data": b'{"a": 1}',
        "ApproximateArrivalTimestamp": datetime(2024, 5, 1, 0, 38, 4, 835000, tzinfo=UTC),
    }
    wire = {
        **parsed,
        "Data": base64.b64encode(b'{"a": 1}').decode(),
        "ApproximateArrivalTimestamp": 1714523884.835,
    }
    a, b = shaper.record(parsed, "shardId-1"), shaper.record(wire, "shardId-1")
    assert a.payload == b.payload
    assert (a.size, a.created_at, a.key) == (b.size, b.created_at, b.key)


def test_an_at_timestamp_without_an_offset_is_utc_whatever_the_machines_zone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`starting_position_timestamp = "2026-12-01T00:00:00"` starts at midnight UTC: read in
    the daemon's zone (New York here), the stream would start five hours later and the
    records of those hours would be skipped."""
    import time

    from triggerd_kinesis.config import KinesisSourceConfig

    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        cfg = KinesisSourceConfig(
            type="kinesis",
            stream="s",
            starting_position="AT_TIMESTAMP",
            starting_position_timestamp="2026-12-01T00:00:00",  # type: ignore[arg-type]
        )
        with_offset = cfg.model_copy(
            update={"starting_position_timestamp": datetime(2026, 12, 1, 9, tzinfo=UTC)}
        )
        assert cfg.starting_epoch == datetime(2026, 12, 1, tzinfo=UTC).timestamp()
        assert with_offset.starting_epoch == datetime(2026, 12, 1, 9, tzinfo=UTC).timestamp()
    finally:
        monkeypatch.undo()
        time.tzset()
