"""Builders of the records AWS writes to on-failure (and on-success) destinations.

Two formats (LAMBDA_SEMANTICS.md §5.2, §5.3, gotcha 20):

- the asynchronous invocation record: qualified `functionArn`, the event embedded as JSON in
  `requestPayload`, the function's answer in `responsePayload`;
- the event-source-mapping record: metadata only (`requestContext`, `responseContext`, the
  source's batch info such as `KinesisBatchInfo`), plus the full event under `payload` for the
  destinations that carry it (S3, Kafka, file), and at every destination for queue sources
  (SQS, RabbitMQ), whose messages are deleted once their record is written.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import orjson

from triggerd.events.timestamps import iso_ms
from triggerd.types import BuildError, InvokeResult, JSONDict, Outcome, Record

__all__ = [
    "async_invocation_record",
    "qualified_arn",
    "stream_batch_info",
    "stream_failure_record",
]

AsyncCondition = Literal["RetriesExhausted", "EventAgeExceeded", "Success"]


#: HTTP status of the Invoke call behind each outcome (200 even for function errors).
_STATUS = {
    Outcome.OK: 200,
    Outcome.FUNCTION_ERROR: 200,
    Outcome.TIMEOUT: 200,
    Outcome.THROTTLED: 429,
    Outcome.INVOKE_ERROR: 500,
}


def qualified_arn(function_arn: str, version: str = "$LATEST") -> str:
    """`function_arn` with a qualifier: kept as is when it has one, else `:<version>` added."""
    _, marker, name = function_arn.partition(":function:")
    already = ":" in name if marker else ":" in function_arn
    return function_arn if already else f"{function_arn}:{version}"


def _parse(raw: bytes) -> Any:
    """JSON bytes as the value they encode; bytes that are not JSON stay a string."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw.decode("utf-8", errors="replace")


def _response_context(result: InvokeResult) -> JSONDict:
    context: JSONDict = {
        "statusCode": _STATUS[result.outcome],
        "executedVersion": result.executed_version,
    }
    if result.failed:
        context["functionError"] = result.function_error or "Unhandled"
    return context


def async_invocation_record(
    *,
    request_id: str,
    function_arn: str,
    condition: AsyncCondition,
    approximate_invoke_count: int,
    request_payload: bytes,
    result: InvokeResult | None,
    timestamp: float,
) -> JSONDict:
    """The invocation record of an asynchronous invocation (§5.2).

    `result` is the last attempt's result, or None when the event was never run (its age
    expired first): then `responseContext` is null and `responsePayload` is absent.
    """
    version = result.executed_version if result is not None else "$LATEST"
    record: JSONDict = {
        "version": "1.0",
        "timestamp": iso_ms(timestamp),
        "requestContext": {
            "requestId": request_id,
            "functionArn": qualified_arn(function_arn, version),
            "condition": condition,
            "approximateInvokeCount": approximate_invoke_count,
        },
        "requestPayload": _parse(request_payload),
        "responseContext": _response_context(result) if result is not None else None,
    }
    if result is not None and result.payload:
        record["responsePayload"] = _parse(result.payload)
    return record


def stream_failure_record(
    *,
    request_id: str,
    function_arn: str,
    condition: str,
    approximate_invoke_count: int,
    result: InvokeResult | None,
    timestamp: float,
    batch_info: JSONDict,
    payload: JSONDict | None = None,
    build_error: BuildError | None = None,
) -> JSONDict:
    """The on-failure record of an event-source mapping (§5.3).

    `function_arn` is used as given (unqualified unless the trigger targets a version).
    `batch_info` is merged in as is (e.g. `{"KinesisBatchInfo": {...}}`); `payload`, the full
    event, is added only when given. `build_error` (a record the source could not build,
    condition `RecordBuildFailed`: triggerd's own, AWS has none) is added as `buildError`,
    `{"errorType", "errorMessage", "subject"}`.
    """
    record: JSONDict = {
        "requestContext": {
            "requestId": request_id,
            "functionArn": function_arn,
            "condition": condition,
            "approximateInvokeCount": approximate_invoke_count,
        },
        "responseContext": _response_context(result) if result is not None else None,
        "version": "1.0",
        "timestamp": iso_ms(timestamp),
    }
    record.update(batch_info)
    if build_error is not None:
        record["buildError"] = {
            "errorType": build_error.error_type,
            "errorMessage": build_error.message,
            "subject": build_error.subject,
        }
    if payload is not None:
        record["payload"] = payload
    return record


def stream_batch_info(
    kind: Literal["KinesisBatchInfo", "DDBStreamBatchInfo"],
    *,
    shard_id: str,
    stream_arn: str,
    records: Sequence[Record],
) -> JSONDict:
    """The batch metadata of a stream on-failure record (§5.3) for `records`, a batch in
    stream order: the sequence range is the first and last `item_id` (the records' sequence
    numbers), the arrival times their `created_at`."""
    if not records:
        return {}
    first, last = records[0], records[-1]
    return {
        kind: {
            "shardId": shard_id,
            "startSequenceNumber": first.item_id,
            "endSequenceNumber": last.item_id,
            "approximateArrivalOfFirstRecord": iso_ms(first.created_at),
            "approximateArrivalOfLastRecord": iso_ms(last.created_at),
            "batchSize": len(records),
            "streamArn": stream_arn,
        }
    }
