"""The last failed attempt's outcome kept with a queued event (triggerd.delivery.outcomes)."""

from __future__ import annotations

import pytest

from triggerd.delivery.outcomes import dump_outcome, given_up_at, load_outcome
from triggerd.types import InvokeResult, Outcome


def test_a_function_error_round_trips_with_a_response_that_is_not_text() -> None:
    payload = b'{"errorMessage": "a\\nb"}\n\xff\x00'
    result = InvokeResult(
        Outcome.FUNCTION_ERROR, payload, "rid-1", function_error="Unhandled", executed_version="7"
    )
    condition, loaded = load_outcome(dump_outcome("RetriesExhausted", result))
    assert condition == "RetriesExhausted"
    assert loaded is not None
    assert (loaded.outcome, loaded.payload, loaded.request_id) == (
        Outcome.FUNCTION_ERROR,
        payload,
        "rid-1",
    )
    assert (loaded.function_error, loaded.executed_version) == ("Unhandled", "7")


def test_a_retry_keeps_its_result_without_a_condition() -> None:
    result = InvokeResult(Outcome.THROTTLED, b"", "rid-2")
    condition, loaded = load_outcome(dump_outcome(None, result))
    assert condition is None
    assert loaded is not None and loaded.outcome is Outcome.THROTTLED and loaded.payload == b""


def test_nothing_to_keep_is_none() -> None:
    assert dump_outcome(None, None) is None
    assert load_outcome(None) == (None, None)


def test_a_condition_without_a_result_round_trips() -> None:
    assert load_outcome(dump_outcome("EventAgeExceeded", None)) == ("EventAgeExceeded", None)


@pytest.mark.parametrize(
    "raw",
    [
        b"not json\npayload",
        b'{"condition": "RetriesExhausted"}',  # no newline: not this format
        b'["a list"]\n',
        b'{"condition": "Unknown", "outcome": "nonsense"}\n',
        b'{"condition": 5, "outcome": 7}\nx',
    ],
)
def test_an_unreadable_value_gives_no_outcome_rather_than_an_error(raw: bytes) -> None:
    assert load_outcome(raw) == (None, None)


def test_a_readable_condition_survives_an_unknown_outcome() -> None:
    raw = b'{"condition": "RetriesExhausted", "outcome": "from-a-newer-version"}\nx'
    assert load_outcome(raw) == ("RetriesExhausted", None)


def test_the_time_an_event_was_given_up_on_round_trips() -> None:
    raw = dump_outcome("RetriesExhausted", None, 1796616110.25)
    assert given_up_at(raw) == 1796616110.25
    assert load_outcome(raw) == ("RetriesExhausted", None)
    assert given_up_at(dump_outcome(None, InvokeResult(Outcome.THROTTLED, b"", "r"))) is None
    assert given_up_at(b'{"at": "soon"}\n') is None
    assert given_up_at(b"not json\n") is None
