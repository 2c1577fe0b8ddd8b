"""The self-managed Kafka event shape, its batch info, filters on the decoded value, and the
sample event of `triggerd generate-event kafka`."""

from __future__ import annotations

import base64
import sys
from typing import Any

import orjson
import pytest

from triggerd.events.filters import compile_filters, view_with_data
from triggerd.types import Record
from triggerd_kafka.destination import record_key
from triggerd_kafka.shape import (
    PartitionShaper,
    _b64,
    _b64_binascii,
    _b64_encoder,
    _Message,
    batch_info,
    envelope,
    kafka_record,
    partition_key,
    record_size,
    sample_event,
    signed_bytes,
)


def rec(offset: int, value: bytes | None = b'{"a": 1}', **kw: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "topic": "my-topic",
        "partition": 3,
        "offset": offset,
        "timestamp": 1714564800123 + offset,
        "timestamp_type": 0,
        "key": b"k",
        "value": value,
        "headers": [],
    }
    args.update(kw)
    return kafka_record(**args)


def test_record_fields_in_aws_order_with_base64_and_signed_header_bytes() -> None:
    r = rec(15, headers=[("h", b"\x80\x7f"), ("h", b"x"), ("n", None)])
    assert list(r) == [
        "topic", "partition", "offset", "timestamp", "timestampType", "key", "value", "headers"
    ]  # fmt: skip
    assert r["key"] == base64.b64encode(b"k").decode()
    assert r["headers"] == [{"h": [-128, 127]}, {"h": [120]}, {"n": None}]


@pytest.mark.parametrize(
    ("kind", "text"), [(0, "CREATE_TIME"), (1, "LOG_APPEND_TIME"), (-1, "NO_TIMESTAMP_TYPE"),
                       (None, "NO_TIMESTAMP_TYPE")]
)  # fmt: skip
def test_timestamp_types(kind: int | None, text: str) -> None:
    assert rec(0, timestamp_type=kind)["timestampType"] == text


def test_null_key_is_left_out_and_a_tombstone_value_is_null() -> None:
    r = rec(0, key=None, value=None)
    assert "key" not in r and r["value"] is None


@pytest.mark.parametrize(
    ("topic", "partition", "offset", "timestamp", "stamp_type", "key", "value", "headers"),
    [
        ("t", 0, 0, 0, 0, None, b"", None),
        ("orders.v2_eu-west", 12, 9_876_543_210, 1714564800123, 1, b"k\x00\xff", b"x" * 1024, ()),
        ("t", 3, 7, -1, None, None, None, [("h", b"\x80\x7f"), ("h", None), ('\u00e9"q', b"")]),
        ("my-topic", 100, 1, 5, 0, b"", b'{"a": "\\u00e9"}', [("n", b"v")]),
    ],
)
def test_shaper_counts_each_record_at_its_json_size(
    topic: str,
    partition: int,
    offset: int,
    timestamp: int,
    stamp_type: int | None,
    key: bytes | None,
    value: bytes | None,
    headers: list[tuple[str, bytes | None]] | None,
) -> None:
    """The size comes from the parts, not from serialising: it must equal the JSON's size
    (the batcher's 6 MB cap counts it) and the record must be the one kafka_record builds."""
    payload, size = PartitionShaper(topic, partition).record(
        offset, timestamp, stamp_type, key, value, headers
    )
    assert size == len(orjson.dumps(payload))
    assert payload == kafka_record(
        topic=topic, partition=partition, offset=offset, timestamp=timestamp,
        timestamp_type=stamp_type, key=key, value=value, headers=headers or (),
    )  # fmt: skip


def test_one_fetch_of_mixed_widths_is_counted_record_by_record() -> None:
    """The shaper carries the width of one offset and timestamp over to the next record of a
    fetch: every record must still be counted at its own JSON size, whatever the widths."""
    numbers = [0, 9, 10, 99, 100, 7, 999_999, 1_000_000, 5, 1714564800123, 99_999_999_999_999]
    stamps = [*reversed(numbers[1:]), -1]
    messages = [
        _Message(o, t, i % 3 or None, None if i % 2 else b"k",
                 None if i == 4 else bytes(range(i)), [("h", b"\x01")] if i % 4 else ())
        for i, (o, t) in enumerate(zip(numbers, stamps, strict=True))
    ]  # fmt: skip
    payloads, sizes = PartitionShaper("t", 2).records(messages)
    assert [p["offset"] for p in payloads] == numbers
    assert sizes == [len(orjson.dumps(p)) for p in payloads]


def test_values_encode_the_same_without_pybase64() -> None:
    for data in (b"", b"a", b"ab", b"abc", bytes(range(256)) * 5):
        assert _b64(data) == _b64_binascii(data) == base64.b64encode(data).decode()


def test_without_pybase64_the_shape_is_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    """Installed without the kafka extra's pybase64, the records (null and empty keys and
    values, binary values, headers) and their sizes come out the same through binascii."""
    import triggerd_kafka.shape as shape

    monkeypatch.setitem(sys.modules, "pybase64", None)  # its import fails
    fallback = _b64_encoder()
    assert fallback is _b64_binascii
    messages = [
        _Message(0, 1714564800123, 0, None, b'{"a": 1}', ()),
        _Message(1, 1714564800124, 1, b"", b"", [("h", b"\x80\xff"), ("n", None)]),
        _Message(2, -1, None, b"k\x00\xff", bytes(range(256)), [("h", b"")]),
        _Message(3, 0, 0, b"key", None, None),
    ]
    expected = PartitionShaper("t", 1).records(messages)
    monkeypatch.setattr(shape, "_b64", fallback)
    assert PartitionShaper("t", 1).records(messages) == expected
    payloads, sizes = expected
    assert "key" not in payloads[0] and payloads[1]["key"] == "" and payloads[1]["value"] == ""
    assert payloads[2]["value"] == base64.b64encode(bytes(range(256))).decode()
    assert payloads[3]["value"] is None
    assert sizes == [len(orjson.dumps(p)) for p in payloads]


def test_signed_bytes() -> None:
    assert signed_bytes(bytes([0, 127, 128, 255])) == [0, 127, -128, -1]


def test_envelope_keys_records_by_topic_partition() -> None:
    event = envelope("b1:9092,b2:9092", partition_key("my-topic", 3), [rec(1)])
    assert event["eventSource"] == "SelfManagedKafka"
    assert event["bootstrapServers"] == "b1:9092,b2:9092"
    assert list(event["records"]) == ["my-topic-3"]


def test_filters_see_the_value_decoded_as_json() -> None:
    patterns = compile_filters([{"value": {"a": [1]}}])
    assert patterns.matches(view_with_data(rec(0), "value", "base64"))
    assert not patterns.matches(view_with_data(rec(0, value=b'{"a": 2}'), "value", "base64"))
    assert not patterns.matches(view_with_data(rec(0, value=b"plain"), "value", "base64"))
    assert not patterns.matches(view_with_data(rec(0, value=None), "value", "base64"))
    by_meta = compile_filters([{"partition": [3]}])
    assert by_meta.matches(view_with_data(rec(0), "value", "base64"))


def test_batch_info_names_partition_offsets_and_timestamps() -> None:
    payloads = [rec(7), rec(9)]
    records = [
        Record(payload=p, item_id=f"my-topic-3:{p['offset']}", size=record_size(p),
               created_at=0, key="my-topic-3")
        for p in payloads
    ]  # fmt: skip
    info = batch_info("b:9092", records)["KafkaBatchInfo"]
    assert info["batchSize"] == 2 and info["bootstrapServers"] == "b:9092"
    assert info["payloadSize"] == sum(r.size for r in records)
    assert info["recordsInfo"] == {
        "my-topic-3": {
            "firstRecordOffset": "7",
            "firstRecordTimestamp": "2024-05-01T12:00:00.130Z",
            "lastRecordOffset": "9",
            "lastRecordTimestamp": "2024-05-01T12:00:00.132Z",
        }
    }
    assert record_key({"KafkaBatchInfo": info}) == b"my-topic-3"
    assert record_key({"payload": {"records": {"x-1": []}}}) == b"x-1"
    assert record_key({}) is None


def test_an_msk_cluster_arn_gives_msk_events_and_batch_info() -> None:
    arn = "arn:aws:kafka:us-east-1:123456789012:cluster/orders/abc-1"
    event = envelope("b:9092", "my-topic-3", [rec(0)], arn)
    assert list(event) == ["eventSource", "eventSourceArn", "bootstrapServers", "records"]
    assert (event["eventSource"], event["eventSourceArn"]) == ("aws:kafka", arn)
    assert envelope("b:9092", "my-topic-3", [rec(0)])["eventSource"] == "SelfManagedKafka"
    payload = rec(4)
    records = [Record(payload=payload, item_id="my-topic-3:4", size=1, created_at=0,
                      key="my-topic-3")]  # fmt: skip
    assert batch_info("b:9092", records, arn)["KafkaBatchInfo"]["eventSourceArn"] == arn
    assert "eventSourceArn" not in batch_info("b:9092", records)["KafkaBatchInfo"]
    sample = sample_event({"cluster_arn": arn})  # triggerd generate-event kafka
    assert (sample["eventSource"], sample["eventSourceArn"]) == ("aws:kafka", arn)


def test_sample_event_options() -> None:
    event = sample_event(
        {"topic": "orders", "partition": "2", "key": "", "value": "hi", "headers": "a:1,a:2"}
    )
    [(key, [r])] = event["records"].items()
    assert key == "orders-2" and r["partition"] == 2 and "key" not in r
    assert base64.b64decode(r["value"]) == b"hi"
    assert r["headers"] == [{"a": [49]}, {"a": [50]}]
    with pytest.raises(ValueError, match="unknown option"):
        sample_event({"tpoic": "x"})
    with pytest.raises(ValueError, match="partition must be a whole number"):
        sample_event({"partition": "two"})
    with pytest.raises(ValueError, match="not name:value"):
        sample_event({"headers": "novalue"})


def test_generate_event_kafka_on_the_command_line() -> None:
    import json

    from click.testing import CliRunner

    from triggerd.cli.main import main

    result = CliRunner().invoke(
        main, ["generate-event", "kafka", "--set", "topic=orders", "--set", "value=42"]
    )
    assert result.exit_code == 0, result.output
    event = json.loads(result.output)
    assert event["eventSource"] == "SelfManagedKafka" and list(event["records"]) == ["orders-0"]
    bad = CliRunner().invoke(main, ["generate-event", "kafka", "--set", "partition=x"])
    assert bad.exit_code == 2 and "partition must be a whole number" in bad.output
