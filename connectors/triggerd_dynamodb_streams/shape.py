"""DynamoDB Streams records (as GetRecords returns them) in the shape Lambda delivers them
(LAMBDA_SEMANTICS.md §1.5): AttributeValues as JSON (binary values base64),
`ApproximateCreationDateTime` in epoch seconds, `eventSourceARN` the stream's ARN."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from triggerd.delivery.streams import lane_key
from triggerd.types import JSONDict, Record

__all__ = ["Shaper", "attribute_json", "sample_event"]

_DYNAMODB_ORDER = (
    "ApproximateCreationDateTime",
    "Keys",
    "NewImage",
    "OldImage",
    "SequenceNumber",
    "SizeBytes",
    "StreamViewType",
)


def attribute_json(value: Any) -> Any:
    """An AttributeValue map (as botocore parses it) as JSON: bytes become base64."""
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, dict):
        return {k: attribute_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [attribute_json(v) for v in value]
    return value


def _epoch(value: Any) -> int | float:
    seconds = value.timestamp() if isinstance(value, datetime) else float(value)
    # Lambda's records carry whole seconds (the stream's default precision).
    return int(seconds)


@dataclass(frozen=True, slots=True)
class Shaper:
    stream_arn: str
    parallelization_factor: int = 1

    def record(self, raw: Mapping[str, Any], shard_id: str) -> Record:
        ddb = raw.get("dynamodb") or {}
        created = ddb.get("ApproximateCreationDateTime")
        image: JSONDict = {}
        for key in _DYNAMODB_ORDER:
            if key not in ddb:
                continue
            value = ddb[key]
            if key == "ApproximateCreationDateTime":
                image[key] = _epoch(value)
            elif key in ("Keys", "NewImage", "OldImage"):
                image[key] = attribute_json(value)
            else:
                image[key] = value
        payload: JSONDict = {
            "eventID": raw.get("eventID"),
            "eventName": raw.get("eventName"),
            "eventVersion": raw.get("eventVersion", "1.1"),
            "eventSource": raw.get("eventSource", "aws:dynamodb"),
            "awsRegion": raw.get("awsRegion"),
            "dynamodb": image,
            "eventSourceARN": self.stream_arn,
        }
        if "userIdentity" in raw:  # TTL deletions
            payload["userIdentity"] = raw["userIdentity"]
        sequence = str(ddb["SequenceNumber"])
        factor = self.parallelization_factor
        item = (
            orjson.dumps(image.get("Keys") or {}, option=orjson.OPT_SORT_KEYS)
            if factor > 1
            else b""
        )
        key = lane_key(shard_id, item, factor)
        return Record(
            payload=payload,
            item_id=sequence,
            size=len(orjson.dumps(payload)),
            created_at=float(_epoch(created)) if created is not None else 0.0,
            key=key,
            handle=shard_id,
        )


def sample_event(options: Mapping[str, str]) -> JSONDict:
    """`triggerd generate-event dynamodb_streams [event_name=INSERT|MODIFY|REMOVE] [table=..]
    [region=..] [account=..] [view=..] [sequence=..]`."""
    known = {"event_name", "table", "region", "account", "view", "sequence"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    region = options.get("region", "us-east-1")
    account = options.get("account", "123456789012")
    table = options.get("table", "orders")
    view = options.get("view", "NEW_AND_OLD_IMAGES")
    name = options.get("event_name", "MODIFY")
    if name not in ("INSERT", "MODIFY", "REMOVE"):
        raise ValueError("event_name must be INSERT, MODIFY or REMOVE")
    if view not in ("KEYS_ONLY", "NEW_IMAGE", "OLD_IMAGE", "NEW_AND_OLD_IMAGES"):
        raise ValueError("view must be KEYS_ONLY, NEW_IMAGE, OLD_IMAGE or NEW_AND_OLD_IMAGES")
    ddb: JSONDict = {
        "ApproximateCreationDateTime": 1428537600,
        "Keys": {"Id": {"N": "101"}},
        "SequenceNumber": options.get("sequence", "4421584500000000017450439092"),
        "SizeBytes": 59,
        "StreamViewType": view,
    }
    if name != "REMOVE" and view in ("NEW_IMAGE", "NEW_AND_OLD_IMAGES"):
        ddb["NewImage"] = {"Id": {"N": "101"}, "Message": {"S": "changed"}}
    if name != "INSERT" and view in ("OLD_IMAGE", "NEW_AND_OLD_IMAGES"):
        ddb["OldImage"] = {"Id": {"N": "101"}, "Message": {"S": "original"}}
    raw = {
        "eventID": "c81e728d9d4c2f636f067f89cc14862c",
        "eventName": name,
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": region,
        "dynamodb": ddb,
    }
    arn = f"arn:aws:dynamodb:{region}:{account}:table/{table}/stream/2015-06-27T00:48:05.899"
    return {"Records": [Shaper(arn).record(raw, "shardId-00000001").payload]}
