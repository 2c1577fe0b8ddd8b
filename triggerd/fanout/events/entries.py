"""PutEvents's entries, checked as EventBridge checks them.

The request as a whole is refused (ValidationException) when it has not 1-10 entries or when
the entries' total size is over 256 KB, counted as AWS documents it: the UTF-8 bytes of
Source, DetailType, Detail and each Resources ARN, plus 14 bytes for a Time. Each entry is
otherwise accepted or refused on its own, with the ErrorCode and ErrorMessage AWS uses:
InvalidArgument for a missing or malformed Source, DetailType, Detail, Time or Resources,
MalformedDetail when Detail is not a JSON object (or nests deeper than `MAX_DETAIL_DEPTH`),
NotAuthorizedForSourceException for a source in AWS's reserved `aws.` namespace."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from triggerd.fanout.events.errors import EventsError

__all__ = [
    "MAX_DETAIL_DEPTH",
    "MAX_ENTRIES",
    "MAX_TOTAL_BYTES",
    "Accepted",
    "Refused",
    "bus_name_of",
    "check_entries",
    "entry_size",
]

MAX_ENTRIES: Final = 10
#: PutEvents's cap on the entries' total size (AWS's "256 KB").
MAX_TOTAL_BYTES: Final = 256 * 1024
_TIME_BYTES: Final = 14
#: How deep a Detail may nest (objects and arrays). The event, its transformed inputs and the
#: on-failure record wrap it in a few more levels, and orjson writes at most 254; deeper
#: data would also make the pattern matcher recurse that deep.
MAX_DETAIL_DEPTH: Final = 100
_MAX_SOURCE: Final = 256
_MAX_DETAIL_TYPE: Final = 128
_MAX_RESOURCE: Final = 2048
_MAX_TRACE_HEADER: Final = 500
_BUS_ARN: Final = re.compile(
    r"^arn:aws[\w-]*:events:([a-z]+-[a-z]+-[\w-]+):([0-9]{12}):event-bus/([/\.\-_A-Za-z0-9]+)$"
)
_BUS_NAME: Final = re.compile(r"^[/\.\-_A-Za-z0-9]{1,256}$")
_DEFAULT_BUS: Final = "default"


@dataclass(frozen=True, slots=True)
class Accepted:
    """An entry that passed every check: the parts of the event it becomes."""

    bus: str
    source: str
    detail_type: str
    detail: dict[str, Any]
    resources: tuple[str, ...]
    time: str
    trace_header: str | None


@dataclass(frozen=True, slots=True)
class Refused:
    """An entry refused on its own (the others go on)."""

    code: str
    message: str

    def result(self) -> dict[str, str]:
        return {"ErrorCode": self.code, "ErrorMessage": self.message}


def _invalid(name: str, reason: str) -> Refused:
    return Refused("InvalidArgument", f"Parameter {name} is not valid. Reason: {reason}")


def entry_size(entry: dict[str, Any]) -> int:
    """The entry's size as PutEvents counts it (fields of the wrong type count nothing: the
    entry is refused for them anyway)."""
    size = _TIME_BYTES if entry.get("Time") is not None else 0
    for key in ("Source", "DetailType", "Detail"):
        value = entry.get(key)
        if isinstance(value, str):
            size += len(value.encode("utf-8", "surrogatepass"))
    resources = entry.get("Resources")
    if isinstance(resources, list):
        for arn in resources:
            if isinstance(arn, str):
                size += len(arn.encode("utf-8", "surrogatepass"))
    return size


def bus_name_of(value: str, region: str, account_id: str) -> str | None:
    """The bus an EventBusName names (a name, or this daemon's bus ARN); None when it is
    neither."""
    match = _BUS_ARN.match(value)
    if match is not None:
        if (match.group(1), match.group(2)) != (region, account_id):
            return None
        return match.group(3)
    return value if _BUS_NAME.match(value) else None


def check_entries(
    entries: Any, *, region: str, account_id: str, now: float | None = None
) -> list[Accepted | Refused]:
    """Each entry accepted or refused; EventsError (ValidationException) for the request."""
    if not isinstance(entries, list):
        raise EventsError("ValidationException", "Entries is required: a list of 1-10 entries")
    if not 1 <= len(entries) <= MAX_ENTRIES:
        raise EventsError(
            "ValidationException",
            f"1 validation error detected: Value at 'entries' failed to satisfy constraint: "
            f"Member must have length less than or equal to {MAX_ENTRIES} and greater than "
            f"or equal to 1 (got {len(entries)})",
        )
    if not all(isinstance(e, dict) for e in entries):
        raise EventsError("SerializationException", "Each entry must be a JSON object")
    total = sum(entry_size(e) for e in entries)
    if total > MAX_TOTAL_BYTES:
        raise EventsError(
            "ValidationException",
            f"Total size of the entries in the request is over the limit: {total} bytes "
            f"(at most {MAX_TOTAL_BYTES})",
        )
    stamp = time.time() if now is None else now
    return [_check(e, region, account_id, stamp) for e in entries]


def _check(entry: dict[str, Any], region: str, account_id: str, now: float) -> Accepted | Refused:
    unknown = sorted(set(entry) - _ENTRY_KEYS)
    if unknown:
        return _invalid(unknown[0], "not a member of PutEventsRequestEntry.")
    texts = _texts(entry)
    if isinstance(texts, Refused):
        return texts
    source, detail_type = texts
    detail = _detail(entry.get("Detail"))
    if isinstance(detail, Refused):
        return detail
    resources = entry.get("Resources", [])
    if not isinstance(resources, list) or not all(
        isinstance(r, str) and len(r) <= _MAX_RESOURCE for r in resources
    ):
        return _invalid("Resources", "Resources must be a list of ARNs (strings).")
    when = _time(entry.get("Time"), now)
    if when is None:
        return _invalid("Time", "Time must be a timestamp (epoch seconds or ISO 8601).")
    bus_value = entry.get("EventBusName", _DEFAULT_BUS)
    bus = bus_name_of(bus_value, region, account_id) if isinstance(bus_value, str) else None
    if bus is None:
        return _invalid("EventBusName", "EventBusName must be a bus name or its ARN.")
    trace = entry.get("TraceHeader")
    if trace is not None and (not isinstance(trace, str) or len(trace) > _MAX_TRACE_HEADER):
        return _invalid("TraceHeader", f"TraceHeader is at most {_MAX_TRACE_HEADER} characters.")
    if source.startswith("aws."):
        return Refused("NotAuthorizedForSourceException", "Not authorized for the source.")
    return Accepted(bus, source, detail_type, detail, tuple(resources), when, trace)


def _texts(entry: dict[str, Any]) -> tuple[str, str] | Refused:
    """Source and DetailType, both required strings."""
    found: list[str] = []
    for key, limit in (("Source", _MAX_SOURCE), ("DetailType", _MAX_DETAIL_TYPE)):
        value = entry.get(key)
        if not isinstance(value, str) or not value:
            return _invalid(key, f"{key} is a required argument.")
        if len(value) > limit:
            return _invalid(key, f"{key} is longer than {limit} characters.")
        found.append(value)
    return found[0], found[1]


def _detail(raw: Any) -> dict[str, Any] | Refused:
    """Detail: required, the text of a JSON object."""
    if not isinstance(raw, str) or not raw:
        return _invalid("Detail", "Detail is a required argument.")
    try:
        detail = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return Refused("MalformedDetail", "Detail is malformed.")
    if not isinstance(detail, dict):
        return Refused("MalformedDetail", "Detail is malformed.")
    if _nests_deeper(detail, MAX_DETAIL_DEPTH):
        return Refused(
            "MalformedDetail", f"Detail is nested deeper than {MAX_DETAIL_DEPTH} levels."
        )
    return detail


def _nests_deeper(value: Any, limit: int) -> bool:
    """Whether `value` holds objects or arrays more than `limit` levels deep (iterative: the
    value may be as deep as the JSON parser allows)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        children = node.values() if isinstance(node, dict) else node
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return False


_ENTRY_KEYS: Final = frozenset(
    {"Time", "Source", "Resources", "DetailType", "Detail", "EventBusName", "TraceHeader"}
)


def _time(value: Any, now: float) -> str | None:
    """The event's `time` (ISO 8601, whole seconds, Z); None when `value` is not a time."""
    if value is None:
        epoch: float = now
    elif isinstance(value, int | float) and not isinstance(value, bool):
        epoch = float(value)
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        epoch = parsed.timestamp()
    else:
        return None
    try:
        return datetime.fromtimestamp(int(epoch), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return None
