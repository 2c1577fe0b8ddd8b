"""The self-managed Apache Kafka event shape (LAMBDA_SEMANTICS.md §1.4) and the batch info of
its on-failure record (§5.3).

- `eventSource` is `"SelfManagedKafka"` (Amazon MSK's, with a `cluster_arn`: `"aws:kafka"`
  and that `eventSourceArn`), `bootstrapServers` one comma-separated string,
  `records` keyed `"<topic>-<partition>"`;
- each record: topic, partition, offset, timestamp (epoch ms), timestampType (`CREATE_TIME`,
  `LOG_APPEND_TIME`, or `NO_TIMESTAMP_TYPE`), `key` base64 (left out when the key is null),
  `value` base64 (null for a tombstone), `headers` a list of one-key objects whose value is the
  header's bytes as an array of Java's signed bytes (-128..127); a repeated header key gives
  repeated objects, a null header value is null.
"""

from __future__ import annotations

import binascii
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import orjson

from triggerd.events.timestamps import iso_ms
from triggerd.types import JSONDict, Record

__all__ = [
    "EVENT_SOURCE",
    "MSK_EVENT_SOURCE",
    "PartitionShaper",
    "batch_info",
    "envelope",
    "kafka_record",
    "partition_key",
    "sample_event",
    "signed_bytes",
]

EVENT_SOURCE = "SelfManagedKafka"
#: Amazon MSK's events: this eventSource and the cluster's `eventSourceArn`.
MSK_EVENT_SOURCE = "aws:kafka"
_TIMESTAMP_TYPES: dict[int | None, str] = {0: "CREATE_TIME", 1: "LOG_APPEND_TIME"}


def partition_key(topic: str, partition: int) -> str:
    """`"<topic>-<partition>"`, the key of `records` (and the pipeline's ordering key)."""
    return f"{topic}-{partition}"


def signed_bytes(data: bytes) -> list[int]:
    return [b - 256 if b > 127 else b for b in data]


def _b64_binascii(data: bytes) -> str:
    # binascii directly: base64.b64encode is this call plus a wrapper, on every record.
    return binascii.b2a_base64(data, newline=False).decode("ascii")


def _b64_encoder() -> Any:
    """pybase64's SIMD encoder (the kafka extra installs it: a 1 KB value in about a third of
    binascii's time, straight to a str), else binascii."""
    try:
        from pybase64 import b64encode_as_string
    except ImportError:  # installed without the extra's pybase64
        return _b64_binascii
    return b64encode_as_string


_b64 = _b64_encoder()


class _Message(NamedTuple):
    """The fields of aiokafka's ConsumerRecord that the shape reads."""

    offset: int
    timestamp: int
    timestamp_type: int | None
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes | None]] | None


def _digits(number: int) -> tuple[int, int, int]:
    """len(str(number)) and the range of numbers [low, high) with as many characters."""
    width = len(str(number))
    if number < 0:
        return width, number, number + 1
    return width, (10 ** (width - 1) if width > 1 else 0), 10**width


class PartitionShaper:
    """Builds the records of one topic-partition with their JSON sizes (the batcher's 6 MB
    accounting). Records are built for every record fetched, so what all records of the
    partition share is worked out once, and the size is counted from the parts instead of
    serialising each record: it equals `len(orjson.dumps(record))` (a unit test holds it).
    """

    __slots__ = ("_fixed", "partition", "topic")

    def __init__(self, topic: str, partition: int) -> None:
        self.topic = topic
        self.partition = partition
        template = {
            "topic": topic,
            "partition": partition,
            "offset": 0,
            "timestamp": 0,
            "timestampType": "",
            "value": "",
            "headers": [],
        }
        # Without the variable parts: the two zeros, the value's quotes, the headers' [].
        self._fixed = len(orjson.dumps(template)) - 6

    def record(
        self,
        offset: int,
        timestamp: int,
        timestamp_type: int | None,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes | None]] | None,
    ) -> tuple[JSONDict, int]:
        """One element of `records["<topic>-<partition>"]` and its JSON size in bytes."""
        message = _Message(offset, timestamp, timestamp_type, key, value, headers)
        payloads, sizes = self.records([message])
        return payloads[0], sizes[0]

    def records(self, messages: Iterable[Any]) -> tuple[list[JSONDict], list[int]]:
        """The elements of `records["<topic>-<partition>"]` for aiokafka's ConsumerRecords
        (anything with their offset, timestamp, timestamp_type, key, value and headers) and
        their JSON sizes in bytes, built in one loop with one dict literal per key layout:
        this runs for every record fetched. The widths of offsets and timestamps are worked
        out again only when a number leaves the range of the previous one's width."""
        topic, partition, fixed = self.topic, self.partition, self._fixed
        stamp_types = _TIMESTAMP_TYPES
        b64, dumps = _b64, orjson.dumps
        payloads: list[JSONDict] = []
        sizes: list[int] = []
        add_payload, add_size = payloads.append, sizes.append
        o_width, o_low, o_high = 0, 0, 0
        t_width, t_low, t_high = 0, 0, 0
        for m in messages:
            offset, stamp, value, key, headers = m.offset, m.timestamp, m.value, m.key, m.headers
            if not o_low <= offset < o_high:
                o_width, o_low, o_high = _digits(offset)
            if not t_low <= stamp < t_high:
                t_width, t_low, t_high = _digits(stamp)
            stamp_type = stamp_types.get(m.timestamp_type, "NO_TIMESTAMP_TYPE")
            size = fixed + o_width + t_width + len(stamp_type)
            if value is None:
                data = None
                size += 4  # null
            else:
                data = b64(value)
                size += len(data) + 2
            if headers:
                listed = [{name: signed_bytes(v) if v is not None else None} for name, v in headers]
                size += len(dumps(listed))
            else:
                listed = []
                size += 2
            if key is None:
                add_payload(
                    {
                        "topic": topic,
                        "partition": partition,
                        "offset": offset,
                        "timestamp": stamp,
                        "timestampType": stamp_type,
                        "value": data,
                        "headers": listed,
                    }
                )
                add_size(size)
                continue
            encoded = b64(key)
            add_payload(
                {
                    "topic": topic,
                    "partition": partition,
                    "offset": offset,
                    "timestamp": stamp,
                    "timestampType": stamp_type,
                    "key": encoded,
                    "value": data,
                    "headers": listed,
                }
            )
            add_size(size + len(encoded) + 9)  # ,"key":"..."
        return payloads, sizes


def kafka_record(
    *,
    topic: str,
    partition: int,
    offset: int,
    timestamp: int,
    timestamp_type: int | None,
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes | None]],
) -> JSONDict:
    """One element of `records["<topic>-<partition>"]` (the source builds them per partition
    with `PartitionShaper`)."""
    shaper = PartitionShaper(topic, partition)
    return shaper.record(offset, timestamp, timestamp_type, key, value, headers)[0]


def envelope(
    bootstrap_servers: str, key: str, records: Sequence[JSONDict], cluster_arn: str | None = None
) -> JSONDict:
    """The event of one batch: self-managed Kafka's, or MSK's when `cluster_arn` is given."""
    if cluster_arn is not None:
        return {
            "eventSource": MSK_EVENT_SOURCE,
            "eventSourceArn": cluster_arn,
            "bootstrapServers": bootstrap_servers,
            "records": {key: list(records)},
        }
    return {
        "eventSource": EVENT_SOURCE,
        "bootstrapServers": bootstrap_servers,
        "records": {key: list(records)},
    }


def batch_info(
    bootstrap_servers: str, records: Sequence[Record], cluster_arn: str | None = None
) -> JSONDict:
    """`KafkaBatchInfo` of an on-failure record: the batch's size and payload size, and per
    topic-partition its first and last offsets and timestamps."""
    per_partition: dict[str, list[JSONDict]] = {}
    for rec in records:
        per_partition.setdefault(rec.key or "", []).append(rec.payload)
    info: dict[str, JSONDict] = {}
    for key, payloads in per_partition.items():
        first, last = payloads[0], payloads[-1]
        info[key] = {
            "firstRecordOffset": str(first["offset"]),
            "firstRecordTimestamp": iso_ms(first["timestamp"] / 1000),
            "lastRecordOffset": str(last["offset"]),
            "lastRecordTimestamp": iso_ms(last["timestamp"] / 1000),
        }
    found: JSONDict = {
        "batchSize": len(records),
        "bootstrapServers": bootstrap_servers,
        "payloadSize": sum(rec.size for rec in records),
        "recordsInfo": info,
    }
    if cluster_arn is not None:
        found["eventSourceArn"] = cluster_arn
    return {"KafkaBatchInfo": found}


_SAMPLE_OPTIONS = frozenset(
    {
        "topic", "partition", "offset", "key", "value", "headers", "bootstrap_servers",
        "timestamp", "cluster_arn",
    }
)  # fmt: skip


def _headers_option(text: str) -> list[tuple[str, bytes | None]]:
    """`name:value,name2:value2` (a repeated name gives repeated headers)."""
    out: list[tuple[str, bytes | None]] = []
    for item in text.split(","):
        if not item:
            continue
        name, sep, value = item.partition(":")
        if not sep or not name:
            raise ValueError(f"headers: {item!r} is not name:value")
        out.append((name, value.encode()))
    return out


def _int_option(options: Mapping[str, str], name: str, default: int) -> int:
    raw = options.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be a whole number, got {raw!r}") from None
    if value < 0:
        raise ValueError(f"{name} must not be negative")
    return value


def sample_event(options: Mapping[str, str]) -> JSONDict:
    """`triggerd generate-event kafka [topic=..] [partition=..] [offset=..] [key=..]
    [value=..] [headers=name:value,...] [bootstrap_servers=..] [timestamp=epoch ms]
    [cluster_arn=..]`. `key=` (empty) gives a null key; `cluster_arn` an Amazon MSK event."""
    unknown = sorted(set(options) - _SAMPLE_OPTIONS)
    if unknown:
        known = ", ".join(sorted(_SAMPLE_OPTIONS))
        raise ValueError(f"unknown option(s) {', '.join(unknown)}; known: {known}")
    topic = options.get("topic", "mytopic")
    partition = _int_option(options, "partition", 0)
    key_text = options.get("key", "recordKey")
    payload = kafka_record(
        topic=topic,
        partition=partition,
        offset=_int_option(options, "offset", 15),
        timestamp=_int_option(options, "timestamp", int(time.time() * 1000)),
        timestamp_type=0,
        key=key_text.encode() if key_text else None,
        value=options.get("value", '{"key":"value"}').encode(),
        headers=_headers_option(options.get("headers", "headerKey:headerValue")),
    )
    servers = options.get("bootstrap_servers", "broker-1.example.com:9092")
    cluster = options.get("cluster_arn") or None
    return envelope(servers, partition_key(topic, partition), [payload], cluster)


def record_size(payload: JSONDict) -> int:
    return len(orjson.dumps(payload))
