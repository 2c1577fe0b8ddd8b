"""A published message: its attributes checked as SNS checks them, the `aws:sns` event a
function receives, the JSON envelope an SQS queue receives, and the views that filter
policies match."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson

from triggerd.events.timestamps import iso_ms
from triggerd.fanout.sns.signing import Signer
from triggerd.fanout.sns.wire import SnsError, invalid

__all__ = ["MAX_MESSAGE_BYTES", "Attribute", "Message", "parse_attributes"]

#: SNS's limit on a message with its attributes (names, types and values).
MAX_MESSAGE_BYTES = 262_144
MAX_ATTRIBUTES = 10
MAX_SUBJECT = 100
_ATTR_NAME = re.compile(r"^(?!\.)(?!aws\.)(?!amazon\.)[A-Za-z0-9_.-]{1,256}(?<!\.)$", re.I)
_DATA_TYPE = re.compile(r"^(String|Number|Binary)(\.[^\s]{1,256})?$")
_NUMBER = re.compile(r"^-?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?$")


@dataclass(frozen=True, slots=True)
class Attribute:
    data_type: str
    #: The value as the event carries it (Binary: base64 text).
    value: str

    @property
    def base(self) -> str:
        return "String.Array" if self.data_type == "String.Array" else self.data_type.split(".")[0]

    def size(self, name: str) -> int:
        raw = len(base64.b64decode(self.value)) if self.base == "Binary" else len(self.value)
        return len(name.encode()) + len(self.data_type.encode()) + raw


def parse_attributes(fields: Mapping[str, Mapping[str, str]]) -> dict[str, Attribute]:
    """`MessageAttributes` entries (Name -> Value.DataType / Value.StringValue /
    Value.BinaryValue) checked as SNS checks them."""
    if len(fields) > MAX_ATTRIBUTES:
        raise invalid(
            f"Invalid parameter: MessageAttributes: at most {MAX_ATTRIBUTES} attributes, "
            f"got {len(fields)}"
        )
    return {name: _attribute(name, spec) for name, spec in fields.items()}


def _attribute(name: str, spec: Mapping[str, str]) -> Attribute:
    where = f"Invalid parameter: MessageAttributes: attribute {name[:100]!r}"
    if not _ATTR_NAME.match(name):
        raise invalid(f"{where}: the name has characters or a prefix SNS does not allow")
    data_type = spec.get("Value.DataType", "")
    if not _DATA_TYPE.match(data_type) and data_type != "String.Array":
        raise invalid(f"{where}: DataType must be String, String.Array, Number or Binary")
    string, binary = spec.get("Value.StringValue"), spec.get("Value.BinaryValue")
    if data_type.startswith("Binary"):
        if binary is None or string is not None:
            raise invalid(f"{where}: a Binary attribute has a BinaryValue only")
        try:
            raw = base64.b64decode(binary, validate=True)
        except binascii.Error:
            raise invalid(f"{where}: BinaryValue is not base64") from None
        if not raw:
            raise invalid(f"{where}: the value is empty")
        return Attribute(data_type, binary)
    if string is None or binary is not None:
        raise invalid(f"{where}: a {data_type} attribute has a StringValue only")
    if not string:
        raise invalid(f"{where}: the value is empty")
    if data_type.startswith("Number") and not _number_ok(string):
        raise SnsError(
            "ParameterValueInvalid", f"{where}: the value {string[:40]!r} is not a valid Number"
        )
    if data_type == "String.Array" and not _array_ok(string):
        raise SnsError(
            "ParameterValueInvalid",
            f"{where}: a String.Array value is a JSON array of strings, numbers, booleans or nulls",
        )
    return Attribute(data_type, string)


def _number_ok(text: str) -> bool:
    """SNS's Number attributes: up to 38 significant digits, 0 or a magnitude between 10^-128
    and 10^126 (scientific notation allowed). Filter policies compare numbers within
    -10^9..10^9 only, but a message may carry larger ones (epoch milliseconds, say)."""
    if not _NUMBER.match(text):
        return False
    value = Decimal(text)
    digits = "".join(map(str, value.as_tuple().digits)).strip("0")
    if len(digits) > 38:
        return False
    return value.is_zero() or Decimal("1e-128") <= abs(value) <= Decimal("1e126")


def _array_ok(text: str) -> bool:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return False
    return isinstance(value, list) and all(
        v is None or isinstance(v, str | int | float | bool) for v in value
    )


@dataclass(frozen=True, slots=True)
class Message:
    message_id: str
    topic_arn: str
    body: str
    subject: str | None
    attributes: dict[str, Attribute]
    #: Epoch seconds when the topic accepted it.
    timestamp: float
    group_id: str | None = None
    dedup_id: str | None = None
    sequence_number: str | None = None
    #: `json` when the body holds one message per protocol (MessageStructure).
    structure: str | None = None
    #: The operator's signing key ([sns] signing_key_file); None: the digest below.
    signer: Signer | None = field(default=None, compare=False)
    _body_view: list[Any] = field(default_factory=list, compare=False)

    def stored_as(self, message_id: str, sequence_number: str | None) -> Message:
        return dataclasses.replace(self, message_id=message_id, sequence_number=sequence_number)

    def body_for(self, protocol: str) -> str:
        """The message a subscriber of `protocol` receives (MessageStructure=json: its key,
        else `default`)."""
        if self.structure != "json":
            return self.body
        doc = orjson.loads(self.body)
        return str(doc.get(protocol, doc["default"]))

    def size(self) -> int:
        return len(self.body.encode("utf-8")) + sum(a.size(n) for n, a in self.attributes.items())

    # ---- what filter policies see ----

    def attribute_view(self) -> dict[str, Any]:
        """The attributes as a filter policy of scope MessageAttributes matches them: String
        values as strings, Number values as numbers, String.Array values as arrays; Binary
        attributes are not matched (as SNS ignores them)."""
        view: dict[str, Any] = {}
        for name, attr in self.attributes.items():
            if attr.base == "String":
                view[name] = attr.value
            elif attr.base == "Number":
                number = float(attr.value)
                view[name] = (
                    int(number) if number.is_integer() and "." not in attr.value else number
                )
            elif attr.base == "String.Array":
                view[name] = orjson.loads(attr.value)
        return view

    def body_view(self) -> Any:
        """The body as a filter policy of scope MessageBody matches it: the parsed JSON
        object, or None when the body is not a JSON object (then no policy matches)."""
        if not self._body_view:
            try:
                parsed = orjson.loads(self.body)
            except orjson.JSONDecodeError:
                parsed = None
            self._body_view.append(parsed if isinstance(parsed, dict) else None)
        return self._body_view[0]

    # ---- what subscribers receive ----

    def event_attributes(self) -> dict[str, dict[str, str]]:
        return {n: {"Type": a.data_type, "Value": a.value} for n, a in self.attributes.items()}

    def notification(
        self, *, region: str, subscription_arn: str, protocol: str = "lambda"
    ) -> dict[str, Any]:
        """The SNS notification document (the `Sns` object of the `aws:sns` event)."""
        doc: dict[str, Any] = {
            "Type": "Notification",
            "MessageId": self.message_id,
            "TopicArn": self.topic_arn,
            "Subject": self.subject,
            "Message": self.body_for(protocol),
            "Timestamp": iso_ms(self.timestamp),
            "SignatureVersion": "1",
            "Signature": self.digest(),
            "SigningCertUrl": f"https://sns.{region}.amazonaws.com/SimpleNotificationService-"
            "triggerd.pem",
            "UnsubscribeUrl": f"https://sns.{region}.amazonaws.com/?Action=Unsubscribe"
            f"&SubscriptionArn={subscription_arn}",
            "MessageAttributes": self.event_attributes(),
        }
        if self.signer is not None:
            doc["SignatureVersion"] = self.signer.version
            doc["Signature"] = self.signer.sign(doc)
            doc["SigningCertUrl"] = self.signer.cert_url
        if self.sequence_number is not None:
            doc["SequenceNumber"] = self.sequence_number
        return doc

    def lambda_event(self, *, region: str, subscription_arn: str) -> bytes:
        """The `aws:sns` event of one subscription, as Lambda delivers it."""
        record = {
            "EventSource": "aws:sns",
            "EventVersion": "1.0",
            "EventSubscriptionArn": subscription_arn,
            "Sns": self.notification(region=region, subscription_arn=subscription_arn),
        }
        return orjson.dumps({"Records": [record]})

    def sqs_envelope(self, *, region: str, subscription_arn: str) -> str:
        """The JSON document an SQS subscription without raw delivery receives (SNS leaves out
        `Subject` when there is none and `MessageAttributes` when there are none)."""
        doc = self.notification(region=region, subscription_arn=subscription_arn, protocol="sqs")
        if doc["Subject"] is None:
            del doc["Subject"]
        if not doc["MessageAttributes"]:
            del doc["MessageAttributes"]
        doc["SigningCertURL"] = doc.pop("SigningCertUrl")
        doc["UnsubscribeURL"] = doc.pop("UnsubscribeUrl")
        return orjson.dumps(doc).decode()

    def digest(self) -> str:
        """Without a signing key configured, not a signature (triggerd holds none of AWS's
        keys): the base64 SHA-1 of the message's canonical fields, so the field has SNS's form
        and changes with the message. docs/sns.md says so."""
        canonical = "\n".join(
            [self.message_id, self.topic_arn, self.subject or "", self.body, str(self.timestamp)]
        )
        return base64.b64encode(hashlib.sha1(canonical.encode()).digest()).decode()
