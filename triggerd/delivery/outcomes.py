"""The last failed attempt of a queued asynchronous event, kept with it in the state store.

An event given back to its queue after a failed attempt (a retry scheduled, or its on-failure
record cut short by a stop) keeps what Lambda's invocation record needs: the condition it was
given up for, if it was, and when (the record's timestamp), and the function's result
(status, version, function error, response). Whoever claims it next sends the record with
them, as it would have been sent without the stop, instead of a record saying the function
never ran.

Stored as one line of JSON with the small fields, a newline, then the response bytes as the
function returned them (orjson never writes a raw newline, and a response need not be text).
A value this code cannot read gives no outcome: the record is then sent without the response,
as before this was kept.
"""

from __future__ import annotations

from typing import get_args

import orjson

from triggerd.delivery.failures import AsyncCondition
from triggerd.types import InvokeResult, Outcome

__all__ = ["dump_outcome", "given_up_at", "load_outcome"]

_CONDITIONS: frozenset[str] = frozenset(get_args(AsyncCondition))
_OUTCOMES = {o.value: o for o in Outcome}


def dump_outcome(
    condition: AsyncCondition | None, result: InvokeResult | None, at: float | None = None
) -> bytes | None:
    """The stored form of an attempt's outcome (`at`: when it was given up on, the record's
    timestamp); None when there is nothing to keep."""
    if result is None and condition is None:
        return None
    head: dict[str, str | float | None] = {"condition": condition}
    if at is not None:
        head["at"] = at
    if result is not None:
        head["outcome"] = result.outcome.value
        head["request_id"] = result.request_id
        head["function_error"] = result.function_error
        head["version"] = result.executed_version
    return orjson.dumps(head) + b"\n" + (result.payload if result is not None else b"")


def given_up_at(raw: bytes | None) -> float | None:
    """When the event was given up on, as `dump_outcome` stored it (None: not stored)."""
    if not raw:
        return None
    line, newline, _ = raw.partition(b"\n")
    try:
        head = orjson.loads(line) if newline else None
    except orjson.JSONDecodeError:
        return None
    at = head.get("at") if isinstance(head, dict) else None
    return float(at) if isinstance(at, int | float) and not isinstance(at, bool) else None


def load_outcome(raw: bytes | None) -> tuple[AsyncCondition | None, InvokeResult | None]:
    """The condition and result `dump_outcome` stored (None, None for nothing readable)."""
    if not raw:
        return None, None
    line, newline, payload = raw.partition(b"\n")
    try:
        head = orjson.loads(line) if newline else None
    except orjson.JSONDecodeError:
        head = None
    if not isinstance(head, dict):
        return None, None
    condition = head.get("condition")
    kept: AsyncCondition | None = None
    if isinstance(condition, str) and condition in _CONDITIONS:
        kept = condition  # type: ignore[assignment]  # checked against the Literal's values
    outcome = _OUTCOMES.get(head.get("outcome"))  # type: ignore[arg-type]
    if outcome is None:
        return kept, None
    fields = (head.get("request_id"), head.get("function_error"), head.get("version"))
    request_id, function_error, version = (v if isinstance(v, str) else None for v in fields)
    result = InvokeResult(
        outcome,
        payload,
        request_id or "",
        function_error=function_error,
        executed_version=version or "$LATEST",
    )
    return kept, result
