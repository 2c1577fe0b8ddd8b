"""Judging an invocation's result against the batch it was given (partial batch responses).

A `ReportBatchItemFailures` response lists the records the function failed; everything else in
the batch succeeded. A malformed response fails the whole batch, while an empty or absent one
is a full success (LAMBDA_SEMANTICS.md §3, gotchas 7 and 8). Ordering keys extend a failure to
every later record with the same key: a stream shard is checkpointed just before its lowest
failed record, and an SQS FIFO message group stops at its first failure.

Kafka identifiers are objects (`{"partition": "<topic>-<p>", "offset": n}`); they are matched
against `Record.item_id` in the normalised form `"<topic>-<p>:<offset>"`, so Kafka sources set
their records' `item_id` that way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from triggerd.types import InvokeResult, Outcome, Record

__all__ = ["BatchVerdict", "MalformedResponseError", "judge", "normalize_identifier"]


@dataclass(slots=True)
class BatchVerdict:
    """How one invocation settled its batch."""

    #: Records that succeeded, in batch order.
    succeeded: list[Record] = field(default_factory=list)
    #: Records that failed (and must be retried or sent on), in batch order.
    failed: list[Record] = field(default_factory=list)
    #: The partial batch response was malformed, so the whole batch failed.
    malformed: bool = False
    #: Short human reason for logs ("function error", "timeout", "malformed ...").
    reason: str = ""


class MalformedResponseError(ValueError):
    """A partial batch response that AWS would treat as a failure of the whole batch."""


def normalize_identifier(value: Any) -> str | None:
    """The `itemIdentifier` as a string to compare with `Record.item_id`, or None if invalid.

    Strings are used as they are (empty is invalid). Kafka's object form
    `{"partition": "<topic>-<p>", "offset": <int | digit string>}` becomes `"<topic>-<p>:<offset>"`.
    """
    if isinstance(value, str):
        return value or None
    if isinstance(value, dict):
        partition = value.get("partition")
        offset = _normalize_offset(value.get("offset"))
        if isinstance(partition, str) and partition and offset is not None:
            return f"{partition}:{offset}"
    return None


def _normalize_offset(offset: Any) -> str | None:
    if isinstance(offset, bool):
        return None
    if isinstance(offset, int):
        return str(offset) if offset >= 0 else None
    if isinstance(offset, str) and offset.isascii() and offset.isdigit():
        return str(int(offset))
    return None


def judge(
    result: InvokeResult, records: Sequence[Record], *, report_batch_item_failures: bool
) -> BatchVerdict:
    """Split `records` into succeeded and failed according to `result`.

    Raises ValueError for THROTTLED and INVOKE_ERROR results: the function did not run, so
    there is nothing to judge; the caller retries the batch.
    """
    if result.outcome in (Outcome.THROTTLED, Outcome.INVOKE_ERROR):
        raise ValueError(f"cannot judge a {result.outcome.value} result: retry it instead")
    if result.failed:
        reason = "timeout" if result.outcome is Outcome.TIMEOUT else "function error"
        return BatchVerdict(succeeded=[], failed=list(records), reason=reason)
    if not report_batch_item_failures:
        return BatchVerdict(succeeded=list(records), failed=[])
    try:
        listed = _listed_identifiers(result.payload, records)
    except MalformedResponseError as exc:
        return BatchVerdict(
            succeeded=[], failed=list(records), malformed=True, reason=f"malformed {exc}"
        )
    verdict = _split(records, listed)
    if verdict.failed:
        verdict.reason = f"partial batch failure: {len(verdict.failed)} of {len(records)} failed"
    return verdict


def _listed_identifiers(payload: bytes, records: Sequence[Record]) -> set[str]:
    """The normalised identifiers a response lists; empty for every full-success shape."""
    if not payload.strip():
        return set()
    try:
        response = orjson.loads(payload)
    except orjson.JSONDecodeError:
        # Not JSON at all: like any other non-object response, an empty EventResponse.
        return set()
    if not isinstance(response, dict):
        return set()
    failures = response.get("batchItemFailures")
    if failures is None:
        return set()
    if not isinstance(failures, list):
        raise MalformedResponseError("batchItemFailures: not a list")
    known = {r.item_id for r in records}
    listed: set[str] = set()
    for index, entry in enumerate(failures):
        listed.add(_entry_identifier(index, entry, known))
    return listed


def _entry_identifier(index: int, entry: Any, known: set[str]) -> str:
    if not isinstance(entry, dict):
        raise MalformedResponseError(f"batchItemFailures: entry {index} is not an object")
    if "itemIdentifier" not in entry:
        raise MalformedResponseError(f"batchItemFailures: entry {index} has no itemIdentifier")
    identifier = normalize_identifier(entry["itemIdentifier"])
    if identifier is None:
        raise MalformedResponseError(
            f"batchItemFailures: entry {index} has an empty or invalid itemIdentifier"
        )
    if identifier not in known:
        raise MalformedResponseError(
            f"batchItemFailures: entry {index} names an item not in the batch"
        )
    return identifier


def _split(records: Sequence[Record], listed: set[str]) -> BatchVerdict:
    """Fail listed records and, per ordering key, every record after a key's first failure."""
    verdict = BatchVerdict()
    blocked_keys: set[str] = set()
    for record in records:
        fails = record.item_id in listed or (record.key is not None and record.key in blocked_keys)
        if fails:
            verdict.failed.append(record)
            if record.key is not None:
                blocked_keys.add(record.key)
        else:
            verdict.succeeded.append(record)
    return verdict
