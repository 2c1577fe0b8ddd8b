"""SQS messages (as ReceiveMessage returns them) in the shape Lambda delivers them
(LAMBDA_SEMANTICS.md §1.2, gotcha 3): every attribute a string, `messageAttributes` with
camelCase keys and the empty list fields, `binaryValue` base64, `eventSourceARN` with a
capital ARN.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
import uuid
from collections.abc import Mapping
from typing import Any

import orjson

from triggerd.events.tracing import parse_trace_header
from triggerd.types import JSONDict, Record

__all__ = [
    "MalformedMessageError",
    "lambda_record",
    "queue_arn_from_url",
    "sample_sqs_event",
    "to_record",
]

#: System attributes in the order Lambda's events show them; others follow as received.
_ATTRIBUTE_ORDER = (
    "ApproximateReceiveCount",
    "SentTimestamp",
    "SequenceNumber",
    "MessageGroupId",
    "SenderId",
    "MessageDeduplicationId",
    "ApproximateFirstReceiveTimestamp",
    "AWSTraceHeader",
    "DeadLetterQueueSourceArn",
)


_SURROGATES = re.compile("[\ud800-\udfff]")


class MalformedMessageError(ValueError):
    """A ReceiveMessage entry without the fields needed to deliver and delete it."""


def _text(value: Any) -> str:
    """A string that encodes as UTF-8 (lone surrogates from a non-conforming server become
    U+FFFD), so the event always serialises."""
    text = value if isinstance(value, str) else str(value)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = _SURROGATES.sub("\ufffd", text)
    return text


def _attributes(raw: Mapping[str, Any]) -> dict[str, str]:
    out = {name: _text(raw[name]) for name in _ATTRIBUTE_ORDER if name in raw}
    for name, value in raw.items():
        if name not in out:
            out[name] = _text(value)
    return out


def _b64(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode("ascii")
    return _text(value)  # already base64 text (some servers / hand-made fixtures)


def _message_attributes(raw: Mapping[str, Any]) -> JSONDict:
    out: JSONDict = {}
    for name, attr in raw.items():
        value: JSONDict = {}
        if "StringValue" in attr:
            value["stringValue"] = _text(attr["StringValue"])
        if "BinaryValue" in attr:
            value["binaryValue"] = _b64(attr["BinaryValue"])
        value["stringListValues"] = [_text(v) for v in attr.get("StringListValues") or []]
        value["binaryListValues"] = [_b64(v) for v in attr.get("BinaryListValues") or []]
        value["dataType"] = _text(attr.get("DataType", "String"))
        out[_text(name)] = value
    return out


def lambda_record(message: Mapping[str, Any], queue_arn: str, region: str) -> JSONDict:
    """One element of the SQS event's `Records` built from one ReceiveMessage entry."""
    try:
        message_id = _text(message["MessageId"])
        handle = _text(message["ReceiptHandle"])
    except KeyError as exc:
        raise MalformedMessageError(f"message without {exc.args[0]}") from None
    body = _text(message.get("Body", ""))
    record: JSONDict = {
        "messageId": message_id,
        "receiptHandle": handle,
        "body": body,
        "attributes": _attributes(message.get("Attributes") or {}),
        "messageAttributes": _message_attributes(message.get("MessageAttributes") or {}),
    }
    if message.get("MD5OfMessageAttributes"):
        record["md5OfMessageAttributes"] = message["MD5OfMessageAttributes"]
    record["md5OfBody"] = (
        message.get("MD5OfBody")
        or hashlib.md5(body.encode("utf-8"), usedforsecurity=False).hexdigest()
    )
    record["eventSource"] = "aws:sqs"
    record["eventSourceARN"] = queue_arn
    record["awsRegion"] = region
    return record


def _int_attr(attributes: Mapping[str, str], name: str, default: int) -> int:
    try:
        return int(attributes[name])
    except (KeyError, ValueError):
        return default


def to_record(
    message: Mapping[str, Any], queue_arn: str, region: str, *, fifo: bool, now: float
) -> Record:
    """A pipeline Record: item_id = messageId, key = MessageGroupId on FIFO queues, attempts =
    ApproximateReceiveCount - 1, created_at = SentTimestamp, handle = the receipt handle."""
    payload = lambda_record(message, queue_arn, region)
    attrs: dict[str, str] = payload["attributes"]
    sent_ms = _int_attr(attrs, "SentTimestamp", round(now * 1000))
    return Record(
        payload=payload,
        item_id=payload["messageId"],
        size=len(orjson.dumps(payload)),
        created_at=sent_ms / 1000,
        key=attrs.get("MessageGroupId") if fifo else None,
        handle=payload["receiptHandle"],
        attempts=max(0, _int_attr(attrs, "ApproximateReceiveCount", 1) - 1),
        # The message's trace continues in the function (a batch's: its first message's).
        trace_id=parse_trace_header(attrs.get("AWSTraceHeader")),
    )


def queue_arn_from_url(queue_url: str, region: str, default_account: str) -> str:
    """`arn:aws:sqs:<region>:<account>:<name>` from a queue URL (used when the server does not
    report `QueueArn`)."""
    parts = queue_url.rstrip("/").split("/")
    name = parts[-1]
    account = parts[-2] if len(parts) >= 2 and parts[-2].isdigit() else default_account
    return f"arn:aws:sqs:{region}:{account}:{name}"


def sample_sqs_event(options: Mapping[str, str]) -> JSONDict:
    """`triggerd generate-event sqs [body=..] [queue=..] [region=..] [account=..]
    [group=..]` (a group makes it a FIFO message)."""
    region = options.get("region", "us-east-1")
    account = options.get("account", "123456789012")
    queue = options.get("queue", "my-queue")
    group = options.get("group")
    if group and not queue.endswith(".fifo"):
        queue += ".fifo"
    body = options.get("body", '{"hello": "world"}')
    now_ms = str(int(time.time() * 1000))
    attributes = {
        "ApproximateReceiveCount": "1",
        "SentTimestamp": now_ms,
        "SenderId": "AIDAIENQZJOLO23YVJ4VO",
        "ApproximateFirstReceiveTimestamp": now_ms,
    }
    if group:
        attributes["SequenceNumber"] = "18849496460467696128"
        attributes["MessageGroupId"] = group
        attributes["MessageDeduplicationId"] = hashlib.sha256(body.encode()).hexdigest()
    message = {
        "MessageId": str(uuid.uuid4()),
        "ReceiptHandle": base64.b64encode(uuid.uuid4().bytes * 4).decode(),
        "Body": body,
        "Attributes": attributes,
    }
    arn = f"arn:aws:sqs:{region}:{account}:{queue}"
    return {"Records": [lambda_record(message, arn, region)]}
