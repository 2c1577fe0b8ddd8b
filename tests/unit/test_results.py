"""judge(): partial batch responses per LAMBDA_SEMANTICS.md §3, gotchas 7 and 8."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from triggerd.delivery.results import BatchVerdict, judge, normalize_identifier
from triggerd.types import InvokeResult, Outcome, Record


def rec(item_id: str, key: str | None = None) -> Record:
    return Record(payload={"id": item_id}, item_id=item_id, size=10, created_at=0.0, key=key)


def ok(body: Any = None, raw: bytes | None = None) -> InvokeResult:
    payload = raw if raw is not None else orjson.dumps(body)
    return InvokeResult(outcome=Outcome.OK, payload=payload, request_id="r-1")


def ids(records: list[Record]) -> list[str]:
    return [r.item_id for r in records]


BATCH = [rec("m1"), rec("m2"), rec("m3")]


@pytest.mark.parametrize(
    ("name", "result"),
    [
        ("empty list", ok({"batchItemFailures": []})),
        ("null list", ok({"batchItemFailures": None})),
        ("empty object", ok({})),
        ("json null", ok(None)),
        ("empty body", ok(raw=b"")),
        ("whitespace body", ok(raw=b" \n")),
        ("non-object string", ok("done")),
        ("non-object list", ok([{"itemIdentifier": "m1"}])),
        ("non-object number", ok(42)),
        ("object without the key", ok({"statusCode": 200})),
        ("not json at all", ok(raw=b"plain text")),
    ],
)
def test_full_success_shapes_succeed_whole_batch(name: str, result: InvokeResult) -> None:
    verdict = judge(result, BATCH, report_batch_item_failures=True)
    assert ids(verdict.succeeded) == ["m1", "m2", "m3"], name
    assert verdict.failed == []
    assert not verdict.malformed


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("list is a string", {"batchItemFailures": "m1"}),
        ("list is an object", {"batchItemFailures": {"itemIdentifier": "m1"}}),
        ("entry not an object", {"batchItemFailures": ["m1"]}),
        ("entry null", {"batchItemFailures": [None]}),
        ("misspelled key", {"batchItemFailures": [{"itemId": "m1"}]}),
        ("identifier null", {"batchItemFailures": [{"itemIdentifier": None}]}),
        ("identifier empty", {"batchItemFailures": [{"itemIdentifier": ""}]}),
        ("identifier a number", {"batchItemFailures": [{"itemIdentifier": 7}]}),
        ("unknown identifier", {"batchItemFailures": [{"itemIdentifier": "zz"}]}),
        (
            "one good one bad",
            {"batchItemFailures": [{"itemIdentifier": "m1"}, {"itemIdentifier": ""}]},
        ),
    ],
)
def test_malformed_shapes_fail_whole_batch(name: str, body: Any) -> None:
    verdict = judge(ok(body), BATCH, report_batch_item_failures=True)
    assert verdict.malformed, name
    assert verdict.succeeded == []
    assert ids(verdict.failed) == ["m1", "m2", "m3"]
    assert verdict.reason.startswith("malformed batchItemFailures:")


def test_listed_items_fail_and_others_succeed_in_batch_order() -> None:
    body = {"batchItemFailures": [{"itemIdentifier": "m3"}, {"itemIdentifier": "m1"}]}
    verdict = judge(ok(body), BATCH, report_batch_item_failures=True)
    assert ids(verdict.failed) == ["m1", "m3"]
    assert ids(verdict.succeeded) == ["m2"]
    assert not verdict.malformed
    assert verdict.reason == "partial batch failure: 2 of 3 failed"


def test_duplicate_identifiers_fail_the_record_once() -> None:
    body = {"batchItemFailures": [{"itemIdentifier": "m2"}, {"itemIdentifier": "m2"}]}
    verdict = judge(ok(body), BATCH, report_batch_item_failures=True)
    assert ids(verdict.failed) == ["m2"]
    assert ids(verdict.succeeded) == ["m1", "m3"]


def test_flag_off_ignores_reported_failures() -> None:
    body = {"batchItemFailures": [{"itemIdentifier": "m1"}]}
    verdict = judge(ok(body), BATCH, report_batch_item_failures=False)
    assert ids(verdict.succeeded) == ["m1", "m2", "m3"]
    assert verdict.failed == []


def test_flag_off_ignores_malformed_response() -> None:
    verdict = judge(ok({"batchItemFailures": "junk"}), BATCH, report_batch_item_failures=False)
    assert ids(verdict.succeeded) == ["m1", "m2", "m3"]
    assert not verdict.malformed


@pytest.mark.parametrize(
    ("outcome", "reason"),
    [(Outcome.FUNCTION_ERROR, "function error"), (Outcome.TIMEOUT, "timeout")],
)
@pytest.mark.parametrize("flag", [True, False])
def test_function_error_and_timeout_fail_whole_batch_ignoring_body(
    outcome: Outcome, reason: str, flag: bool
) -> None:
    body = orjson.dumps({"batchItemFailures": [{"itemIdentifier": "m1"}]})
    result = InvokeResult(outcome=outcome, payload=body, request_id="r", function_error="Unhandled")
    verdict = judge(result, BATCH, report_batch_item_failures=flag)
    assert ids(verdict.failed) == ["m1", "m2", "m3"]
    assert verdict.succeeded == []
    assert not verdict.malformed
    assert verdict.reason == reason


@pytest.mark.parametrize("outcome", [Outcome.THROTTLED, Outcome.INVOKE_ERROR])
def test_throttle_and_invoke_error_are_not_judged(outcome: Outcome) -> None:
    result = InvokeResult(outcome=outcome, payload=b"", request_id="r")
    with pytest.raises(ValueError, match=outcome.value):
        judge(result, BATCH, report_batch_item_failures=True)


def test_failure_of_a_key_fails_later_records_with_that_key_only() -> None:
    batch = [rec("a1", "A"), rec("b1", "B"), rec("a2", "A"), rec("b2", "B"), rec("a3", "A")]
    verdict = judge(
        ok({"batchItemFailures": [{"itemIdentifier": "a1"}]}),
        batch,
        report_batch_item_failures=True,
    )
    assert ids(verdict.failed) == ["a1", "a2", "a3"]
    assert ids(verdict.succeeded) == ["b1", "b2"]


def test_earlier_records_of_a_failed_key_still_succeed() -> None:
    # Stream rule: checkpoint just before the lowest failed sequence number.
    batch = [rec("s1", "shard-0"), rec("s2", "shard-0"), rec("s3", "shard-0")]
    verdict = judge(
        ok({"batchItemFailures": [{"itemIdentifier": "s2"}]}),
        batch,
        report_batch_item_failures=True,
    )
    assert ids(verdict.succeeded) == ["s1"]
    assert ids(verdict.failed) == ["s2", "s3"]


def test_records_without_key_are_judged_individually() -> None:
    batch = [rec("n1"), rec("n2"), rec("n3")]
    verdict = judge(
        ok({"batchItemFailures": [{"itemIdentifier": "n1"}]}),
        batch,
        report_batch_item_failures=True,
    )
    assert ids(verdict.failed) == ["n1"]
    assert ids(verdict.succeeded) == ["n2", "n3"]


def test_kafka_object_identifiers_fail_from_lowest_offset_in_partition() -> None:
    batch = [
        rec("orders-0:10", "orders-0"),
        rec("orders-1:5", "orders-1"),
        rec("orders-0:11", "orders-0"),
        rec("orders-0:12", "orders-0"),
        rec("orders-1:6", "orders-1"),
    ]
    body = {"batchItemFailures": [{"itemIdentifier": {"partition": "orders-0", "offset": 11}}]}
    verdict = judge(ok(body), batch, report_batch_item_failures=True)
    assert ids(verdict.failed) == ["orders-0:11", "orders-0:12"]
    assert ids(verdict.succeeded) == ["orders-0:10", "orders-1:5", "orders-1:6"]


def test_kafka_identifier_with_string_offset_matches() -> None:
    batch = [rec("t-0:3", "t-0")]
    body = {"batchItemFailures": [{"itemIdentifier": {"partition": "t-0", "offset": "3"}}]}
    verdict = judge(ok(body), batch, report_batch_item_failures=True)
    assert ids(verdict.failed) == ["t-0:3"]


def test_kafka_identifier_for_offset_not_in_batch_is_malformed() -> None:
    batch = [rec("t-0:3", "t-0")]
    body = {"batchItemFailures": [{"itemIdentifier": {"partition": "t-0", "offset": 4}}]}
    verdict = judge(ok(body), batch, report_batch_item_failures=True)
    assert verdict.malformed


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("059f36b4", "059f36b4"),
        ("", None),
        (None, None),
        (12, None),
        (True, None),
        ([], None),
        ({"partition": "topic-a-0", "offset": 15}, "topic-a-0:15"),
        ({"partition": "topic-a-0", "offset": "15"}, "topic-a-0:15"),
        ({"partition": "topic-a-0", "offset": "007"}, "topic-a-0:7"),
        ({"partition": "topic-a-0", "offset": -1}, None),
        ({"partition": "topic-a-0", "offset": True}, None),
        ({"partition": "topic-a-0", "offset": "x"}, None),
        ({"partition": "topic-a-0", "offset": 1.5}, None),
        ({"partition": "", "offset": 1}, None),
        ({"partition": 3, "offset": 1}, None),
        ({"partition": "topic-a-0"}, None),
        ({"offset": 1}, None),
    ],
)
def test_normalize_identifier(value: Any, expected: str | None) -> None:
    assert normalize_identifier(value) == expected


def test_empty_batch_with_success_body_is_empty_verdict() -> None:
    assert judge(ok({}), [], report_batch_item_failures=True) == BatchVerdict([], [])
