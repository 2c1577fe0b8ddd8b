"""Kinesis records (as GetRecords returns them) in the shape Lambda delivers them
(LAMBDA_SEMANTICS.md §1.6): base64 `data`, `approximateArrivalTimestamp` in epoch seconds with
milliseconds, `eventID` `<shard id>:<sequence number>`, `eventSourceARN` with a capital ARN."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from triggerd.delivery.streams import lane_key
from triggerd.types import JSONDict, Record

__all__ = ["Shaper", "sample_event"]


def _epoch(value: Any) -> float:
    """Epoch seconds with milliseconds, from a number (the client's wire values) or a
    datetime (botocore's default parsing)."""
    if isinstance(value, datetime):
        return round(value.timestamp(), 3)
    return round(float(value), 3)


@dataclass(frozen=True, slots=True)
class Shaper:
    stream_arn: str
    region: str
    invoke_identity_arn: str
    parallelization_factor: int = 1

    def record(self, raw: Mapping[str, Any], shard_id: str) -> Record:
        sequence = str(raw["SequenceNumber"])
        partition_key = str(raw["PartitionKey"])
        data = raw["Data"]
        if not isinstance(data, str):  # bytes from a client with botocore's default parsing
            data = base64.b64encode(data).decode("ascii")
        arrival = _epoch(raw["ApproximateArrivalTimestamp"])
        payload: JSONDict = {
            "kinesis": {
                "kinesisSchemaVersion": "1.0",
                "partitionKey": partition_key,
                "sequenceNumber": sequence,
                "data": data,
                "approximateArrivalTimestamp": arrival,
            },
            "eventSource": "aws:kinesis",
            "eventVersion": "1.0",
            "eventID": f"{shard_id}:{sequence}",
            "eventName": "aws:kinesis:record",
            "invokeIdentityArn": self.invoke_identity_arn,
            "awsRegion": self.region,
            "eventSourceARN": self.stream_arn,
        }
        factor = self.parallelization_factor
        key = shard_id if factor <= 1 else lane_key(shard_id, partition_key.encode(), factor)
        return Record(
            payload=payload,
            item_id=sequence,
            size=len(orjson.dumps(payload)),
            created_at=arrival,
            key=key,
            handle=shard_id,
        )


def _timestamp(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"timestamp {text!r} is not epoch seconds (1545084650.987)") from None


def sample_event(options: Mapping[str, str]) -> JSONDict:
    """`triggerd generate-event kinesis [data=..] [partition_key=..] [stream=..] [shard=..]
    [sequence=..] [region=..] [account=..] [timestamp=..]`."""
    known = {
        "data",
        "partition_key",
        "stream",
        "shard",
        "sequence",
        "region",
        "account",
        "timestamp",
    }
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    region = options.get("region", "us-east-1")
    account = options.get("account", "123456789012")
    stream = options.get("stream", "my-stream")
    shaper = Shaper(
        stream_arn=f"arn:aws:kinesis:{region}:{account}:stream/{stream}",
        region=region,
        invoke_identity_arn=f"arn:aws:iam::{account}:role/triggerd",  # the source's default
    )
    raw = {
        "SequenceNumber": options.get(
            "sequence", "49590338271490256608559692538361571095921575989136588898"
        ),
        "PartitionKey": options.get("partition_key", "user-1"),
        "Data": options.get("data", "Hello, this is a test.").encode(),
        "ApproximateArrivalTimestamp": _timestamp(options.get("timestamp", "1545084650.987")),
    }
    record = shaper.record(raw, options.get("shard", "shardId-000000000006"))
    return {"Records": [record.payload]}
