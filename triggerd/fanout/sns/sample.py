"""`triggerd generate-event sns` (and the `sns_http` source's sample): the `aws:sns` event the
fan-out delivers, built by the same code (`Message.lambda_event`)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from triggerd.fanout.sns.message import Attribute, Message
from triggerd.types import ConfigError

__all__ = ["SAMPLE_OPTIONS", "sample_event"]

#: `generate-event sns --help`; `attr.NAME` stands for any attribute name.
SAMPLE_OPTIONS = {
    "message": "the message body (default Hello from SNS!)",
    "subject": "the Subject (default none: null)",
    "topic": "the topic name or ARN (default sns-lambda)",
    "region": "the region (default us-east-1)",
    "account": "the account (default 123456789012)",
    "message_id": "the MessageId",
    "time": "the Timestamp: epoch seconds or ISO 8601 (2024-06-01T00:00:00Z)",
    "attr.NAME": "a String message attribute NAME; `Number:42`, `Binary:...`, "
    "`String.Array:[...]` for another type",
}
_KNOWN = {k for k in SAMPLE_OPTIONS if not k.endswith(".NAME")}


def sample_event(options: Mapping[str, str]) -> dict[str, Any]:
    """Options: message, subject, topic (name or ARN), region, account, message_id, time
    (epoch seconds), and `attr.NAME=VALUE` (a String attribute; `attr.NAME=Number:42` for
    another type)."""
    unknown = [k for k in options if k not in _KNOWN and not k.startswith("attr.")]
    if unknown:
        raise ConfigError(
            [f"{unknown[0]}: not an option of sns ({', '.join(sorted(_KNOWN))}, attr.NAME)"]
        )
    region = options.get("region", "us-east-1")
    account = options.get("account", "123456789012")
    topic = options.get("topic", "sns-lambda")
    topic_arn = topic if topic.startswith("arn:") else f"arn:aws:sns:{region}:{account}:{topic}"
    attributes = {}
    for key, value in options.items():
        if key.startswith("attr."):
            data_type, sep, raw = value.partition(":")
            if not sep or data_type not in ("String", "Number", "Binary", "String.Array"):
                data_type, raw = "String", value
            attributes[key.removeprefix("attr.")] = Attribute(data_type, raw)
    when = _epoch(options.get("time", "1546432807.0"))
    message = Message(
        message_id=options.get("message_id", "95df01b4-ee98-5cb9-9903-4c221d41eb5e"),
        topic_arn=topic_arn,
        body=options.get("message", "Hello from SNS!"),
        subject=options.get("subject"),
        attributes=attributes,
        timestamp=when,
    )
    sub = f"{topic_arn}:2bcfbf39-05c3-41de-beaa-fcfcc21c8f55"
    doc: dict[str, Any] = orjson.loads(message.lambda_event(region=region, subscription_arn=sub))
    return doc


def _epoch(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError([f"time: {text!r} is neither epoch seconds nor ISO 8601"]) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()
