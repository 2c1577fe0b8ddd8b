"""Classification of AWS errors (triggerd.config.aws): "not now" (retried) against "no" (the
config's error). Streams and SQS share it: one set of throttling codes for both."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from triggerd.config.aws import is_transient, transient


def _error(code: str, status: int) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "Call",
    )


@pytest.mark.parametrize(
    "code",
    [
        # Kinesis and DynamoDB Streams throttling (HTTP 400): a second definition of the set
        # for SQS left these out, and a throttled stream lookup at start became exit 2.
        "ProvisionedThroughputExceededException",
        "LimitExceededException",
        "ThrottlingException",
        # SQS's
        "AWS.SimpleQueueService.RequestThrottled",
        "RequestThrottled",
    ],
)
def test_throttling_codes_of_every_service_are_transient(code: str) -> None:
    assert is_transient(_error(code, 400))
    assert transient(_error(code, 400))


@pytest.mark.parametrize("status", [500, 502, 503, 429])
def test_server_side_and_too_many_requests_statuses_are_transient(status: int) -> None:
    assert is_transient(_error(str(status), status))
    assert transient(_error(str(status), status))


@pytest.mark.parametrize(
    "code",
    [
        "AccessDenied",
        "AccessDeniedException",
        "AWS.SimpleQueueService.NonExistentQueue",
        "QueueDoesNotExist",
        "InvalidClientTokenId",
        "ResourceNotFoundException",
    ],
)
def test_refusals_are_not_transient(code: str) -> None:
    assert not is_transient(_error(code, 400))
    assert not transient(_error(code, 400))


def test_no_answer_is_transient_only_for_transient() -> None:
    """`is_transient` classifies an answer; no answer at all is the caller's own case."""
    exc = EndpointConnectionError(endpoint_url="http://127.0.0.1:1")
    assert transient(exc)
    assert not is_transient(exc)
