"""The one ISO-8601 millisecond formatter (S3 eventTime, on-failure records, timeout texts,
log lines)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from triggerd.events.timestamps import iso_ms


def epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (epoch("2024-05-01T12:00:05.568Z"), "2024-05-01T12:00:05.568Z"),
        (epoch("2024-05-01T00:38:06.021Z"), "2024-05-01T00:38:06.021Z"),
        (0.0, "1970-01-01T00:00:00.000Z"),
        (1714564800.5, "2024-05-01T12:00:00.500Z"),
        (1714564805.0, "2024-05-01T12:00:05.000Z"),
        (1700000000.1234, "2023-11-14T22:13:20.123Z"),
        # rounds to the nearest millisecond, carrying into the next second
        (1714564805.9996, "2024-05-01T12:00:06.000Z"),
    ],
)
def test_iso_ms(value: float, expected: str) -> None:
    assert iso_ms(value) == expected


@given(st.integers(min_value=0, max_value=4_102_444_800_000))
def test_iso_ms_round_trips_every_millisecond(millis: int) -> None:
    text = iso_ms(millis / 1000)
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    assert parsed.tzinfo == UTC
    assert text.endswith("Z") and len(text) == 24
    assert round(parsed.timestamp() * 1000) == millis


def test_iso_timestamps_across_second_boundaries() -> None:
    assert iso_ms(0.0) == "1970-01-01T00:00:00.000Z"
    assert iso_ms(1714564800.999) == "2024-05-01T12:00:00.999Z"
    assert iso_ms(1714564801.0005) == "2024-05-01T12:00:01.000Z"
    assert iso_ms(1714564800.25) == "2024-05-01T12:00:00.250Z"
