"""EventBridge Scheduler expressions: `rate(value unit)` and six-field `cron(...)`, evaluated in UTC.

`parse` checks an expression as strictly as EventBridge Scheduler does (so `POST /v1/schedules`
answers 400 rather than the AWS call failing later) and returns an object that lists its firing
times; the local runtime fires schedules with the same evaluation.

Cron fields: minutes hours day-of-month month day-of-week year. Supported: numbers, names
(`JAN`, `MON`), `*`, ranges `a-b`, steps `*/n`, `a/n`, `a-b/n`, lists `a,b`; `?` in exactly one
of day-of-month and day-of-week; `L` (last day) in day-of-month and `d#n` (n-th weekday of the
month) in day-of-week. Day-of-week runs 1-7 from Sunday, as in AWS. Not supported: `W` and
`<d>L` (rejected with a clear message).
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from chalicelib.errors import ValidationFailed

PATH: Final = "$.expression"
MAX_LENGTH: Final = 256
#: how far ahead `next_after` looks before deciding an expression never fires again
_HORIZON_DAYS: Final = 5 * 366
_UNITS: Final = {"minute": 60, "hour": 3600, "day": 86400}
_MONTHS: Final = {name: i for i, name in enumerate(
    ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"), start=1)}
_WEEKDAYS: Final = {"SUN": 1, "MON": 2, "TUE": 3, "WED": 4, "THU": 5, "FRI": 6, "SAT": 7}


def _invalid(message: str) -> ValidationFailed:
    return ValidationFailed(f"invalid schedule expression: {message}", [{"path": PATH, "message": message}])


@dataclass(frozen=True)
class Rate:
    """Every `seconds`, from the schedule's start (the first firing is at the start)."""

    seconds: int

    def firings(self, start: datetime, after: datetime, until: datetime) -> Iterator[datetime]:
        """Firing times in (after, until] of a schedule that started at `start`."""
        anchor = _minute(start)
        k = 0 if after < anchor else int((after - anchor).total_seconds() // self.seconds) + 1
        while (at := anchor + timedelta(seconds=k * self.seconds)) <= until:
            yield at
            k += 1


@dataclass(frozen=True)
class Cron:
    minutes: frozenset[int]
    hours: frozenset[int]
    #: None when the field is `?`
    days: frozenset[int] | None
    last_day: bool
    months: frozenset[int]
    #: 1 (Sunday) to 7; None when the field is `?`
    weekdays: frozenset[int] | None
    #: (weekday, n) for `d#n`
    nth_weekday: tuple[int, int] | None
    years: frozenset[int]

    def firings(self, start: datetime, after: datetime, until: datetime) -> Iterator[datetime]:
        """Firing times in (after, until]; `start` only matters for rates."""
        day = after.date()
        while day <= until.date():
            if self._matches(day.year, day.month, day.day):
                for hour in sorted(self.hours):
                    for minute in sorted(self.minutes):
                        at = datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC)
                        if after < at <= until:
                            yield at
            day += timedelta(days=1)

    def _matches(self, year: int, month: int, day: int) -> bool:
        if year not in self.years or month not in self.months:
            return False
        if self.days is not None or self.last_day:
            last = calendar.monthrange(year, month)[1]
            return (self.last_day and day == last) or (self.days is not None and day in self.days)
        weekday = (calendar.weekday(year, month, day) + 1) % 7 + 1  # Monday=0 -> 2, Sunday=6 -> 1
        if self.nth_weekday is not None:
            wanted, n = self.nth_weekday
            return weekday == wanted and (day - 1) // 7 + 1 == n
        return self.weekdays is not None and weekday in self.weekdays


Expression = Rate | Cron


def parse(expression: str) -> Expression:
    """The schedule an expression describes. Raises ValidationFailed (path `$.expression`)."""
    if len(expression) > MAX_LENGTH:
        raise _invalid(f"must be at most {MAX_LENGTH} characters")
    match = re.fullmatch(r"(rate|cron)\((.*)\)", expression)
    if match is None:
        raise _invalid('must be "rate(<value> <unit>)" or "cron(<minutes> <hours> <day-of-month> <month> '
                       '<day-of-week> <year>)"; one-time "at(...)" schedules are not supported')
    kind, inner = match.groups()
    return _rate(inner) if kind == "rate" else _cron(inner)


def next_after(expression: Expression, start: datetime, after: datetime) -> datetime | None:
    """The first firing after `after`, or None when there is none in the next five years."""
    return next(iter(expression.firings(start, after, after + timedelta(days=_HORIZON_DAYS))), None)


def _minute(at: datetime) -> datetime:
    return at.replace(second=0, microsecond=0)


def _rate(inner: str) -> Rate:
    match = re.fullmatch(r"([1-9][0-9]{0,5}) ([a-z]+)", inner)
    if match is None:
        raise _invalid('rate must be "rate(<positive integer> <unit>)", e.g. "rate(5 minutes)"')
    value, unit = int(match.group(1)), match.group(2)
    singular = unit.removesuffix("s")
    if singular not in _UNITS:
        raise _invalid("the rate unit must be minute(s), hour(s) or day(s)")
    if (value == 1) != (unit == singular):
        raise _invalid(f'use "{value} {singular if value == 1 else singular + "s"}": the unit is singular '
                       "for 1 and plural otherwise")
    return Rate(value * _UNITS[singular])


def _cron(inner: str) -> Cron:
    fields = inner.split(" ")
    if len(fields) != 6 or any(not f for f in fields):
        raise _invalid("cron needs six fields separated by single spaces: minutes hours day-of-month month "
                       'day-of-week year, e.g. "cron(0 2 * * ? *)"')
    minutes, hours, dom, month, dow, year = fields
    if (dom == "?") == (dow == "?"):
        raise _invalid("exactly one of day-of-month and day-of-week must be ?")
    last_day = dom == "L"
    nth = _nth_weekday(dow)
    return Cron(
        minutes=_field(minutes, "minutes", 0, 59),
        hours=_field(hours, "hours", 0, 23),
        days=None if dom in ("?", "L") else _field(dom, "day-of-month", 1, 31),
        last_day=last_day,
        months=_field(month, "month", 1, 12, _MONTHS),
        weekdays=None if dow == "?" or nth is not None else _field(dow, "day-of-week", 1, 7, _WEEKDAYS),
        nth_weekday=nth,
        years=_field(year, "year", 1970, 2199),
    )


def _nth_weekday(dow: str) -> tuple[int, int] | None:
    if "#" not in dow:
        return None
    match = re.fullmatch(r"([1-7]|[A-Z]{3})#([1-5])", dow)
    if match is None or (not match.group(1).isdigit() and match.group(1) not in _WEEKDAYS):
        raise _invalid("day-of-week d#n needs a weekday (1-7 or SUN-SAT) and n from 1 to 5, e.g. 2#1")
    day = match.group(1)
    return (int(day) if day.isdigit() else _WEEKDAYS[day]), int(match.group(2))


def _field(text: str, name: str, low: int, high: int, names: dict[str, int] | None = None) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        values |= _part(part, name, low, high, names or {})
    return frozenset(values)


def _part(part: str, name: str, low: int, high: int, names: dict[str, int]) -> set[int]:
    # L and W standing alone or after a number (15W, 6L, LW), not inside a name such as JUL
    if re.search(r"[?#]|(?<![A-Z])[LW](?![A-Z])|^LW$", part):
        raise _invalid(f"{name}: {part!r} is not supported here (L only as the whole day-of-month, "
                       "d#n only in day-of-week, ? only in day-of-month or day-of-week, W never)")
    body, _, step_text = part.partition("/")
    step = 1
    if step_text:
        if not step_text.isdigit() or int(step_text) < 1:
            raise _invalid(f"{name}: the step after / must be a positive integer")
        step = int(step_text)
    if body == "*":
        first, last = low, high
    else:
        first_text, dash, last_text = body.partition("-")
        first = _value(first_text, name, low, high, names)
        last = _value(last_text, name, low, high, names) if dash else (high if step_text else first)
        if first > last:
            raise _invalid(f"{name}: the range {body} runs backwards")
    return set(range(first, last + 1, step))


def _value(text: str, name: str, low: int, high: int, names: dict[str, int]) -> int:
    if text in names:
        return names[text]
    if not text.isdigit():
        choices = f" or {min(names, key=names.__getitem__)}-{max(names, key=names.__getitem__)}" if names else ""
        raise _invalid(f"{name}: {text!r} is not a number from {low} to {high}{choices}")
    value = int(text)
    if not low <= value <= high:
        raise _invalid(f"{name}: {value} is outside {low}-{high}")
    return value
