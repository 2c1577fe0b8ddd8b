"""Destination record builders against the examples of LAMBDA_SEMANTICS.md §5.2 and §5.3."""

from __future__ import annotations

from datetime import datetime

import orjson
import pytest

from triggerd.delivery.failures import (
    async_invocation_record,
    qualified_arn,
    stream_failure_record,
)
from triggerd.types import InvokeResult, Outcome

ARN = "arn:aws:lambda:us-east-1:123456789012:function:my-function"
REQUEST_ID = "e4b46cbf-b738-4a2e-8880-a18cdf61200e"
ERROR = {
    "errorMessage": "something broke",
    "errorType": "ValueError",
    "requestId": REQUEST_ID,
    "stackTrace": [
        '  File "/var/task/app.py", line 3, in handler\n    raise ValueError("something broke")\n'
    ],
}


def epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def failed_result(version: str = "$LATEST") -> InvokeResult:
    return InvokeResult(
        outcome=Outcome.FUNCTION_ERROR,
        payload=orjson.dumps(ERROR),
        request_id=REQUEST_ID,
        function_error="Unhandled",
        executed_version=version,
    )


# -- qualified_arn -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arn", "version", "expected"),
    [
        (ARN, "$LATEST", ARN + ":$LATEST"),
        (ARN, "7", ARN + ":7"),
        (ARN + ":prod", "7", ARN + ":prod"),
        (ARN + ":$LATEST", "$LATEST", ARN + ":$LATEST"),
        ("my-function", "$LATEST", "my-function:$LATEST"),
    ],
)
def test_qualified_arn(arn: str, version: str, expected: str) -> None:
    assert qualified_arn(arn, version) == expected


# -- async invocation record (§5.2) --------------------------------------------------------------


def test_async_record_matches_semantics_example_field_by_field() -> None:
    record = async_invocation_record(
        request_id=REQUEST_ID,
        function_arn=ARN,
        condition="RetriesExhausted",
        approximate_invoke_count=3,
        request_payload=b'{"orderId": 42}',
        result=failed_result(),
        timestamp=epoch("2024-05-01T12:00:05.568Z"),
    )
    assert record["version"] == "1.0"
    assert record["timestamp"] == "2024-05-01T12:00:05.568Z"
    assert record["requestContext"] == {
        "requestId": REQUEST_ID,
        "functionArn": ARN + ":$LATEST",
        "condition": "RetriesExhausted",
        "approximateInvokeCount": 3,
    }
    assert record["requestPayload"] == {"orderId": 42}
    assert record["responseContext"] == {
        "statusCode": 200,
        "executedVersion": "$LATEST",
        "functionError": "Unhandled",
    }
    assert record["responsePayload"] == ERROR
    assert set(record) == {
        "version",
        "timestamp",
        "requestContext",
        "requestPayload",
        "responseContext",
        "responsePayload",
    }


def test_async_record_qualifies_arn_with_executed_version() -> None:
    record = async_invocation_record(
        request_id=REQUEST_ID,
        function_arn=ARN,
        condition="RetriesExhausted",
        approximate_invoke_count=3,
        request_payload=b"{}",
        result=failed_result(version="4"),
        timestamp=0.0,
    )
    assert record["requestContext"]["functionArn"] == ARN + ":4"
    assert record["responseContext"]["executedVersion"] == "4"


def test_async_success_record_has_no_function_error_and_parsed_response() -> None:
    result = InvokeResult(outcome=Outcome.OK, payload=b'{"ok": true}', request_id=REQUEST_ID)
    record = async_invocation_record(
        request_id=REQUEST_ID,
        function_arn=ARN,
        condition="Success",
        approximate_invoke_count=1,
        request_payload=b'{"orderId": 42}',
        result=result,
        timestamp=0.0,
    )
    assert record["requestContext"]["condition"] == "Success"
    assert record["responseContext"] == {"statusCode": 200, "executedVersion": "$LATEST"}
    assert record["responsePayload"] == {"ok": True}


def test_async_record_for_event_never_run_omits_response() -> None:
    record = async_invocation_record(
        request_id=REQUEST_ID,
        function_arn=ARN,
        condition="EventAgeExceeded",
        approximate_invoke_count=0,
        request_payload=b'{"orderId": 42}',
        result=None,
        timestamp=0.0,
    )
    assert record["requestContext"]["functionArn"] == ARN + ":$LATEST"
    assert record["requestContext"]["approximateInvokeCount"] == 0
    assert record["responseContext"] is None
    assert "responsePayload" not in record


def test_async_record_omits_empty_response_payload() -> None:
    result = InvokeResult(outcome=Outcome.OK, payload=b"", request_id=REQUEST_ID)
    record = async_invocation_record(
        request_id=REQUEST_ID,
        function_arn=ARN,
        condition="Success",
        approximate_invoke_count=1,
        request_payload=b"{}",
        result=result,
        timestamp=0.0,
    )
    assert "responsePayload" not in record


def test_async_record_keeps_non_json_payloads_as_strings() -> None:
    result = InvokeResult(
        outcome=Outcome.TIMEOUT,
        payload=b"Task timed out after 3.00 seconds",
        request_id=REQUEST_ID,
    )
    record = async_invocation_record(
        request_id=REQUEST_ID,
        function_arn=ARN,
        condition="RetriesExhausted",
        approximate_invoke_count=3,
        request_payload=b"not json",
        result=result,
        timestamp=0.0,
    )
    assert record["requestPayload"] == "not json"
    assert record["responsePayload"] == "Task timed out after 3.00 seconds"
    # A timeout without an X-Amz-Function-Error value is still an Unhandled error.
    assert record["responseContext"]["functionError"] == "Unhandled"


def test_async_record_is_json_serialisable() -> None:
    record = async_invocation_record(
        request_id=REQUEST_ID,
        function_arn=ARN,
        condition="RetriesExhausted",
        approximate_invoke_count=3,
        request_payload=b'{"orderId": 42}',
        result=failed_result(),
        timestamp=1.0,
    )
    assert orjson.loads(orjson.dumps(record)) == record


# -- event-source-mapping record (§5.3) --------------------------------------------------------

KINESIS_INFO = {
    "shardId": "shardId-000000000001",
    "startSequenceNumber": "49601189658422359378836298521827638475320189012309704722",
    "endSequenceNumber": "49601189658422359378836298522902373528957594348623495186",
    "approximateArrivalOfFirstRecord": "2024-05-01T00:38:04.835Z",
    "approximateArrivalOfLastRecord": "2024-05-01T00:38:05.580Z",
    "batchSize": 500,
    "streamArn": "arn:aws:kinesis:us-east-1:123456789012:stream/mystream",
}
ESM_ARN = "arn:aws:lambda:us-east-1:123456789012:function:myfunction"
ESM_REQUEST_ID = "c9b8fa9f-5a7f-4f2e-af9c-0c604cde93a5"


def test_stream_record_matches_semantics_example_field_by_field() -> None:
    record = stream_failure_record(
        request_id=ESM_REQUEST_ID,
        function_arn=ESM_ARN,
        condition="RetryAttemptsExhausted",
        approximate_invoke_count=1,
        result=failed_result(),
        timestamp=epoch("2024-05-01T00:38:06.021Z"),
        batch_info={"KinesisBatchInfo": KINESIS_INFO},
    )
    assert record["requestContext"] == {
        "requestId": ESM_REQUEST_ID,
        "functionArn": ESM_ARN,
        "condition": "RetryAttemptsExhausted",
        "approximateInvokeCount": 1,
    }
    assert record["responseContext"] == {
        "statusCode": 200,
        "executedVersion": "$LATEST",
        "functionError": "Unhandled",
    }
    assert record["version"] == "1.0"
    assert record["timestamp"] == "2024-05-01T00:38:06.021Z"
    assert record["KinesisBatchInfo"] == KINESIS_INFO
    assert list(record) == [
        "requestContext",
        "responseContext",
        "version",
        "timestamp",
        "KinesisBatchInfo",
    ]


def test_stream_record_keeps_function_arn_unqualified() -> None:
    record = stream_failure_record(
        request_id=ESM_REQUEST_ID,
        function_arn=ESM_ARN,
        condition="RetryAttemptsExhausted",
        approximate_invoke_count=1,
        result=failed_result(),
        timestamp=0.0,
        batch_info={},
    )
    assert record["requestContext"]["functionArn"] == ESM_ARN


def test_stream_record_without_result_has_null_response_context() -> None:
    record = stream_failure_record(
        request_id=ESM_REQUEST_ID,
        function_arn=ESM_ARN,
        condition="MaximumPayloadSizeExceeded",
        approximate_invoke_count=0,
        result=None,
        timestamp=0.0,
        batch_info={"DDBStreamBatchInfo": {"shardId": "s"}},
    )
    assert "responseContext" in record
    assert record["responseContext"] is None
    assert record["DDBStreamBatchInfo"] == {"shardId": "s"}


def test_stream_record_carries_payload_only_when_given() -> None:
    event = {"eventSource": "SelfManagedKafka", "records": {}}
    common = {
        "request_id": ESM_REQUEST_ID,
        "function_arn": ESM_ARN,
        "condition": "RetryAttemptsExhausted",
        "approximate_invoke_count": 2,
        "result": failed_result(),
        "timestamp": 0.0,
        "batch_info": {"KafkaBatchInfo": {"batchSize": 1}},
    }
    without = stream_failure_record(**common)  # type: ignore[arg-type]
    with_payload = stream_failure_record(**common, payload=event)  # type: ignore[arg-type]
    assert "payload" not in without
    assert with_payload["payload"] == event
    assert "responsePayload" not in with_payload


def test_stream_batch_info_names_the_sequence_range_and_arrival_times() -> None:
    from triggerd.delivery.failures import stream_batch_info
    from triggerd.types import Record

    records = [
        Record(payload={}, item_id="00000000000022262072000000000001", size=1, created_at=1.5),
        Record(payload={}, item_id="00000000000022262072000000000002", size=1, created_at=2.25),
    ]
    arn = "arn:aws:dynamodb:us-east-1:123456789012:table/db.public.orders/stream/slot"
    info = stream_batch_info(
        "DDBStreamBatchInfo", shard_id="shardId-x", stream_arn=arn, records=records
    )
    assert info == {
        "DDBStreamBatchInfo": {
            "shardId": "shardId-x",
            "startSequenceNumber": "00000000000022262072000000000001",
            "endSequenceNumber": "00000000000022262072000000000002",
            "approximateArrivalOfFirstRecord": "1970-01-01T00:00:01.500Z",
            "approximateArrivalOfLastRecord": "1970-01-01T00:00:02.250Z",
            "batchSize": 2,
            "streamArn": arn,
        }
    }
    assert stream_batch_info("KinesisBatchInfo", shard_id="s", stream_arn=arn, records=[]) == {}
