"""Schedule expressions: parsing, next-fire times, DST and counting."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from triggerd_schedule.expressions import (
    SECOND_RATES_ENV,
    CronSchedule,
    RateSchedule,
    ScheduleError,
    parse_schedule,
)


def at(text: str) -> datetime:
    """An ISO time; 'Z' or an explicit offset."""
    return datetime.fromisoformat(text)


def chain(expr: str, after: str, count: int, tz: str = "UTC") -> list[datetime | None]:
    schedule = parse_schedule(expr, tz)
    out: list[datetime | None] = []
    current: datetime | None = at(after)
    for _ in range(count):
        current = schedule.next_fire(current) if current is not None else None
        out.append(current)
    return out


# --------------------------------------------------------------------------------------------
# next_fire, table-driven (2024-01-01 is a Monday)

NEXT_FIRE_CASES = [
    # weekdays at 18:00; strictly after a fire time
    (
        "cron(0 18 ? * MON-FRI *)",
        "UTC",
        "2024-01-05T18:00:00Z",
        ["2024-01-08T18:00:00Z", "2024-01-09T18:00:00Z"],
    ),
    # L: last day of the month, leap February included
    (
        "cron(0 8 L * ? *)",
        "UTC",
        "2024-01-31T08:00:00Z",
        ["2024-02-29T08:00:00Z", "2024-03-31T08:00:00Z", "2024-04-30T08:00:00Z"],
    ),
    ("cron(0 8 L * ? *)", "UTC", "2023-02-01T00:00:00Z", ["2023-02-28T08:00:00Z"]),
    # 2#1: first Monday of the month (AWS numbering 1=SUN, 2=MON)
    (
        "cron(0 9 ? * 2#1 *)",
        "UTC",
        "2024-01-01T09:00:00Z",
        ["2024-02-05T09:00:00Z", "2024-03-04T09:00:00Z", "2024-04-01T09:00:00Z"],
    ),
    ("cron(0 9 ? * MON#1 *)", "UTC", "2024-01-01T09:00:00Z", ["2024-02-05T09:00:00Z"]),
    # 6#5: fifth Friday, only in months that have one
    (
        "cron(0 9 ? * 6#5 *)",
        "UTC",
        "2024-01-01T00:00:00Z",
        ["2024-03-29T09:00:00Z", "2024-05-31T09:00:00Z", "2024-08-30T09:00:00Z"],
    ),
    # 0/10 on weekdays: Friday's last slot, then Monday 00:00
    (
        "cron(0/10 * ? * MON-FRI *)",
        "UTC",
        "2024-01-05T23:45:00Z",
        ["2024-01-05T23:50:00Z", "2024-01-08T00:00:00Z", "2024-01-08T00:10:00Z"],
    ),
    # 15W: 2024-06-15 is a Saturday -> Friday 14th; 2024-09-15 is a Sunday -> Monday 16th
    ("cron(0 12 15W * ? *)", "UTC", "2024-06-01T00:00:00Z", ["2024-06-14T12:00:00Z"]),
    (
        "cron(0 12 15W * ? *)",
        "UTC",
        "2024-09-01T00:00:00Z",
        ["2024-09-16T12:00:00Z", "2024-10-15T12:00:00Z"],
    ),
    # 1W never crosses back into the previous month: 2024-06-01 is a Saturday -> Monday 3rd
    ("cron(0 12 1W * ? *)", "UTC", "2024-05-31T00:00:00Z", ["2024-06-03T12:00:00Z"]),
    # 31W: 2024-03-31 is a Sunday -> Friday 29th; April has no 31st -> no fire in April
    (
        "cron(0 12 31W * ? *)",
        "UTC",
        "2024-03-01T00:00:00Z",
        ["2024-03-29T12:00:00Z", "2024-05-31T12:00:00Z"],
    ),
    # LW: last weekday (March 31 Sunday -> 29th, August 31 Saturday -> 30th)
    (
        "cron(0 0 LW * ? *)",
        "UTC",
        "2024-03-01T00:00:00Z",
        ["2024-03-29T00:00:00Z", "2024-04-30T00:00:00Z", "2024-05-31T00:00:00Z"],
    ),
    ("cron(0 0 LW * ? *)", "UTC", "2024-08-01T00:00:00Z", ["2024-08-30T00:00:00Z"]),
    # 6L / FRIL: last Friday of the month
    (
        "cron(0 10 ? * 6L *)",
        "UTC",
        "2024-01-01T00:00:00Z",
        ["2024-01-26T10:00:00Z", "2024-02-23T10:00:00Z", "2024-03-29T10:00:00Z"],
    ),
    ("cron(0 10 ? * FRIL *)", "UTC", "2024-01-01T00:00:00Z", ["2024-01-26T10:00:00Z"]),
    # L alone in day-of-week is 7 (Saturday), as in Quartz
    (
        "cron(0 10 ? * L *)",
        "UTC",
        "2024-01-01T00:00:00Z",
        ["2024-01-06T10:00:00Z", "2024-01-13T10:00:00Z"],
    ),
    # year field: fires in the listed years, then never again
    (
        "cron(0 0 1 1 ? 2026-2027)",
        "UTC",
        "2024-05-01T00:00:00Z",
        ["2026-01-01T00:00:00Z", "2027-01-01T00:00:00Z", None],
    ),
    ("cron(0 0 1 JAN ? 2030/5)", "UTC", "2024-05-01T00:00:00Z", ["2030-01-01T00:00:00Z"]),
    # month names and lists, case-insensitive names
    (
        "cron(15 6 1 jan,Jul ? *)",
        "UTC",
        "2024-01-01T06:15:00Z",
        ["2024-07-01T06:15:00Z", "2025-01-01T06:15:00Z"],
    ),
    # day-of-week ranges may wrap: FRI-MON
    (
        "cron(0 12 ? * FRI-MON *)",
        "UTC",
        "2024-01-02T00:00:00Z",
        [
            "2024-01-05T12:00:00Z",
            "2024-01-06T12:00:00Z",
            "2024-01-07T12:00:00Z",
            "2024-01-08T12:00:00Z",
            "2024-01-12T12:00:00Z",
        ],
    ),
    # hour ranges with steps
    (
        "cron(0 8-17/3 * * ? *)",
        "UTC",
        "2024-01-01T00:00:00Z",
        ["2024-01-01T08:00:00Z", "2024-01-01T11:00:00Z", "2024-01-01T14:00:00Z"],
    ),
    # day-of-month lists and the 31st only in long months
    (
        "cron(0 0 30,31 * ? *)",
        "UTC",
        "2024-02-01T00:00:00Z",
        ["2024-03-30T00:00:00Z", "2024-03-31T00:00:00Z", "2024-04-30T00:00:00Z"],
    ),
    # Feb 30 never exists
    ("cron(0 0 30 2 ? *)", "UTC", "2024-01-01T00:00:00Z", [None]),
    # evaluated in the configured zone: 09:00 in Tokyo is 00:00 UTC
    ("cron(0 9 * * ? *)", "Asia/Tokyo", "2024-01-01T00:00:00Z", ["2024-01-02T00:00:00Z"]),
    # 5-field crontab
    (
        "*/5 * * * *",
        "UTC",
        "2024-01-01T00:02:30Z",
        ["2024-01-01T00:05:00Z", "2024-01-01T00:10:00Z"],
    ),
    # crontab day-of-week: 0 and 7 are Sunday
    ("0 0 * * 0", "UTC", "2024-01-01T00:00:00Z", ["2024-01-07T00:00:00Z"]),
    ("0 0 * * 7", "UTC", "2024-01-01T00:00:00Z", ["2024-01-07T00:00:00Z"]),
    ("30 9 * * mon-fri", "UTC", "2024-01-05T10:00:00Z", ["2024-01-08T09:30:00Z"]),
    # crontab with both day fields restricted: either matches (Vixie cron)
    (
        "0 0 13 * 5",
        "UTC",
        "2024-01-01T00:00:00Z",
        ["2024-01-05T00:00:00Z", "2024-01-12T00:00:00Z", "2024-01-13T00:00:00Z"],
    ),
    # ... but with a '*'-started field both must match: Fridays that are odd days
    ("0 0 */2 * 5", "UTC", "2024-01-01T00:00:00Z", ["2024-01-05T00:00:00Z"]),
    ("@weekly", "UTC", "2024-01-01T00:00:00Z", ["2024-01-07T00:00:00Z"]),
    ("@hourly", "UTC", "2024-01-01T00:30:00Z", ["2024-01-01T01:00:00Z"]),
]


@pytest.mark.parametrize(("expr", "tz", "after", "expected"), NEXT_FIRE_CASES)
def test_next_fire_table(expr: str, tz: str, after: str, expected: list[str | None]) -> None:
    got = chain(expr, after, len(expected), tz)
    assert got == [None if e is None else at(e) for e in expected]


def test_next_fire_returns_aware_utc() -> None:
    fire = parse_schedule("cron(0 9 * * ? *)", "Europe/Berlin").next_fire(
        at("2024-01-01T00:00:00Z")
    )
    assert fire is not None
    assert fire.tzinfo is UTC
    assert fire == at("2024-01-01T08:00:00Z")


def test_next_fire_is_strictly_after_even_inside_a_second() -> None:
    schedule = parse_schedule("cron(0 12 * * ? *)")
    assert schedule.next_fire(at("2024-01-01T11:59:59.999999Z")) == at("2024-01-01T12:00:00Z")
    assert schedule.next_fire(at("2024-01-01T12:00:00Z")) == at("2024-01-02T12:00:00Z")
    assert schedule.next_fire(at("2024-01-01T12:00:00.5Z")) == at("2024-01-02T12:00:00Z")


def test_next_fire_rejects_naive_datetimes() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        parse_schedule("rate(1 minute)").next_fire(datetime(2024, 1, 1))


# --------------------------------------------------------------------------------------------
# rate()


@pytest.mark.parametrize(
    ("expr", "after", "expected"),
    [
        ("rate(1 minute)", "2024-01-01T12:00:30Z", "2024-01-01T12:01:00Z"),
        ("rate(5 minutes)", "2024-01-01T12:03:10Z", "2024-01-01T12:05:00Z"),
        ("rate(5 minutes)", "2024-01-01T12:05:00Z", "2024-01-01T12:10:00Z"),
        ("rate(1 hour)", "2024-01-01T12:00:00Z", "2024-01-01T13:00:00Z"),
        ("rate(1 day)", "2024-01-01T12:00:00Z", "2024-01-02T00:00:00Z"),
        # aligned to the epoch: 2024-01-01 is day 19723 (odd), so 2-day ticks fall on the 2nd
        ("rate(2 days)", "2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z"),
        ("rate(7 minutes)", "1970-01-01T00:00:00Z", "1970-01-01T00:07:00Z"),
    ],
)
def test_rate_ticks_are_epoch_aligned(expr: str, after: str, expected: str) -> None:
    assert parse_schedule(expr).next_fire(at(after)) == at(expected)


def test_rate_ignores_the_time_zone() -> None:
    schedule = parse_schedule("rate(1 day)", "Europe/Berlin")
    assert schedule.next_fire(at("2024-03-30T12:00:00Z")) == at("2024-03-31T00:00:00Z")
    assert schedule.next_fire(at("2024-03-31T00:00:00Z")) == at("2024-04-01T00:00:00Z")


def test_rate_bulk_methods_are_arithmetic() -> None:
    schedule = parse_schedule("rate(5 minutes)")
    assert isinstance(schedule, RateSchedule)
    start, end = at("2024-01-01T12:00:00Z"), at("2024-01-01T12:30:00Z")
    assert schedule.fires_between(start, end, 3) == [
        at("2024-01-01T12:05:00Z"),
        at("2024-01-01T12:10:00Z"),
        at("2024-01-01T12:15:00Z"),
    ]
    assert len(schedule.fires_between(start, end, 100)) == 6
    assert schedule.count_between(start, end) == 6
    assert schedule.count_between(end, start) == 0
    assert schedule.last_fires(start, end, 2) == [
        at("2024-01-01T12:25:00Z"),
        at("2024-01-01T12:30:00Z"),
    ]
    # a year of minutes is counted without iterating
    assert parse_schedule("rate(1 minute)").count_between(
        at("2023-01-01T00:00:00Z"), at("2024-01-01T00:00:00Z")
    ) == (365 * 24 * 60)


# --------------------------------------------------------------------------------------------
# Daylight saving time: nonexistent local times are skipped, repeated ones fire once

DST_CASES = [
    # Berlin springs forward 2024-03-31 02:00 CET -> 03:00 CEST: 02:30 does not exist that day
    (
        "cron(30 2 * * ? *)",
        "Europe/Berlin",
        "2024-03-29T12:00:00Z",
        ["2024-03-30T01:30:00Z", "2024-04-01T00:30:00Z"],
    ),
    # ... a daily 09:00 stays at 09:00 local time
    (
        "cron(0 9 * * ? *)",
        "Europe/Berlin",
        "2024-03-30T00:00:00Z",
        ["2024-03-30T08:00:00Z", "2024-03-31T07:00:00Z"],
    ),
    # ... every 30 minutes: 02:00 and 02:30 local are skipped
    (
        "cron(0/30 * * * ? *)",
        "Europe/Berlin",
        "2024-03-31T00:15:00Z",
        ["2024-03-31T00:30:00Z", "2024-03-31T01:00:00Z", "2024-03-31T01:30:00Z"],
    ),
    # Berlin falls back 2024-10-27 03:00 CEST -> 02:00 CET: 02:30 happens twice, fires once
    (
        "cron(30 2 * * ? *)",
        "Europe/Berlin",
        "2024-10-26T12:00:00Z",
        ["2024-10-27T00:30:00Z", "2024-10-28T01:30:00Z"],
    ),
    # ... every 30 minutes through the repeated hour: no repeats, no going backwards
    (
        "cron(0/30 * * * ? *)",
        "Europe/Berlin",
        "2024-10-26T23:15:00Z",
        [
            "2024-10-26T23:30:00Z",  # 01:30 CEST
            "2024-10-27T00:00:00Z",  # 02:00 CEST
            "2024-10-27T00:30:00Z",  # 02:30 CEST
            "2024-10-27T02:00:00Z",  # 03:00 CET (02:00 and 02:30 CET are repeats)
            "2024-10-27T02:30:00Z",
        ],
    ),
    # ... asked from inside the second pass of the repeated hour (02:10 CET)
    ("cron(0/30 * * * ? *)", "Europe/Berlin", "2024-10-27T01:10:00Z", ["2024-10-27T02:00:00Z"]),
    # New York springs forward 2024-03-10 02:00 EST -> 03:00 EDT
    (
        "cron(30 2 * * ? *)",
        "America/New_York",
        "2024-03-09T00:00:00Z",
        ["2024-03-09T07:30:00Z", "2024-03-11T06:30:00Z"],
    ),
    # New York falls back 2024-11-03 02:00 EDT -> 01:00 EST: 01:30 fires once (EDT)
    (
        "cron(30 1 * * ? *)",
        "America/New_York",
        "2024-11-02T12:00:00Z",
        ["2024-11-03T05:30:00Z", "2024-11-04T06:30:00Z"],
    ),
    (
        "*/20 1 * * *",
        "America/New_York",
        "2024-11-03T04:30:00Z",
        [
            "2024-11-03T05:00:00Z",
            "2024-11-03T05:20:00Z",
            "2024-11-03T05:40:00Z",
            "2024-11-04T06:00:00Z",  # the repeated 01:xx EST hour does not fire again
        ],
    ),
]


@pytest.mark.parametrize(("expr", "tz", "after", "expected"), DST_CASES)
def test_dst_transitions(expr: str, tz: str, after: str, expected: list[str]) -> None:
    assert chain(expr, after, len(expected), tz) == [at(e) for e in expected]


def brute_force(schedule: CronSchedule, after: datetime, count: int) -> list[datetime]:
    """Oracle: walk every minute; a fire is a matching local time at its first occurrence."""
    fields, zone = schedule.fields, schedule.zone
    out: list[datetime] = []
    t = after.replace(second=0, microsecond=0) + timedelta(minutes=1)
    while len(out) < count:
        local = t.astimezone(zone)
        if (
            local.fold == 0
            and local.minute in fields.minutes
            and local.hour in fields.hours
            and local.month in fields.months
            and local.year in fields.years
            and local.day in fields.days(local.year, local.month)
        ):
            out.append(t)
        t += timedelta(minutes=1)
    return out


@pytest.mark.parametrize(
    ("expr", "tz", "after"),
    [
        ("cron(0/20 1-3 * * ? *)", "Europe/Berlin", "2024-03-30T12:00:00Z"),
        ("cron(0/20 1-3 * * ? *)", "Europe/Berlin", "2024-10-26T12:00:00Z"),
        ("cron(*/7 0-3 ? * SUN *)", "America/New_York", "2024-11-02T00:00:00Z"),
        ("cron(*/7 0-3 ? * SUN *)", "America/New_York", "2024-03-09T00:00:00Z"),
        ("45 1,2 * * *", "America/New_York", "2024-11-02T00:00:00Z"),
        # Lord Howe Island shifts by 30 minutes (2024-04-07 02:00 -> 01:30)
        ("cron(0/5 1-2 * * ? *)", "Australia/Lord_Howe", "2024-04-06T12:00:00Z"),
        ("cron(0/15 * 15W * ? *)", "UTC", "2024-06-13T00:00:00Z"),
    ],
)
def test_next_fire_matches_a_minute_by_minute_oracle(expr: str, tz: str, after: str) -> None:
    schedule = parse_schedule(expr, tz)
    assert isinstance(schedule, CronSchedule)
    expected = brute_force(schedule, at(after), 12)
    assert schedule.fires_between(at(after), expected[-1], 100) == expected


# --------------------------------------------------------------------------------------------
# counting and the most recent fires (used for catch-up)


@pytest.mark.parametrize(
    ("expr", "tz", "start", "end"),
    [
        ("cron(0/15 * * * ? *)", "Europe/Berlin", "2024-10-25T13:07:00Z", "2024-10-29T05:00:00Z"),
        ("cron(0/15 * * * ? *)", "Europe/Berlin", "2024-03-29T13:07:00Z", "2024-04-02T05:00:00Z"),
        ("*/10 * * * *", "America/New_York", "2024-11-01T00:00:00Z", "2024-11-05T00:00:01Z"),
        ("cron(0 12 ? * 6L *)", "UTC", "2023-01-01T00:00:00Z", "2024-12-31T00:00:00Z"),
        ("cron(0/10 * ? * MON-FRI *)", "UTC", "2024-01-05T23:45:00Z", "2024-01-08T00:10:00Z"),
    ],
)
def test_count_between_equals_iteration(expr: str, tz: str, start: str, end: str) -> None:
    schedule = parse_schedule(expr, tz)
    assert schedule.count_between(at(start), at(end)) == len(
        list(schedule.iter_fires(at(start), at(end)))
    )


def test_count_between_is_fast_over_years() -> None:
    schedule = parse_schedule("cron(* * * * ? *)", "Europe/Berlin")
    # four years of minutes, minus the repeated hour each autumn (it fires only once)
    start, end = at("2020-01-01T00:00:00Z"), at("2024-01-01T00:00:00Z")
    minutes = int((end - start).total_seconds() // 60)
    assert schedule.count_between(start, end) == minutes - 4 * 60


def test_last_fires_are_the_most_recent_in_order() -> None:
    schedule = parse_schedule("cron(0 9 ? * MON-FRI *)", "Europe/Berlin")
    start, end = at("2024-01-01T00:00:00Z"), at("2024-06-01T00:00:00Z")
    everything = list(schedule.iter_fires(start, end))
    assert schedule.last_fires(start, end, 3) == everything[-3:]
    assert schedule.last_fires(start, end, 10_000) == everything
    assert schedule.last_fires(end, end, 3) == []


# --------------------------------------------------------------------------------------------
# errors


@pytest.mark.parametrize(
    ("expr", "tz", "message"),
    [
        ("rate(1 minutes)", "UTC", r"singular unit .*rate\(1 minute\)"),
        ("rate(1 hours)", "UTC", r"singular unit .*rate\(1 hour\)"),
        ("rate(5 minute)", "UTC", r"plural unit .*rate\(5 minutes\)"),
        ("rate(2 day)", "UTC", r"plural unit .*rate\(2 days\)"),
        ("rate(0 minutes)", "UTC", "positive"),
        ("rate(5 weeks)", "UTC", "unknown unit 'weeks'"),
        ("rate(five minutes)", "UTC", "positive number and a unit"),
        ("rate 5 minutes", "UTC", "parentheses"),
        ("cron(0 12 * * MON *)", "UTC", "cannot both be set: use '\\?'"),
        ("cron(0 12 ? * ? *)", "UTC", "cannot both be '\\?'"),
        ("cron(0 12 * * ?)", "UTC", "cron\\(\\) needs 6 fields .* got 5"),
        ("cron(0 12 * * ? * *)", "UTC", "needs 6 fields .* got 7"),
        ("cron(60 * * * ? *)", "UTC", "minutes: 60 is out of range \\(0-59\\)"),
        ("cron(0 24 * * ? *)", "UTC", "hours: 24 is out of range"),
        ("cron(0 0 0 * ? *)", "UTC", "day-of-month: 0 is out of range"),
        ("cron(0 0 ? 13 MON *)", "UTC", "month: 13 is out of range"),
        ("cron(0 0 ? * 8 *)", "UTC", "day-of-week: 8 is out of range \\(1-7\\)"),
        ("cron(0 0 ? * FUN *)", "UTC", "'FUN' is not a number 1-7 or SUN-SAT"),
        ("cron(0 0 1 1 ? 1969)", "UTC", "year: 1969 is out of range \\(1970-2199\\)"),
        ("cron(0 0 ? * 2#6 *)", "UTC", "after # must be 1-5"),
        ("cron(0 0 1,L * ? *)", "UTC", "stand alone"),
        ("cron(0 0 ? * 2#1,3 *)", "UTC", "stand alone"),
        ("cron(0 0 10-5 * ? *)", "UTC", "runs backwards"),
        ("cron(0/0 * * * ? *)", "UTC", "step .* must be a positive number"),
        ("cron(0,,5 * * * ? *)", "UTC", "empty item"),
        ("* * * *", "UTC", "5-field crontab .* got 4 fields"),
        ("0 12 L * *", "UTC", "only supported in cron\\(...\\)"),
        ("@every 5m", "UTC", "unknown macro"),
        ("rate(1 minute)", "Mars/Olympus_Mons", "unknown time zone 'Mars/Olympus_Mons'"),
        ("cron(0 12 * * ? *)", "", "unknown time zone"),
    ],
)
def test_invalid_expressions_have_precise_messages(expr: str, tz: str, message: str) -> None:
    with pytest.raises(ScheduleError, match=message):
        parse_schedule(expr, tz)


def test_errors_name_the_expression() -> None:
    with pytest.raises(ScheduleError, match=r"^invalid schedule expression 'rate\(5 minute\)'"):
        parse_schedule("rate(5 minute)")


def test_crontab_names_containing_l_and_w_are_accepted() -> None:
    schedule = parse_schedule("0 0 1 jul wed")
    assert isinstance(schedule, CronSchedule)
    assert schedule.zone == ZoneInfo("UTC")


_TRANSITIONS = [
    ("Europe/Berlin", "2024-03-30T20:00:00Z"),
    ("Europe/Berlin", "2024-10-26T20:00:00Z"),
    ("America/New_York", "2024-03-10T02:00:00Z"),
    ("America/New_York", "2024-11-03T01:00:00Z"),
    ("Australia/Lord_Howe", "2024-04-06T12:00:00Z"),
    ("UTC", "2024-02-28T00:00:00Z"),
]


@settings(max_examples=40, deadline=None)
@given(
    minutes=st.sets(st.integers(0, 59), min_size=1, max_size=4),
    hours=st.sets(st.integers(0, 23), min_size=1, max_size=6),
    day_fields=st.sampled_from(["* * ?", "? * *", "? * MON-FRI", "? * SUN,SAT", "1-15 * ?"]),
    where=st.sampled_from(_TRANSITIONS),
    offset_min=st.integers(0, 600),
)
def test_random_cron_matches_the_oracle_around_transitions(
    minutes: set[int], hours: set[int], day_fields: str, where: tuple[str, str], offset_min: int
) -> None:
    dom, month, dow = day_fields.split()
    expr = (
        f"cron({','.join(map(str, sorted(minutes)))} {','.join(map(str, sorted(hours)))} "
        f"{dom} {month} {dow} *)"
    )
    tz, start = where
    schedule = parse_schedule(expr, tz)
    assert isinstance(schedule, CronSchedule)
    after = at(start) + timedelta(minutes=offset_min)
    expected = brute_force(schedule, after, 5)
    assert schedule.fires_between(after, expected[-1], 100) == expected
    assert schedule.count_between(after, expected[-1]) == 5


def test_second_rates_are_for_tests_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SECOND_RATES_ENV, raising=False)
    with pytest.raises(ScheduleError, match="unknown unit 'seconds'"):
        parse_schedule("rate(2 seconds)")
    monkeypatch.setenv(SECOND_RATES_ENV, "1")
    rate = parse_schedule("rate(2 seconds)")
    after = datetime(2024, 1, 1, 0, 0, 1, tzinfo=UTC)
    assert rate.next_fire(after) == datetime(2024, 1, 1, 0, 0, 2, tzinfo=UTC)
