"""The Lambda filter-pattern language: matching, validation, data-key views."""

from __future__ import annotations

import base64
import json
from typing import Any

import orjson
import pytest

from triggerd.events.filters import (
    MAX_FILTERS,
    MAX_PATTERN_CHARS,
    CompiledFilter,
    FilterPatternError,
    compile_filters,
    parse_data,
    view_with_data,
)


def matches(pattern: dict[str, Any] | str, record: dict[str, Any]) -> bool:
    return compile_filters([pattern]).matches(record)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# (pattern, record, expected)
MATCH_CASES: list[Any] = [
    # exact match of strings, numbers, booleans, null, empty string
    pytest.param({"a": ["x"]}, {"a": "x"}, True, id="string-equal"),
    pytest.param({"a": ["x"]}, {"a": "X"}, False, id="string-case-sensitive"),
    pytest.param({"a": ["x"]}, {"a": "x "}, False, id="string-no-normalisation"),
    pytest.param({"a": [5]}, {"a": 5}, True, id="int-equal"),
    pytest.param({"a": [1.5]}, {"a": 1.5}, True, id="float-equal"),
    pytest.param({"a": [300]}, {"a": 300.0}, False, id="int-vs-float-by-representation"),
    pytest.param({"a": [300.0]}, {"a": 300}, False, id="float-vs-int-by-representation"),
    pytest.param({"a": ["5"]}, {"a": 5}, False, id="string-never-equals-number"),
    pytest.param({"a": [5]}, {"a": "5"}, False, id="number-never-equals-string"),
    pytest.param({"a": [True]}, {"a": True}, True, id="bool-equal"),
    pytest.param({"a": [True]}, {"a": 1}, False, id="true-is-not-1"),
    pytest.param({"a": [1]}, {"a": True}, False, id="1-is-not-true"),
    pytest.param({"a": [False]}, {"a": 0}, False, id="false-is-not-0"),
    pytest.param({"a": [None]}, {"a": None}, True, id="null-matches-null"),
    pytest.param({"a": [None]}, {}, False, id="null-does-not-match-missing"),
    pytest.param({"a": [None]}, {"a": ""}, False, id="null-is-not-empty-string"),
    pytest.param({"a": [""]}, {"a": ""}, True, id="empty-string"),
    pytest.param({"a": [""]}, {"a": None}, False, id="empty-string-is-not-null"),
    pytest.param({"a": ["x"]}, {}, False, id="absent-field-no-match"),
    # OR within an array, AND across keys
    pytest.param({"a": ["x", "y"]}, {"a": "y"}, True, id="or-in-array"),
    pytest.param({"a": ["x", "y"]}, {"a": "z"}, False, id="or-in-array-none"),
    pytest.param({"a": ["x"], "b": [1]}, {"a": "x", "b": 1}, True, id="and-across-keys"),
    pytest.param({"a": ["x"], "b": [1]}, {"a": "x", "b": 2}, False, id="and-one-fails"),
    pytest.param({"a": ["x"], "b": [1]}, {"a": "x"}, False, id="and-one-missing"),
    # nested objects
    pytest.param({"a": {"b": {"c": ["x"]}}}, {"a": {"b": {"c": "x"}}}, True, id="nested"),
    pytest.param({"a": {"b": ["x"]}}, {"a": {"b": "y"}}, False, id="nested-mismatch"),
    pytest.param({"a": {"b": ["x"]}}, {"a": "x"}, False, id="nested-pattern-vs-scalar"),
    pytest.param({"a": {"b": ["x"]}}, {}, False, id="nested-parent-missing"),
    pytest.param({"a": ["x"]}, {"a": {"b": "x"}}, False, id="leaf-pattern-vs-object"),
    # arrays in the record
    pytest.param({"a": ["x"]}, {"a": ["w", "x"]}, True, id="array-any-element"),
    pytest.param({"a": ["x"]}, {"a": ["w", "v"]}, False, id="array-no-element"),
    pytest.param({"a": ["x"]}, {"a": [["w"], ["x"]]}, True, id="nested-arrays-flattened"),
    pytest.param({"a": ["x"]}, {"a": []}, False, id="empty-array-no-match"),
    pytest.param({"a": {"b": [2]}}, {"a": [{"b": 1}, {"b": 2}]}, True, id="array-of-objects"),
    pytest.param(
        {"a": {"b": [1], "c": [4]}},
        {"a": [{"b": 1, "c": 2}, {"b": 3, "c": 4}]},
        False,
        id="array-of-objects-fields-from-one-element",
    ),
    pytest.param(
        {"a": {"b": [3], "c": [4]}},
        {"a": [{"b": 1, "c": 2}, {"b": 3, "c": 4}]},
        True,
        id="array-of-objects-same-element",
    ),
    # exists
    pytest.param({"a": [{"exists": True}]}, {"a": "x"}, True, id="exists-true-present"),
    pytest.param({"a": [{"exists": True}]}, {}, False, id="exists-true-missing"),
    pytest.param({"a": [{"exists": True}]}, {"a": None}, True, id="exists-true-null"),
    pytest.param({"a": [{"exists": True}]}, {"a": {"b": 1}}, False, id="exists-true-object"),
    pytest.param({"a": [{"exists": True}]}, {"a": []}, False, id="exists-true-empty-array"),
    pytest.param({"a": [{"exists": False}]}, {}, True, id="exists-false-missing"),
    pytest.param({"a": [{"exists": False}]}, {"a": None}, False, id="exists-false-null"),
    pytest.param({"a": [{"exists": False}]}, {"a": ""}, False, id="exists-false-present"),
    pytest.param({"a": [{"exists": False}]}, {"a": []}, True, id="exists-false-empty-array"),
    pytest.param({"a": [{"exists": False}]}, {"a": {"b": 1}}, False, id="exists-false-object"),
    pytest.param({"a": {"b": [{"exists": False}]}}, {}, True, id="exists-false-parent-missing"),
    pytest.param({"a": {"b": [{"exists": False}]}}, {"a": {}}, True, id="exists-false-nested"),
    pytest.param({"a": [{"exists": False}, "x"]}, {"a": "x"}, True, id="exists-false-or-value"),
    pytest.param({"a": [{"exists": False}], "b": [1]}, {"b": 1}, True, id="exists-false-and"),
    # anything-but
    pytest.param({"a": [{"anything-but": "x"}]}, {"a": "y"}, True, id="ab-scalar"),
    pytest.param({"a": [{"anything-but": "x"}]}, {"a": "x"}, False, id="ab-scalar-equal"),
    pytest.param({"a": [{"anything-but": "x"}]}, {}, False, id="ab-missing"),
    pytest.param({"a": [{"anything-but": "x"}]}, {"a": 5}, True, id="ab-string-vs-number"),
    pytest.param({"a": [{"anything-but": "x"}]}, {"a": None}, True, id="ab-vs-null"),
    pytest.param({"a": [{"anything-but": ["x", "y"]}]}, {"a": "y"}, False, id="ab-list-hit"),
    pytest.param({"a": [{"anything-but": ["x", "y"]}]}, {"a": "z"}, True, id="ab-list-miss"),
    pytest.param({"a": [{"anything-but": 100}]}, {"a": 100}, False, id="ab-number"),
    pytest.param({"a": [{"anything-but": 100}]}, {"a": 101}, True, id="ab-number-other"),
    pytest.param({"a": [{"anything-but": [1, 2]}]}, {"a": 2}, False, id="ab-number-list"),
    pytest.param({"a": [{"anything-but": [1, 2]}]}, {"a": "2"}, True, id="ab-number-vs-str"),
    pytest.param({"a": [{"anything-but": "x"}]}, {"a": ["x", "y"]}, True, id="ab-array-any"),
    pytest.param({"a": [{"anything-but": "x"}]}, {"a": ["x", "x"]}, False, id="ab-array-all"),
    pytest.param(
        {"a": [{"anything-but": {"prefix": "us-"}}]}, {"a": "eu-west"}, True, id="ab-prefix"
    ),
    pytest.param(
        {"a": [{"anything-but": {"prefix": "us-"}}]}, {"a": "us-east"}, False, id="ab-prefix-hit"
    ),
    pytest.param(
        {"a": [{"anything-but": {"prefix": ["us-", "eu-"]}}]},
        {"a": "eu-west"},
        False,
        id="ab-prefix-list",
    ),
    pytest.param({"a": [{"anything-but": {"suffix": ".png"}}]}, {"a": "a.jpg"}, True, id="ab-sfx"),
    pytest.param(
        {"a": [{"anything-but": {"suffix": ".png"}}]}, {"a": "a.png"}, False, id="ab-sfx-hit"
    ),
    pytest.param(
        {"a": [{"anything-but": {"equals-ignore-case": "ALICE"}}]},
        {"a": "alice"},
        False,
        id="ab-ignore-case-hit",
    ),
    pytest.param(
        {"a": [{"anything-but": {"equals-ignore-case": ["x", "Y"]}}]},
        {"a": "bob"},
        True,
        id="ab-ignore-case-list-miss",
    ),
    pytest.param(
        {"a": [{"anything-but": {"wildcard": "*.png"}}]}, {"a": "x.png"}, False, id="ab-wildcard"
    ),
    # numeric
    pytest.param({"a": [{"numeric": ["=", 100]}]}, {"a": 100}, True, id="num-eq"),
    pytest.param({"a": [{"numeric": ["=", 100]}]}, {"a": 100.0}, True, id="num-eq-float"),
    pytest.param({"a": [{"numeric": ["=", 100]}]}, {"a": "100"}, False, id="num-vs-string"),
    pytest.param({"a": [{"numeric": ["=", 1]}]}, {"a": True}, False, id="num-vs-bool"),
    pytest.param({"a": [{"numeric": ["<", 10]}]}, {"a": 9.99}, True, id="num-lt"),
    pytest.param({"a": [{"numeric": ["<", 10]}]}, {"a": 10}, False, id="num-lt-boundary"),
    pytest.param({"a": [{"numeric": ["<=", 10]}]}, {"a": 10}, True, id="num-le-boundary"),
    pytest.param({"a": [{"numeric": [">", 10]}]}, {"a": 10}, False, id="num-gt-boundary"),
    pytest.param({"a": [{"numeric": [">=", 10]}]}, {"a": 10}, True, id="num-ge-boundary"),
    pytest.param({"a": [{"numeric": [">=", -1.5]}]}, {"a": -1.5}, True, id="num-negative"),
    pytest.param({"a": [{"numeric": [">", 10, "<=", 20]}]}, {"a": 10}, False, id="range-low-open"),
    pytest.param({"a": [{"numeric": [">", 10, "<=", 20]}]}, {"a": 10.001}, True, id="range-in"),
    pytest.param({"a": [{"numeric": [">", 10, "<=", 20]}]}, {"a": 20}, True, id="range-hi-closed"),
    pytest.param({"a": [{"numeric": [">", 10, "<=", 20]}]}, {"a": 20.5}, False, id="range-above"),
    pytest.param({"a": [{"numeric": [">=", 0, "<", 5]}]}, {"a": 0}, True, id="range-low-closed"),
    pytest.param({"a": [{"numeric": [">=", 0, "<", 5]}]}, {"a": 5}, False, id="range-hi-open"),
    pytest.param({"a": [{"numeric": ["<", 5, ">=", 0]}]}, {"a": 3}, True, id="range-upper-first"),
    pytest.param({"a": [{"numeric": [">", 0]}]}, {"a": [-1, 3]}, True, id="num-array-any"),
    pytest.param({"a": [{"numeric": [">", 0]}]}, {}, False, id="num-missing"),
    # prefix / suffix / equals-ignore-case
    pytest.param({"a": [{"prefix": "us-"}]}, {"a": "us-east-1"}, True, id="prefix"),
    pytest.param({"a": [{"prefix": "us-"}]}, {"a": "US-east-1"}, False, id="prefix-case"),
    pytest.param({"a": [{"prefix": "1"}]}, {"a": 12}, False, id="prefix-vs-number"),
    pytest.param(
        {"a": [{"prefix": {"equals-ignore-case": "US-"}}]}, {"a": "us-east"}, True, id="prefix-ic"
    ),
    pytest.param(
        {"a": [{"prefix": {"equals-ignore-case": "US-"}}]},
        {"a": "eu-us-"},
        False,
        id="prefix-ic-no",
    ),
    pytest.param({"a": [{"suffix": ".png"}]}, {"a": "x.png"}, True, id="suffix"),
    pytest.param({"a": [{"suffix": ".png"}]}, {"a": "x.PNG"}, False, id="suffix-case"),
    pytest.param(
        {"a": [{"suffix": {"equals-ignore-case": ".PNG"}}]}, {"a": "x.png"}, True, id="suffix-ic"
    ),
    pytest.param({"a": [{"equals-ignore-case": "alice"}]}, {"a": "ALICE"}, True, id="eic"),
    pytest.param({"a": [{"equals-ignore-case": "alice"}]}, {"a": "alicia"}, False, id="eic-no"),
    pytest.param({"a": [{"equals-ignore-case": "straße"}]}, {"a": "STRASSE"}, True, id="eic-fold"),
    # wildcard
    pytest.param({"a": [{"wildcard": "*/lib/*"}]}, {"a": "/usr/lib/x"}, True, id="wc-middle"),
    pytest.param({"a": [{"wildcard": "*/lib/*"}]}, {"a": "/usr/bin/x"}, False, id="wc-middle-no"),
    pytest.param({"a": [{"wildcard": "a*"}]}, {"a": "a"}, True, id="wc-empty-run"),
    pytest.param({"a": [{"wildcard": "a*b*c"}]}, {"a": "abc"}, True, id="wc-two-stars"),
    pytest.param({"a": [{"wildcard": "a*b*c"}]}, {"a": "acb"}, False, id="wc-order"),
    pytest.param({"a": [{"wildcard": "ab*ba"}]}, {"a": "aba"}, False, id="wc-no-overlap"),
    pytest.param({"a": [{"wildcard": "x"}]}, {"a": "x"}, True, id="wc-no-star"),
    pytest.param({"a": [{"wildcard": "x"}]}, {"a": "xx"}, False, id="wc-no-star-exact"),
    pytest.param({"a": [{"wildcard": r"a\*b"}]}, {"a": "a*b"}, True, id="wc-escaped-star"),
    pytest.param({"a": [{"wildcard": r"a\*b"}]}, {"a": "axxb"}, False, id="wc-escaped-literal"),
    pytest.param({"a": [{"wildcard": r"a\\*"}]}, {"a": "a\\zz"}, True, id="wc-escaped-backslash"),
    pytest.param({"a": [{"wildcard": "*"}]}, {"a": ""}, True, id="wc-star-empty"),
    pytest.param({"a": [{"wildcard": "*"}]}, {"a": 1}, False, id="wc-vs-number"),
    pytest.param({"a": [{"wildcard": "a*"}]}, {"a": "a\nb"}, True, id="wc-newline"),
    # cidr
    pytest.param({"ip": [{"cidr": "10.0.0.0/24"}]}, {"ip": "10.0.0.255"}, True, id="cidr4"),
    pytest.param({"ip": [{"cidr": "10.0.0.0/24"}]}, {"ip": "10.0.1.0"}, False, id="cidr4-out"),
    pytest.param({"ip": [{"cidr": "10.0.0.0/24"}]}, {"ip": "::1"}, False, id="cidr4-vs-v6"),
    pytest.param({"ip": [{"cidr": "10.0.0.0/24"}]}, {"ip": "nope"}, False, id="cidr-not-ip"),
    pytest.param({"ip": [{"cidr": "10.0.0.0/24"}]}, {"ip": 167772161}, False, id="cidr-int"),
    pytest.param({"ip": [{"cidr": "2001:db8::/32"}]}, {"ip": "2001:db8::1"}, True, id="cidr6"),
    pytest.param({"ip": [{"cidr": "2001:db8::/32"}]}, {"ip": "2001:db9::1"}, False, id="cidr6-out"),
    pytest.param({"ip": [{"cidr": "2001:db8::/32"}]}, {"ip": "10.0.0.1"}, False, id="cidr6-vs-v4"),
    # $or
    pytest.param({"$or": [{"a": [1]}, {"b": [2]}]}, {"b": 2}, True, id="or-second"),
    pytest.param({"$or": [{"a": [1]}, {"b": [2]}]}, {"a": 1}, True, id="or-first"),
    pytest.param({"$or": [{"a": [1]}, {"b": [2]}]}, {"a": 2, "b": 1}, False, id="or-none"),
    pytest.param({"c": [3], "$or": [{"a": [1]}, {"b": [2]}]}, {"b": 2}, False, id="or-and-sibling"),
    pytest.param(
        {"c": [3], "$or": [{"a": [1]}, {"b": [2]}]}, {"b": 2, "c": 3}, True, id="or-and-both"
    ),
    pytest.param(
        {"x": {"$or": [{"a": [1]}, {"b": [{"numeric": [">", 5]}]}]}},
        {"x": {"b": 6}},
        True,
        id="or-nested",
    ),
    # the DynamoDB typed shape
    pytest.param(
        {"dynamodb": {"NewImage": {"x": {"S": ["v"]}}}},
        {"dynamodb": {"NewImage": {"x": {"S": "v"}}}},
        True,
        id="dynamodb-typed",
    ),
]


@pytest.mark.parametrize(("pattern", "record", "expected"), MATCH_CASES)
def test_pattern_matches_record_as_eventbridge_does(
    pattern: dict[str, Any], record: dict[str, Any], expected: bool
) -> None:
    assert matches(pattern, record) is expected
    # The same pattern given as AWS's JSON text behaves identically.
    assert matches(json.dumps(pattern), record) is expected


# SQS bodies: the view parses JSON bodies, keeps plain-text bodies as strings.
BODY_CASES: list[Any] = [
    pytest.param({"body": {"k": ["v"]}}, '{"k": "v"}', True, id="json-body-json-pattern"),
    pytest.param({"body": {"k": ["v"]}}, "k=v", False, id="plain-body-json-pattern-dropped"),
    pytest.param({"body": ["hello"]}, "hello", True, id="plain-body-plain-pattern"),
    pytest.param(
        {"body": ["hello"]}, '{"k": "hello"}', False, id="json-body-plain-pattern-dropped"
    ),
    pytest.param({"body": [{"prefix": "ERR"}]}, "ERROR: disk", True, id="plain-body-prefix"),
    pytest.param({"body": {"n": [{"numeric": [">", 1]}]}}, '{"n": 2}', True, id="json-numeric"),
    pytest.param({"body": {"n": [2]}}, '{"n": 2.0}', False, id="json-body-float-vs-int"),
    pytest.param({"body": {"n": ["2"]}}, '{"n": 2}', False, id="json-body-number-vs-string"),
    pytest.param({"attributes": {"x": ["1"]}}, "plain", True, id="no-body-in-pattern"),
]


@pytest.mark.parametrize(("pattern", "body", "expected"), BODY_CASES)
def test_sqs_body_kind_decides_match(pattern: dict[str, Any], body: str, expected: bool) -> None:
    payload = {"messageId": "m1", "body": body, "attributes": {"x": "1"}}
    view = view_with_data(payload, "body", "json-text")
    assert compile_filters([pattern]).matches(view) is expected


# Kinesis / Kafka / RabbitMQ data: base64-decoded, then JSON-parsed.
DATA_CASES: list[Any] = [
    pytest.param({"data": {"k": ["v"]}}, b64('{"k": "v"}'), True, id="b64-json"),
    pytest.param({"data": {"k": ["v"]}}, b64("k=v"), False, id="b64-text-json-pattern-dropped"),
    pytest.param({"data": ["k=v"]}, b64("k=v"), True, id="b64-text-plain-pattern"),
    pytest.param({"data": {"k": ["v"]}}, "!!not base64!!", False, id="b64-undecodable"),
]


@pytest.mark.parametrize(("pattern", "data", "expected"), DATA_CASES)
def test_base64_data_is_decoded_before_matching(
    pattern: dict[str, Any], data: str, expected: bool
) -> None:
    view = view_with_data({"data": data}, "data", "base64")
    assert compile_filters([pattern]).matches(view) is expected


PARSE_CASES: list[Any] = [
    pytest.param('{"a": [1, null]}', "json-text", {"a": [1, None]}, id="json-object"),
    pytest.param("hello world", "json-text", "hello world", id="json-plain-text"),
    pytest.param("123", "json-text", 123, id="json-number-text"),
    pytest.param("", "json-text", "", id="json-empty"),
    pytest.param({"already": "parsed"}, "json-text", {"already": "parsed"}, id="json-non-text"),
    pytest.param(b64('{"a": 1}'), "base64", {"a": 1}, id="b64-object"),
    pytest.param(b64("plain"), "base64", "plain", id="b64-plain"),
    pytest.param("@@@", "base64", "@@@", id="b64-invalid"),
    pytest.param(base64.b64encode(b"\xff\xfe").decode(), "base64", "//4=", id="b64-not-utf8"),
    pytest.param(None, "base64", None, id="b64-none"),
]


@pytest.mark.parametrize(("value", "encoding", "expected"), PARSE_CASES)
def test_parse_data_builds_the_filter_view(value: Any, encoding: Any, expected: Any) -> None:
    assert parse_data(value, encoding) == expected


def test_view_with_data_copies_and_leaves_missing_key_missing() -> None:
    payload = {"body": '{"a": 1}', "messageId": "m"}
    view = view_with_data(payload, "body", "json-text")
    assert view == {"body": {"a": 1}, "messageId": "m"}
    assert payload["body"] == '{"a": 1}'
    assert view_with_data({"messageId": "m"}, "body", "json-text") == {"messageId": "m"}


def test_filters_are_ored() -> None:
    compiled = compile_filters([{"a": [1]}, '{"b": [2]}'])
    assert compiled.matches({"a": 1})
    assert compiled.matches({"b": 2})
    assert not compiled.matches({"a": 2, "b": 1})


def test_empty_filter_list_matches_everything_and_is_falsy() -> None:
    compiled = compile_filters([])
    assert not compiled
    assert len(compiled) == 0
    assert compiled.matches({"anything": 1})
    assert CompiledFilter().matches({})
    assert compile_filters([{"a": [1]}])


def test_up_to_max_filters_accepted_then_rejected() -> None:
    patterns = [{"a": [i]} for i in range(MAX_FILTERS)]
    assert len(compile_filters(patterns)) == MAX_FILTERS
    with pytest.raises(FilterPatternError, match=r"too many filters: 6 \(at most 5\)"):
        compile_filters([*patterns, {"a": [99]}])
    assert len(compile_filters([*patterns, {"a": [99]}], max_filters=10)) == 6


def _pattern_of_chars(n: int) -> str:
    text = '{"a": [""]}'
    return text.replace('""', '"' + "x" * (n - len(text)) + '"')


def test_pattern_size_limit_counts_json_text_characters() -> None:
    at_limit = _pattern_of_chars(MAX_PATTERN_CHARS)
    assert len(at_limit) == MAX_PATTERN_CHARS
    assert compile_filters([at_limit])
    with pytest.raises(FilterPatternError, match="4097 characters"):
        compile_filters([_pattern_of_chars(MAX_PATTERN_CHARS + 1)])
    as_dict = orjson.loads(_pattern_of_chars(MAX_PATTERN_CHARS + 20))
    with pytest.raises(FilterPatternError, match="characters as JSON"):
        compile_filters([as_dict])


INVALID_CASES: list[Any] = [
    pytest.param("{not json", r"filter\[0\]: pattern is not valid JSON", id="not-json"),
    pytest.param("[1, 2]", r"filter\[0\]: pattern must be a JSON object, got array", id="array"),
    pytest.param({}, r"filter\[0\]: empty object", id="empty-pattern"),
    pytest.param({"a": {}}, r"at a: empty object", id="empty-nested"),
    pytest.param({"a": "x"}, r"at a: value must be an array or an object, got string", id="leaf"),
    pytest.param({"a": {"b": 5}}, r"at a\.b: value must be an array .* got number", id="leaf-deep"),
    pytest.param({"a": []}, r"at a: empty array matches nothing", id="empty-leaf"),
    pytest.param({"a": [["x"]]}, r"at a\[0\]: expected a value or an operator", id="nested-arr"),
    pytest.param(
        {"a": ["x", {"foo": 1}]}, r"at a\[1\]: unknown operator 'foo' \(known: ", id="unknown-op"
    ),
    pytest.param({"a": [{"b": ["x"]}]}, r"at a\[0\]: unknown operator 'b'", id="object-in-leaf"),
    pytest.param(
        {"a": [{"prefix": "x", "suffix": "y"}]},
        r"at a\[0\]: an operator object needs exactly one operator, got 'prefix', 'suffix'",
        id="two-ops",
    ),
    pytest.param({"a": [{}]}, r"at a\[0\]: an operator object needs exactly one", id="no-op"),
    pytest.param(
        {"p": [{"numeric": [">", "10"]}]},
        r"at p\[0\]\.numeric\[1\]: numeric operand must be a number, got string",
        id="numeric-string-operand",
    ),
    pytest.param(
        {"p": [{"numeric": ["=", True]}]}, r"operand must be a number, got boolean", id="num-bool"
    ),
    pytest.param(
        {"p": [{"numeric": ["!=", 1]}]}, r"numeric\[0\]: unknown numeric operator", id="num-op"
    ),
    pytest.param({"p": [{"numeric": [">"]}]}, r"numeric takes \[op, number\]", id="num-short"),
    pytest.param({"p": [{"numeric": 5}]}, r"numeric takes", id="num-not-list"),
    pytest.param(
        {"p": [{"numeric": [">", 1, ">", 2]}]}, r"one lower .* and one upper", id="num-two-lower"
    ),
    pytest.param({"p": [{"numeric": ["=", 1, "<", 2]}]}, r"one lower", id="num-eq-in-range"),
    pytest.param(
        {"p": [{"numeric": [">", 5, "<", 1]}]}, r"range > 5 and < 1 is empty", id="num-empty"
    ),
    pytest.param({"p": [{"numeric": [">", 5, "<", 5]}]}, r"is empty", id="num-empty-point"),
    pytest.param({"a": [{"exists": "yes"}]}, r"exists takes true or false", id="exists-str"),
    pytest.param({"a": [{"prefix": 5}]}, r"at a\[0\]\.prefix: prefix takes a string", id="pfx"),
    pytest.param({"a": [{"prefix": {"x": "y"}}]}, r"prefix takes a string or", id="pfx-obj"),
    pytest.param({"a": [{"suffix": None}]}, r"suffix takes a string, got null", id="sfx-null"),
    pytest.param({"a": [{"equals-ignore-case": 1}]}, r"equals-ignore-case takes", id="eic-num"),
    pytest.param({"a": [{"wildcard": "a**b"}]}, r"consecutive '\*'", id="wc-double-star"),
    pytest.param({"a": [{"wildcard": r"a\b"}]}, r"invalid escape at character 1", id="wc-esc"),
    pytest.param({"a": [{"wildcard": "a\\"}]}, r"invalid escape", id="wc-trailing-backslash"),
    pytest.param({"a": [{"cidr": "10.0.0.1"}]}, r"cidr needs a network", id="cidr-no-prefix"),
    pytest.param({"a": [{"cidr": "10.0.0.0/33"}]}, r"invalid cidr '10.0.0.0/33'", id="cidr-bad"),
    pytest.param({"a": [{"anything-but": []}]}, r"anything-but list is empty", id="ab-empty"),
    pytest.param(
        {"a": [{"anything-but": [None]}]},
        r"at a\[0\]\.anything-but\[0\]: anything-but takes strings or numbers, got null",
        id="ab-null",
    ),
    pytest.param(
        {"a": [{"anything-but": {"numeric": [">", 1]}}]},
        r"anything-but takes a value, a list, or one of",
        id="ab-numeric",
    ),
    pytest.param(
        {"a": [{"anything-but": {"prefix": 1}}]},
        r"anything-but\.prefix: prefix takes a string",
        id="ab-prefix-num",
    ),
    pytest.param({"$or": []}, r"at \$or: \$or is empty", id="or-empty"),
    pytest.param({"$or": {"a": [1]}}, r"\$or must be an array", id="or-object"),
    pytest.param({"$or": [{"a": [1]}, "b"]}, r"at \$or\[1\]: \$or items must be", id="or-item"),
    pytest.param(
        {"$or": [{"a": [1]}, {"b": [{"numeric": ["<", "x"]}]}]},
        r"at \$or\[1\]\.b\[0\]\.numeric\[1\]",
        id="or-deep-path",
    ),
]


@pytest.mark.parametrize(("pattern", "message"), INVALID_CASES)
def test_malformed_pattern_rejected_with_precise_message(pattern: Any, message: str) -> None:
    with pytest.raises(FilterPatternError, match=message):
        compile_filters([pattern])


def test_error_names_the_failing_filter_index() -> None:
    with pytest.raises(FilterPatternError, match=r"^filter\[1\] at b: "):
        compile_filters([{"a": [1]}, {"b": 2}])


def test_single_pattern_instead_of_list_rejected() -> None:
    with pytest.raises(FilterPatternError, match="must be a list"):
        compile_filters({"a": [1]})  # type: ignore[arg-type]
    with pytest.raises(FilterPatternError, match="must be a list"):
        compile_filters('{"a": [1]}')


def test_filter_pattern_error_is_a_value_error() -> None:
    assert issubclass(FilterPatternError, ValueError)


def test_matches_does_no_pattern_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    compiled = compile_filters(['{"body": {"k": [{"prefix": "v"}], "n": [{"numeric": [">", 1]}]}}'])

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("matches() parsed JSON")

    monkeypatch.setattr(orjson, "loads", forbidden)
    monkeypatch.setattr(json, "loads", forbidden)
    for _ in range(3):
        assert compiled.matches({"body": {"k": "value", "n": 2}})
        assert not compiled.matches({"body": {"k": "other", "n": 2}})
