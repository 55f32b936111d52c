"""EventBridge Scheduler expressions: strict parsing and the firing times the local scheduler uses."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from chalicelib.domain.schedule_expressions import Cron, Rate, next_after, parse
from chalicelib.errors import ValidationFailed

NOW = datetime(2026, 11, 22, 21, 17, 42, tzinfo=UTC)  # a Sunday


def at(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("expression", "seconds"),
    [("rate(1 minute)", 60), ("rate(15 minutes)", 900), ("rate(1 hour)", 3600), ("rate(2 hours)", 7200),
     ("rate(1 day)", 86400), ("rate(7 days)", 604800)],
)
def test_rates_parse_to_their_interval(expression, seconds):
    assert parse(expression) == Rate(seconds)


def test_a_rate_fires_at_its_start_minute_and_every_interval_after():
    rate = parse("rate(20 minutes)")
    fired = list(rate.firings(NOW, NOW - timedelta(minutes=1), NOW + timedelta(hours=1)))
    assert fired == [at(2026, 11, 22, 21, 17), at(2026, 11, 22, 21, 37), at(2026, 11, 22, 21, 57),
                     at(2026, 11, 22, 22, 17)]
    # the lower bound is exclusive, the upper inclusive
    assert list(rate.firings(NOW, at(2026, 11, 22, 21, 37), at(2026, 11, 22, 21, 57))) == [at(2026, 11, 22, 21, 57)]


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("cron(0 2 * * ? *)", at(2026, 11, 23, 2, 0)),
        ("cron(0/15 * * * ? *)", at(2026, 11, 22, 21, 30)),
        ("cron(5 8-10 ? * MON-FRI *)", at(2026, 11, 23, 8, 5)),
        ("cron(0 9 ? * 2#1 *)", at(2026, 12, 7, 9, 0)),  # first Monday of December
        ("cron(30 23 L * ? *)", at(2026, 11, 30, 23, 30)),
        ("cron(0 0 1 JAN,JUL ? 2027)", at(2027, 1, 1, 0, 0)),
        ("cron(0 12 ? * 1 *)", at(2026, 11, 29, 12, 0)),  # 1 is Sunday; today's noon has passed
        ("cron(0 0 29 2 ? *)", at(2028, 2, 29, 0, 0)),
    ],
)
def test_cron_next_firing(expression, expected):
    assert isinstance(parse(expression), Cron)
    assert next_after(parse(expression), NOW, NOW) == expected


def test_a_cron_that_can_never_fire_has_no_next_firing():
    assert next_after(parse("cron(0 0 31 2 ? *)"), NOW, NOW) is None
    assert next_after(parse("cron(0 0 1 1 ? 2020)"), NOW, NOW) is None


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("rate(1 minutes)", 'use "1 minute"'),
        ("rate(3 day)", 'use "3 days"'),
        ("rate(-1 minutes)", "positive integer"),
        ("rate(1.5 hours)", "positive integer"),
        ("rate( 1 hour)", "positive integer"),
        ("rate(5 seconds)", "minute(s), hour(s) or day(s)"),
        ("cron(0 2 * * ?)", "six fields"),
        ("cron(0  2 * * ? *)", "six fields"),
        ("cron(0 2 * * * *)", "exactly one of"),
        ("cron(0 2 ? * ? *)", "exactly one of"),
        ("cron(60 2 * * ? *)", "minutes: 60 is outside 0-59"),
        ("cron(0 2 32 * ? *)", "day-of-month: 32 is outside 1-31"),
        ("cron(0 2 * 13 ? *)", "month: 13 is outside 1-12"),
        ("cron(0 2 * FOO ? *)", "month: 'FOO' is not a number"),
        ("cron(0 2 ? * 0 *)", "day-of-week: 0 is outside 1-7"),
        ("cron(0 2 * * ? 1969)", "year: 1969 is outside 1970-2199"),
        ("cron(0 2 15W * ? *)", "not supported"),
        ("cron(0 2 ? * 6L *)", "not supported"),
        ("cron(0 2 ? * 2#6 *)", "n from 1 to 5"),
        ("cron(0/0 2 * * ? *)", "step"),
        ("cron(10-5 2 * * ? *)", "runs backwards"),
        ("at(2026-12-01T00:00:00)", "one-time"),
        ("RATE(1 hour)", "must be"),
        (" rate(1 hour)", "must be"),
        ("rate(1 hour)" + " " * 300, "at most 256"),
    ],
)
def test_invalid_expressions_are_rejected_with_a_reason_at_the_expression_path(expression, reason):
    with pytest.raises(ValidationFailed) as raised:
        parse(expression)
    [detail] = raised.value.extra["details"]
    assert detail["path"] == "$.expression"
    assert reason in detail["message"]
