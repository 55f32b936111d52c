"""Pure parts of the hourly statistics: buckets, hours, figures."""

from __future__ import annotations

from decimal import Decimal

import pytest

from chalicelib.domain.statuses import TASK_TERMINAL
from chalicelib.errors import ValidationFailed
from chalicelib.services import timeseries
from chalicelib.store import counters


def test_the_terminal_order_covers_every_terminal_status():
    assert set(timeseries.TERMINAL_ORDER) == TASK_TERMINAL


def test_an_hour_is_the_first_13_characters_of_a_timestamp():
    assert counters.hour_of("2026-11-22T18:07:19.384Z") == "2026-11-22T18"
    assert counters.hour_scope("owner:alice", "2026-11-22T18") == "owner:alice|hour:2026-11-22T18"


def test_hours_end_with_the_current_one_and_cross_midnight():
    # 2026-11-23T01:30:00Z
    now = 1795397400.0
    assert timeseries.hours_ending_now(3, now) == ["2026-11-22T23", "2026-11-23T00", "2026-11-23T01"]


@pytest.mark.parametrize(("raw", "hours"), [(None, 24), ("1", 1), ("168", 168)])
def test_hours_parameter(raw, hours):
    assert timeseries.parse_hours(raw) == hours


@pytest.mark.parametrize("raw", ["0", "169", "abc", "1e2", " 3", ""])
def test_bad_hours_parameter(raw):
    with pytest.raises(ValidationFailed):
        timeseries.parse_hours(raw)


def test_a_bucket_computes_success_rate_over_finished_tasks_only():
    totals = {"st_completed": Decimal(3), "st_failed": Decimal(1), "st_cancelled": Decimal(5),
              "dur_sum": Decimal("10.5"), "dur_n": Decimal(4)}
    bucket = timeseries.bucket("2026-11-22T18", totals)
    assert bucket == {
        "hour": "2026-11-22T18:00:00Z",
        "by_status": {"completed": 3, "partial_failure": 0, "failed": 1, "cancelled": 5, "discarded": 0},
        "finished": 4, "success_rate": 75.0, "avg_duration_seconds": 2.62,
    }


def test_an_empty_bucket_has_no_rate_nor_duration():
    bucket = timeseries.bucket("2026-11-22T18", {})
    assert bucket["finished"] == 0
    assert bucket["success_rate"] is None
    assert bucket["avg_duration_seconds"] is None
