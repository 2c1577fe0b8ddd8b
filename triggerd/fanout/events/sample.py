"""`triggerd generate-event eventbridge`: a sample event as a bus delivers it to a target
without input settings (the shape PutEvents entries become)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any, Final

import orjson

from triggerd.events.eventbridge import event_envelope

__all__ = ["SAMPLE_OPTIONS", "sample_event"]

SAMPLE_OPTIONS: Final = {
    "source": "the event's source (default com.example.orders)",
    "detail-type": "its detail-type (default Order Placed)",
    "detail": 'its detail, a JSON object (default {"orderId": "1234"})',
    "resources": "comma-separated resource ARNs (default none)",
    "region": "the region (default us-east-1)",
    "account": "the account (default 123456789012)",
}


def sample_event(options: Mapping[str, str]) -> dict[str, Any]:
    unknown = sorted(set(options) - set(SAMPLE_OPTIONS))
    if unknown:
        raise ValueError(
            f"unknown option {unknown[0]!r} for eventbridge (known: {', '.join(SAMPLE_OPTIONS)})"
        )
    try:
        detail = orjson.loads(options.get("detail", '{"orderId": "1234"}'))
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"detail: not JSON: {exc}") from None
    if not isinstance(detail, dict):
        raise ValueError("detail: must be a JSON object, as PutEvents requires")
    resources = [r for r in options.get("resources", "").split(",") if r]
    return event_envelope(
        event_id=str(uuid.uuid4()),
        detail_type=options.get("detail-type", "Order Placed"),
        source=options.get("source", "com.example.orders"),
        account=options.get("account", "123456789012"),
        time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        region=options.get("region", "us-east-1"),
        resources=resources,
        detail=detail,
    )
