"""The Amazon MQ for RabbitMQ event shape (`aws:rmq`, LAMBDA_SEMANTICS.md §1.3).

AWS's poller is Java: `basicProperties` is the Java client's `BasicProperties` serialised with
Gson. That explains the odd parts, reproduced here:

- every property key is present, `null` when unset, plus `bodySize`;
- a header holding a string is the Java client's `LongString`, serialised as its byte array:
  `{"bytes": [...]}`, each byte as Java's signed byte (-128..127; ASCII is unchanged);
  byte-array headers (AMQP `x`) are plain arrays of signed bytes; numbers and booleans stay;
- dates (the `timestamp` property, timestamp headers) in Java's default medium format,
  `"Jan 1, 1970, 12:33:41 AM"`, in UTC.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from triggerd.types import JSONDict

__all__ = [
    "EVENT_SOURCE",
    "basic_properties",
    "envelope",
    "java_date",
    "java_value",
    "message_entry",
    "queue_key",
    "sample_event",
    "synthesised_broker_arn",
]

EVENT_SOURCE = "aws:rmq"

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

#: (pamqp attribute, event key), in the order the Java client's properties are serialised.
_PROPERTIES = (
    ("content_type", "contentType"),
    ("content_encoding", "contentEncoding"),
    ("headers", "headers"),
    ("delivery_mode", "deliveryMode"),
    ("priority", "priority"),
    ("correlation_id", "correlationId"),
    ("reply_to", "replyTo"),
    ("expiration", "expiration"),
    ("message_id", "messageId"),
    ("timestamp", "timestamp"),
    ("message_type", "type"),
    ("user_id", "userId"),
    ("app_id", "appId"),
    ("cluster_id", "clusterId"),
)


def java_date(moment: datetime) -> str:
    """`"Jan 1, 1970, 12:33:41 AM"`: Java's default medium date-time format, in UTC, with
    English month names whatever the machine's locale."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    t = moment.astimezone(UTC)
    hour = t.hour % 12 or 12
    half = "AM" if t.hour < 12 else "PM"
    return f"{_MONTHS[t.month - 1]} {t.day}, {t.year}, {hour}:{t.minute:02}:{t.second:02} {half}"


def _signed(data: bytes | bytearray) -> list[int]:
    return [b - 256 if b > 127 else b for b in data]


def java_value(value: Any) -> Any:
    """A decoded AMQP field-table value as AWS's event shows it."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return {"bytes": _signed(value.encode("utf-8"))}
    if isinstance(value, bytearray):  # AMQP byte array (`x`): Java byte[]
        return _signed(value)
    if isinstance(value, bytes):  # a long string that is not UTF-8
        return {"bytes": _signed(value)}
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, datetime):
        return java_date(value)
    if isinstance(value, Mapping):
        return {str(k): java_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [java_value(v) for v in value]
    return str(value)


def basic_properties(props: Any, body_size: int) -> JSONDict:
    """`basicProperties` from a pamqp `Basic.Properties` (or any object with its attributes)."""
    out: JSONDict = {}
    for attr, key in _PROPERTIES:
        value = getattr(props, attr, None)
        if value == "" and attr == "cluster_id":  # pamqp's default for the deprecated field
            value = None
        if value is not None:
            if attr == "headers":
                value = java_value(value)
            elif attr == "timestamp":
                value = java_date(value) if isinstance(value, datetime) else value
        out[key] = value
    out["bodySize"] = body_size
    return out


def message_entry(props: Any, body: bytes, redelivered: bool) -> JSONDict:
    """One element of `rmqMessagesByQueue[<queue>::<vhost>]`."""
    return {
        "basicProperties": basic_properties(props, len(body)),
        "redelivered": redelivered,
        "data": base64.b64encode(body).decode("ascii"),
    }


def queue_key(queue: str, vhost: str) -> str:
    """`"<queue>::<vhost>"`, e.g. `"orders::/"`."""
    return f"{queue}::{vhost}"


def synthesised_broker_arn(region: str, account_id: str, host: str, port: int) -> str:
    """A stable broker ARN for a broker that is not Amazon MQ: the broker id is derived from
    host:port, so every triggerd pointed at one broker uses the same ARN."""
    broker_id = uuid.uuid5(uuid.NAMESPACE_URL, f"amqp://{host}:{port}")
    name = host.replace(":", "-").replace("[", "").replace("]", "")
    return f"arn:aws:mq:{region}:{account_id}:broker:{name}:b-{broker_id}"


def envelope(broker_arn: str, key: str, entries: Sequence[JSONDict]) -> JSONDict:
    return {
        "eventSource": EVENT_SOURCE,
        "eventSourceArn": broker_arn,
        "rmqMessagesByQueue": {key: list(entries)},
    }


class _SampleProps:
    content_type = "application/json"
    content_encoding = None
    headers: dict[str, Any] = {"header1": "value1", "numberInHeader": 10}
    delivery_mode = 1
    priority = 34
    correlation_id = None
    reply_to = None
    expiration = "60000"
    message_id = None
    timestamp = datetime(1970, 1, 1, 0, 33, 41, tzinfo=UTC)
    message_type = None
    user_id = "AIDACKCEVSQ6C2EXAMPLE"
    app_id = None
    cluster_id = None


_SAMPLE_OPTIONS = frozenset(
    {"queue", "vhost", "body", "host", "port", "region", "account", "broker_arn"}
)


def sample_event(options: Mapping[str, str]) -> JSONDict:
    """`triggerd generate-event rabbitmq [queue=..] [vhost=..] [body=..] [host=..] [port=..]
    [region=..] [account=..] [broker_arn=..]`."""
    unknown = sorted(set(options) - _SAMPLE_OPTIONS)
    if unknown:
        known = ", ".join(sorted(_SAMPLE_OPTIONS))
        raise ValueError(f"unknown option(s) {', '.join(unknown)}; known: {known}")
    if not options.get("port", "5672").isdigit():
        raise ValueError("port must be a number")
    queue = options.get("queue", "test")
    vhost = options.get("vhost", "/")
    body = options.get("body", '{"timeout":0,"data":"CZrmf0Gw8Ov4bqLQxD4E"}').encode()
    region = options.get("region", "us-east-1")
    account = options.get("account", "123456789012")
    arn = options.get("broker_arn") or synthesised_broker_arn(
        region, account, options.get("host", "localhost"), int(options.get("port", "5672"))
    )
    entry = message_entry(_SampleProps(), body, redelivered=False)
    return envelope(arn, queue_key(queue, vhost), [entry])
