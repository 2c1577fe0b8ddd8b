"""Property tests of the filter language against simple oracles."""

from __future__ import annotations

import re
from typing import Any

import orjson
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from triggerd.events.filters import compile_filters

keys = st.text(alphabet="abcxyz$-_.", min_size=1, max_size=4).filter(lambda k: k != "$or")
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**53), max_value=2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)
leaf_values = st.one_of(scalars, st.lists(scalars, max_size=3))
records = st.recursive(
    st.dictionaries(keys, leaf_values, max_size=4),
    lambda children: st.dictionaries(keys, st.one_of(leaf_values, children), max_size=4),
    max_leaves=12,
)


def exact_pattern(record: dict[str, Any]) -> dict[str, Any]:
    """A pattern listing every leaf of the record as an exact value."""
    pattern: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, dict):
            sub = exact_pattern(value)
            if sub:
                pattern[key] = sub
        elif isinstance(value, list):
            if value:
                pattern[key] = [value[-1]]
        else:
            pattern[key] = [value]
    return pattern


@settings(max_examples=200, deadline=None, database=None)
@given(records)
def test_exact_pattern_built_from_a_record_matches_it(record: dict[str, Any]) -> None:
    pattern = exact_pattern(record)
    assume(pattern)
    assert compile_filters([pattern]).matches(record)
    # Round-tripped through JSON text, as records arrive from the wire.
    assert compile_filters([orjson.dumps(pattern).decode()]).matches(
        orjson.loads(orjson.dumps(record))
    )


@settings(max_examples=200, deadline=None, database=None)
@given(
    st.one_of(
        st.text(max_size=8),
        st.integers(min_value=-(2**63), max_value=2**63 - 1),
        st.floats(allow_nan=False, allow_infinity=False),
    )
)
def test_anything_but_a_value_never_matches_it_but_exact_does(value: Any) -> None:
    assert not compile_filters([{"k": [{"anything-but": value}]}]).matches({"k": value})
    assert not compile_filters([{"k": [{"anything-but": [value, "zz"]}]}]).matches({"k": value})
    assert compile_filters([{"k": [value]}]).matches({"k": value})


@settings(max_examples=200, deadline=None, database=None)
@given(scalars, scalars)
def test_anything_but_is_the_complement_of_exact_match(listed: Any, seen: Any) -> None:
    assume(listed is not None and not isinstance(listed, bool))
    exact = compile_filters([{"k": [listed]}]).matches({"k": seen})
    negated = compile_filters([{"k": [{"anything-but": listed}]}]).matches({"k": seen})
    assert exact != negated


@settings(max_examples=200, deadline=None, database=None)
@given(st.one_of(st.just(None), leaf_values), st.booleans())
def test_exists_true_and_false_partition_leaf_values(value: Any, present: bool) -> None:
    record = {"k": value} if present else {}
    true_hit = compile_filters([{"k": [{"exists": True}]}]).matches(record)
    false_hit = compile_filters([{"k": [{"exists": False}]}]).matches(record)
    assert true_hit != false_hit


numbers = st.one_of(
    st.integers(min_value=-1000, max_value=1000),
    st.floats(min_value=-1000, max_value=1000, allow_nan=False),
)


@settings(max_examples=300, deadline=None, database=None)
@given(numbers, numbers, numbers, st.booleans(), st.booleans())
def test_numeric_range_agrees_with_python_comparison(
    low: float, high: float, value: float, low_closed: bool, high_closed: bool
) -> None:
    assume(low < high)
    pattern = {
        "n": [{"numeric": [">=" if low_closed else ">", low, "<=" if high_closed else "<", high]}]
    }
    above = value >= low if low_closed else value > low
    below = value <= high if high_closed else value < high
    assert compile_filters([pattern]).matches({"n": value}) is (above and below)


@settings(max_examples=500, deadline=None, database=None)
@given(st.text(alphabet="ab*", max_size=8), st.text(alphabet="ab*", max_size=10))
def test_wildcard_agrees_with_a_regex_oracle(glob: str, text: str) -> None:
    assume("**" not in glob)
    oracle = re.fullmatch(".*".join(re.escape(part) for part in glob.split("*")), text, re.DOTALL)
    assert compile_filters([{"w": [{"wildcard": glob}]}]).matches({"w": text}) is bool(oracle)
