"""The EventBridge Scheduled Event a schedule delivers, and `triggerd generate-event
schedule`'s sample of it: no event loop, config model or schedule parser is imported here."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime

from triggerd.types import ConfigError, JSONDict

__all__ = [
    "SAMPLE_RULE",
    "SAMPLE_TIME",
    "event_id",
    "format_time",
    "parse_time",
    "resource_arn",
    "sample_event",
    "scheduled_event",
]

_ID_NAMESPACE = uuid.UUID("4f3b7c0e-2a55-5d6c-9a51-7c2f0d1e9b18")

SAMPLE_RULE = "my-schedule"
SAMPLE_TIME = "2024-05-01T12:00:00Z"


def format_time(value: datetime) -> str:
    """ISO-8601 in UTC, whole seconds, `Z` suffix (as EventBridge writes `time`)."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def event_id(trigger: str, tick: datetime) -> str:
    """Stable per (trigger, tick): a redelivered tick keeps its id."""
    return str(uuid.uuid5(_ID_NAMESPACE, f"{trigger}\n{format_time(tick)}"))


def resource_arn(source_name: str, region: str, account: str, name: str) -> str:
    if source_name == "aws.scheduler":
        return f"arn:aws:scheduler:{region}:{account}:schedule/default/{name}"
    return f"arn:aws:events:{region}:{account}:rule/{name}"


def scheduled_event(
    *, id: str, source: str, account: str, region: str, time: str, resource: str
) -> JSONDict:
    return {
        "version": "0",
        "id": id,
        "detail-type": "Scheduled Event",
        "source": source,
        "account": account,
        "time": time,
        "region": region,
        "resources": [resource],
        "detail": {},
    }


def sample_event(options: Mapping[str, str]) -> JSONDict:
    """`triggerd generate-event schedule`: options rule, time, region, account, source."""
    rule = options.get("rule", SAMPLE_RULE)
    region = options.get("region", "us-east-1")
    account = options.get("account", "123456789012")
    source = options.get("source", "aws.events")
    problems: list[str] = []
    try:
        tick = parse_time(options.get("time", SAMPLE_TIME))
    except ValueError:
        problems.append(f"time: {options['time']!r} is not an ISO-8601 time (2024-05-01T12:00:00Z)")
    if source not in ("aws.events", "aws.scheduler"):
        problems.append(f"source: {source!r} is not 'aws.events' or 'aws.scheduler'")
    if problems:
        raise ConfigError(problems)
    return scheduled_event(
        id=event_id(rule, tick),
        source=source,
        account=account,
        region=region,
        time=format_time(tick),
        resource=resource_arn(source, region, account, rule),
    )
