"""Schedule expressions: parsing and next-fire calculation.

Three forms are accepted:

- `rate(N unit)`: unit minute/hour/day, singular when N is 1 and plural otherwise (as AWS
  requires). Ticks are aligned to the Unix epoch in UTC (`rate(5 minutes)` fires at :00, :05,
  ...; `rate(1 day)` at 00:00 UTC), so they are the same across restarts. The time zone does
  not affect rates.
- `cron(Minutes Hours Day-of-month Month Day-of-week Year)`: AWS cron. Exactly one of
  day-of-month / day-of-week is `?`. Day-of-week counts 1=SUN..7=SAT (or SUN-SAT). Supported:
  `*`, lists, ranges (day-of-week ranges may wrap, `FRI-MON`), `*/n`, `a/n`, `a-b/n`, month
  names, and the Quartz specials AWS documents: day-of-month `L` (last day), `nW` (weekday
  nearest day n, never crossing the month), `LW` (last weekday); day-of-week `dL` (last d of
  the month), `L` alone (= 7, Saturday, as in Quartz) and `d#k` (k-th d of the month). `L`,
  `W` and `#` items stand alone in their field. Years 1970-2199.
- a plain 5-field crontab line `Min Hour DoM Month DoW` (day-of-week 0-7, 0 and 7 = SUN), or
  `@hourly`/`@daily`/`@midnight`/`@weekly`/`@monthly`/`@yearly`/`@annually`. As in Vixie
  cron, when both day fields are restricted (neither starts with `*`) a day matches if either
  matches.

Cron expressions are evaluated in the configured IANA time zone. Daylight saving time follows
EventBridge Scheduler: a local time that does not exist (spring forward) is skipped, and a
local time that happens twice (fall back) fires once, at its first occurrence.

How it is computed: we work out the matching days of each month ourselves (that covers `L`,
`W`, `#` and the crontab OR rule), then let APScheduler 3's `CronTrigger` find the next
matching wall-clock time in that month. The trigger runs in UTC on naive wall-clock values and
we map the result onto the zone here, because APScheduler 3.11's own zone handling shifts
nonexistent times, fires ambiguous times twice and can even step backwards across a fall-back
transition. APScheduler is imported lazily, only when a cron schedule is first evaluated.
"""

from __future__ import annotations

import bisect
import calendar
import importlib.util
import os
import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from triggerd.config.plugins import import_extra

MIN_YEAR = 1970
MAX_YEAR = 2199
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_ONE_US = timedelta(microseconds=1)
_ONE_DAY = timedelta(days=1)
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_DAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
_RATE_UNITS = {"minute": 60, "hour": 3600, "day": 86400}
#: `rate(N second(s))` exists for tests of clustered schedules (a failover seen within
#: seconds); EventBridge has no such unit, so it is refused unless this variable is "1".
SECOND_RATES_ENV = "TRIGGERD_TEST_SECOND_RATES"
_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
#: Guard against a runaway search (every step moves forward; a real search needs far fewer).
_MAX_STEPS = 100_000

#: Days of a month that match: (year, month) -> day numbers.
DayRule = Callable[[int, int], frozenset[int]]


class ScheduleError(ValueError):
    """An invalid schedule expression or time zone."""


def load_zone(name: str) -> ZoneInfo:
    """The IANA time zone `name`, or a ScheduleError saying what to use instead."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(
            f"unknown time zone {name!r}: use an IANA name such as 'UTC' or 'Europe/Berlin'"
        ) from None


def _as_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("schedule times must be timezone-aware")
    return value.astimezone(UTC)


# --------------------------------------------------------------------------------------------
# Schedules


class Schedule:
    """A parsed schedule. All methods take aware datetimes and return aware UTC datetimes."""

    def __init__(self, expression: str) -> None:
        self.expression = expression

    def next_fire(self, after: datetime) -> datetime | None:
        """The first fire time strictly after `after`, or None when there is none."""
        raise NotImplementedError

    def fires_ever(self) -> bool:
        """Whether any fire time exists at all (a cron's days may match no date)."""
        return True

    def fires_between(self, start: datetime, end: datetime, limit: int) -> list[datetime]:
        """The first `limit` fire times in (start, end], oldest first."""
        out: list[datetime] = []
        for fire in self.iter_fires(start, end):
            if len(out) >= limit:
                break
            out.append(fire)
        return out

    def iter_fires(self, start: datetime, end: datetime) -> Iterator[datetime]:
        """Fire times in (start, end], oldest first."""
        end = _as_utc(end)
        current = self.next_fire(_as_utc(start))
        while current is not None and current <= end:
            yield current
            current = self.next_fire(current)

    def count_between(self, start: datetime, end: datetime) -> int:
        """How many fire times lie in (start, end]."""
        return sum(1 for _ in self.iter_fires(start, end))

    def last_fires(self, start: datetime, end: datetime, count: int) -> list[datetime]:
        """The last `count` fire times in (start, end], oldest first.

        Searches backwards from `end` in doubling windows, so the cost follows `count`, not
        the length of (start, end].
        """
        start, end = _as_utc(start), _as_utc(end)
        window = timedelta(hours=1)
        while True:
            low = max(start, end - window)
            found: deque[datetime] = deque(maxlen=count)
            total = 0
            for fire in self.iter_fires(low, end):
                found.append(fire)
                total += 1
            if total >= count or low == start:
                return list(found)
            window *= 2

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.expression!r})"


class RateSchedule(Schedule):
    """`rate(N unit)`: every `period_s` seconds, aligned to the epoch."""

    def __init__(self, expression: str, period_s: int) -> None:
        super().__init__(expression)
        self.period = timedelta(seconds=period_s)

    def _index(self, value: datetime) -> int:
        """Number of the last tick at or before `value`."""
        return (_as_utc(value) - EPOCH) // self.period

    def _tick(self, index: int) -> datetime:
        return EPOCH + index * self.period

    def next_fire(self, after: datetime) -> datetime | None:
        return self._tick(self._index(after) + 1)

    def fires_between(self, start: datetime, end: datetime, limit: int) -> list[datetime]:
        first, last = self._index(start) + 1, self._index(end)
        return [self._tick(i) for i in range(first, min(last, first + limit - 1) + 1)]

    def count_between(self, start: datetime, end: datetime) -> int:
        return max(0, self._index(end) - self._index(start))

    def last_fires(self, start: datetime, end: datetime, count: int) -> list[datetime]:
        first, last = self._index(start) + 1, self._index(end)
        return [self._tick(i) for i in range(max(first, last - count + 1), last + 1)]


@dataclass(frozen=True, slots=True)
class CronFields:
    """A cron expression reduced to value sets, plus a rule for the days of a month."""

    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    months: frozenset[int]
    years: tuple[int, ...]
    days: DayRule


class CronSchedule(Schedule):
    """AWS cron or crontab, evaluated on local wall-clock time in `zone`."""

    def __init__(self, expression: str, fields: CronFields, zone: ZoneInfo) -> None:
        super().__init__(expression)
        self.fields = fields
        self.zone = zone
        self._triggers: dict[tuple[int, int], Any] = {}
        self._days: dict[tuple[int, int], frozenset[int]] = {}

    # ---- wall clock -> instant

    def _instant(self, wall: datetime) -> datetime | None:
        """The first instant whose local time is `wall`, or None if `wall` does not exist."""
        local = wall.replace(tzinfo=self.zone, fold=0)
        instant = local.astimezone(UTC)
        if instant.astimezone(self.zone).replace(tzinfo=None) != wall:
            return None
        return instant

    def _wall(self, instant: datetime) -> datetime:
        return instant.astimezone(self.zone).replace(tzinfo=None)

    # ---- calendar

    def days_of(self, year: int, month: int) -> frozenset[int]:
        key = (year, month)
        days = self._days.get(key)
        if days is None:
            if len(self._days) > 256:
                self._days.clear()
            days = self._days[key] = self.fields.days(year, month)
        return days

    def _trigger(self, year: int, month: int, days: frozenset[int]) -> Any:
        key = (year, month)
        trigger = self._triggers.get(key)
        if trigger is None:
            if len(self._triggers) > 64:
                self._triggers.clear()
            trigger = self._triggers[key] = _cron_trigger_class()(
                year=year,
                month=month,
                day=_join(days),
                hour=_join(self.fields.hours),
                minute=_join(self.fields.minutes),
                second=0,
                timezone=UTC,
            )
        return trigger

    def _next_wall(self, wall: datetime) -> datetime | None:
        """The first matching wall-clock time strictly after `wall` (naive)."""
        years = self.fields.years
        year, month = wall.year, wall.month
        probe: datetime | None = wall + _ONE_US
        while True:
            if year not in years:
                i = bisect.bisect_right(years, year)
                if i == len(years):
                    return None
                year, month, probe = years[i], 1, None
            if month in self.fields.months:
                days = self.days_of(year, month)
                if days:
                    start = probe or datetime(year, month, 1)
                    found = self._trigger(year, month, days).get_next_fire_time(
                        None, start.replace(tzinfo=UTC)
                    )
                    if found is not None:
                        return found.replace(tzinfo=None)  # type: ignore[no-any-return]
            year, month, probe = (year + 1, 1, None) if month == 12 else (year, month + 1, None)

    # ---- Schedule

    def fires_ever(self) -> bool:
        """Whether some year and month of the fields have a matching day (hours and minutes
        always have values): `cron(0 0 30 2 ? *)` has none. Needs no APScheduler."""
        fields = self.fields
        return any(
            fields.days(year, month) for year in fields.years for month in sorted(fields.months)
        )

    def next_fire(self, after: datetime) -> datetime | None:
        after = _as_utc(after)
        wall = self._wall(after)
        for _ in range(_MAX_STEPS):
            candidate = self._next_wall(wall)
            if candidate is None:
                return None
            instant = self._instant(candidate)
            # Skipped: a nonexistent local time, or (after is in the second pass of a
            # fall-back hour) a local time whose one firing, at its first occurrence, is past.
            if instant is not None and instant > after:
                return instant
            wall = candidate
        raise RuntimeError(f"no next fire time found for {self.expression!r}")

    def count_between(self, start: datetime, end: datetime) -> int:
        """Counts whole days arithmetically; walks only the edge days and DST-change days."""
        start, end = _as_utc(start), _as_utc(end)
        if end <= start:
            return 0
        first, last = self._wall(start).date(), self._wall(end).date()
        per_day = len(self.fields.hours) * len(self.fields.minutes)
        total = 0
        day = first
        while day <= last:
            if day.year not in self.fields.years or day.month not in self.fields.months:
                day = _next_month(day)
                continue
            if day.day in self.days_of(day.year, day.month):
                if day in (first, last) or not self._regular(day):
                    total += self._count_day(day, start, end)
                else:
                    total += per_day
            day += _ONE_DAY
        return total

    def _regular(self, day: date) -> bool:
        """True if the day's UTC offset does not change (no DST transition in it)."""
        start = datetime(day.year, day.month, day.day, tzinfo=self.zone)
        following = start + _ONE_DAY  # wall-clock arithmetic: the next local midnight
        return start.utcoffset() == following.utcoffset()

    def _count_day(self, day: date, start: datetime, end: datetime) -> int:
        """Fires on local `day` within (start, end]: each local time that exists fires once,
        at its first occurrence (the rule next_fire follows)."""
        count = 0
        for hour in self.fields.hours:
            for minute in self.fields.minutes:
                wall = datetime(day.year, day.month, day.day, hour, minute)
                instant = self._instant(wall)
                if instant is not None and start < instant <= end:
                    count += 1
        return count


def _next_month(day: date) -> date:
    return date(day.year + 1, 1, 1) if day.month == 12 else date(day.year, day.month + 1, 1)


def _join(values: Iterable[int]) -> str:
    """An APScheduler field expression; runs become ranges (each list item costs it a scan)."""
    runs: list[list[int]] = []
    for value in sorted(values):
        if runs and runs[-1][1] == value - 1:
            runs[-1][1] = value
        else:
            runs.append([value, value])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


_CRON_MODULE = "apscheduler.triggers.cron"


def _cron_trigger_class() -> Any:
    return import_extra(_CRON_MODULE, "schedule", "the schedule source").CronTrigger


def require_apscheduler() -> None:
    """Raise MissingExtraError now if APScheduler is not installed. It is found, not
    imported: only a cron schedule uses it, on its first evaluation, and importing it costs
    the daemon's start about 25 ms of CPU that a rate schedule does not need."""
    try:
        found = importlib.util.find_spec(_CRON_MODULE) is not None
    except ImportError:  # a parent package is missing
        found = False
    if not found:
        _cron_trigger_class()  # raises MissingExtraError, naming the extra


# --------------------------------------------------------------------------------------------
# Parsing


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()
    #: Value of names[0] (names are consecutive from there).
    names_from: int = 1
    wraps: bool = False


_MINUTE = _Field("minutes", 0, 59)
_HOUR = _Field("hours", 0, 23)
_DOM = _Field("day-of-month", 1, 31)
_MONTH = _Field("month", 1, 12, _MONTHS, 1)
_AWS_DOW = _Field("day-of-week", 1, 7, _DAYS, 1, wraps=True)
_CRON_DOW = _Field("day-of-week", 0, 7, _DAYS, 0, wraps=True)
_YEAR = _Field("year", MIN_YEAR, MAX_YEAR)


def _value(token: str, field: _Field) -> int:
    if token in field.names:
        return field.names.index(token) + field.names_from
    if not token.isdigit():
        allowed = f" or {field.names[0]}-{field.names[-1]}" if field.names else ""
        raise ScheduleError(
            f"{field.name}: {token!r} is not a number {field.low}-{field.high}{allowed}"
        )
    number = int(token)
    if not field.low <= number <= field.high:
        raise ScheduleError(f"{field.name}: {number} is out of range ({field.low}-{field.high})")
    return number


def _item(item: str, field: _Field) -> list[int]:
    base, slash, step_text = item.partition("/")
    step = 1
    if slash:
        if not step_text.isdigit() or int(step_text) < 1:
            raise ScheduleError(f"{field.name}: step in {item!r} must be a positive number")
        step = int(step_text)
    if base == "*":
        first, last = field.low, field.high
    elif "-" in base:
        a, _, b = base.partition("-")
        first, last = _value(a, field), _value(b, field)
    else:
        first = _value(base, field)
        last = field.high if slash else first
    if first <= last:
        span = list(range(first, last + 1))
    elif field.wraps:
        span = [*range(first, field.high + 1), *range(field.low, last + 1)]
    else:
        raise ScheduleError(f"{field.name}: range {base!r} runs backwards")
    return span[::step]


def _values(text: str, field: _Field) -> frozenset[int]:
    out: set[int] = set()
    for item in text.split(","):
        if not item:
            raise ScheduleError(f"{field.name}: empty item in {text!r}")
        out.update(_item(item, field))
    return frozenset(out)


# ---- day rules


def _last_day(year: int, month: int) -> int:
    return calendar.monthrange(year, month)[1]


def _weekday(year: int, month: int, day: int) -> int:
    """Monday=0 .. Sunday=6."""
    return calendar.weekday(year, month, day)


def _nearest_weekday(year: int, month: int, day: int) -> int | None:
    last = _last_day(year, month)
    if day > last:
        return None
    weekday = _weekday(year, month, day)
    if weekday == 5:  # Saturday: Friday before, or Monday after when the 1st
        return day + 2 if day == 1 else day - 1
    if weekday == 6:  # Sunday: Monday after, or Friday before when the last day
        return day - 2 if day == last else day + 1
    return day


def _rule_days(days: frozenset[int]) -> DayRule:
    def rule(year: int, month: int) -> frozenset[int]:
        last = _last_day(year, month)
        return frozenset(d for d in days if d <= last)

    return rule


def _rule_weekdays(weekdays: frozenset[int]) -> DayRule:
    """`weekdays` in Python numbering (Monday=0)."""

    def rule(year: int, month: int) -> frozenset[int]:
        first = _weekday(year, month, 1)
        last = _last_day(year, month)
        return frozenset(d for d in range(1, last + 1) if (first + d - 1) % 7 in weekdays)

    return rule


def _rule_last_day(year: int, month: int) -> frozenset[int]:
    return frozenset({_last_day(year, month)})


def _rule_last_weekday_of_month(year: int, month: int) -> frozenset[int]:
    last = _last_day(year, month)
    found = _nearest_weekday(year, month, last)
    return frozenset() if found is None else frozenset({found})


def _rule_nearest_weekday(day: int) -> DayRule:
    def rule(year: int, month: int) -> frozenset[int]:
        found = _nearest_weekday(year, month, day)
        return frozenset() if found is None else frozenset({found})

    return rule


def _rule_last_of(weekday: int) -> DayRule:
    def rule(year: int, month: int) -> frozenset[int]:
        last = _last_day(year, month)
        return frozenset({last - (_weekday(year, month, last) - weekday) % 7})

    return rule


def _rule_nth_of(weekday: int, nth: int) -> DayRule:
    def rule(year: int, month: int) -> frozenset[int]:
        day = 1 + (weekday - _weekday(year, month, 1)) % 7 + 7 * (nth - 1)
        return frozenset({day}) if day <= _last_day(year, month) else frozenset()

    return rule


def _aws_to_py(weekday: int) -> int:
    """AWS 1=SUN..7=SAT -> Python Monday=0."""
    return (weekday - 2) % 7


def _aws_dom(text: str) -> DayRule | None:
    if text == "?":
        return None
    if text == "L":
        return _rule_last_day
    if text == "LW":
        return _rule_last_weekday_of_month
    if (match := re.fullmatch(r"(\d+)W", text)) is not None:
        return _rule_nearest_weekday(_value(match.group(1), _DOM))
    if "L" in text or "W" in text:
        raise ScheduleError(
            "day-of-month: L, LW and nW stand alone (no lists or ranges), e.g. 'L' or '15W'"
        )
    return _rule_days(_values(text, _DOM))


def _aws_dow(text: str) -> DayRule | None:
    if text == "?":
        return None
    if text == "L":
        return _rule_weekdays(frozenset({_aws_to_py(7)}))
    if (match := re.fullmatch(r"(\w+?)L", text)) is not None:
        return _rule_last_of(_aws_to_py(_value(match.group(1), _AWS_DOW)))
    if (match := re.fullmatch(r"(\w+)#(\w+)", text)) is not None:
        nth = match.group(2)
        if nth not in ("1", "2", "3", "4", "5"):
            raise ScheduleError(f"day-of-week: {text!r}: the number after # must be 1-5")
        return _rule_nth_of(_aws_to_py(_value(match.group(1), _AWS_DOW)), int(nth))
    if "L" in text or "#" in text:
        raise ScheduleError(
            "day-of-week: dL and d#n stand alone (no lists or ranges), e.g. '6L' or '2#1'"
        )
    return _rule_weekdays(frozenset(_aws_to_py(v) for v in _values(text, _AWS_DOW)))


def _parse_aws_cron(body: str) -> CronFields:
    parts = body.upper().split()
    if len(parts) != 6:
        raise ScheduleError(
            f"cron() needs 6 fields (Minutes Hours Day-of-month Month Day-of-week Year), "
            f"got {len(parts)}"
        )
    minute, hour, dom_text, month, dow_text, year = parts
    if "?" in (minute, hour, month, year):
        raise ScheduleError("'?' is only allowed in day-of-month or day-of-week")
    dom, dow = _aws_dom(dom_text), _aws_dow(dow_text)
    if dom is not None and dow is not None:
        raise ScheduleError(
            "day-of-month and day-of-week cannot both be set: use '?' in one of them, "
            "e.g. cron(0 12 * * ? *) or cron(0 12 ? * MON-FRI *)"
        )
    days = dom or dow
    if days is None:
        raise ScheduleError("day-of-month and day-of-week cannot both be '?'")
    return CronFields(
        minutes=tuple(sorted(_values(minute, _MINUTE))),
        hours=tuple(sorted(_values(hour, _HOUR))),
        months=_values(month, _MONTH),
        years=tuple(sorted(_values(year, _YEAR))),
        days=days,
    )


def _parse_crontab(line: str) -> CronFields:
    parts = line.upper().split()
    if len(parts) != 5:
        raise ScheduleError(
            f"expected rate(...), cron(...) or a 5-field crontab line "
            f"(Minute Hour Day-of-month Month Day-of-week), got {len(parts)} fields"
        )
    minute, hour, dom_text, month, dow_text = parts
    if any(c in re.sub(r"[A-Z]{3}", "", line.upper()) for c in "?LW#"):
        raise ScheduleError("?, L, W and # are only supported in cron(...) expressions")
    by_date = _rule_days(_values(dom_text, _DOM))
    by_weekday = _rule_weekdays(frozenset((v - 1) % 7 for v in _values(dow_text, _CRON_DOW)))
    days: DayRule
    if dom_text.startswith("*") or dow_text.startswith("*"):

        def days(year: int, month: int) -> frozenset[int]:
            return by_date(year, month) & by_weekday(year, month)

    else:

        def days(year: int, month: int) -> frozenset[int]:
            return by_date(year, month) | by_weekday(year, month)

    return CronFields(
        minutes=tuple(sorted(_values(minute, _MINUTE))),
        hours=tuple(sorted(_values(hour, _HOUR))),
        months=_values(month, _MONTH),
        years=tuple(range(MIN_YEAR, MAX_YEAR + 1)),
        days=days,
    )


def _parse_rate(body: str) -> RateSchedule:
    match = re.fullmatch(r"\s*(\d+)\s+([a-z]+)\s*", body)
    if match is None:
        raise ScheduleError("rate() takes a positive number and a unit, e.g. rate(5 minutes)")
    value, unit = int(match.group(1)), match.group(2)
    singular = unit.removesuffix("s")
    units = dict(_RATE_UNITS)
    if os.environ.get(SECOND_RATES_ENV) == "1":
        units["second"] = 1
    if singular not in units:
        raise ScheduleError(f"rate(): unknown unit {unit!r} (use minute(s), hour(s) or day(s))")
    if value < 1:
        raise ScheduleError("rate(): the value must be a positive number")
    if value == 1 and unit != singular:
        raise ScheduleError(
            f"rate(): use the singular unit when the value is 1: rate(1 {singular})"
        )
    if value != 1 and unit == singular:
        raise ScheduleError(
            f"rate(): use the plural unit when the value is not 1: rate({value} {singular}s)"
        )
    return RateSchedule(f"rate({body.strip()})", value * units[singular])


def parse_schedule(expr: str, tz: str = "UTC") -> Schedule:
    """Parse a schedule expression; raises ScheduleError with a precise message."""
    zone = load_zone(tz)
    text = expr.strip()
    try:
        if text.startswith("rate(") and text.endswith(")"):
            return _parse_rate(text[5:-1])
        if text.startswith("cron(") and text.endswith(")"):
            return CronSchedule(text, _parse_aws_cron(text[5:-1]), zone)
        if text.startswith(("rate", "cron")):
            raise ScheduleError("expected rate(value unit) or cron(fields) with parentheses")
        line = _MACROS.get(text.lower(), text)
        if line.startswith("@"):
            raise ScheduleError(f"unknown macro {text!r} (use one of {', '.join(_MACROS)})")
        return CronSchedule(text, _parse_crontab(line), zone)
    except ScheduleError as exc:
        raise ScheduleError(f"invalid schedule expression {expr!r}: {exc}") from None
