"""The GPU trend query string: bounded points per series, PromQL that cannot be injected."""

from __future__ import annotations

import pytest

from chalicelib.errors import ValidationFailed
from chalicelib.services.gpu_trend import MAX_POINTS_PER_SERIES, METRICS, TrendQuery, parse_query, promql_string

UTIL, FB_USED = METRICS


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, TrendQuery(6 * 3600, 300, None)),
        ({"range": "30m", "step": "15"}, TrendQuery(1800, 15, None)),
        ({"range": "1d", "step": "60", "host": "gpu-host-1"}, TrendQuery(86_400, 60, "gpu-host-1")),
        ({"range": "2w", "step": "3600"}, TrendQuery(14 * 86_400, 3600, None)),
        ({"range": "10999s", "step": "1"}, TrendQuery(10_999, 1, None)),  # 11,000 points per series
    ],
)
def test_accepts_durations_and_whole_second_steps(params, expected):
    assert parse_query(params) == expected


@pytest.mark.parametrize(
    ("params", "path"),
    [
        ({"range": "6"}, "$query.range"),
        ({"range": "6y"}, "$query.range"),
        ({"range": "-1h"}, "$query.range"),
        ({"range": "0h"}, "$query.range"),
        ({"range": "32d"}, "$query.range"),
        ({"step": "0"}, "$query.step"),
        ({"step": "1.5"}, "$query.step"),
        ({"step": "86401"}, "$query.step"),
        ({"step": "abc"}, "$query.step"),
        ({"range": "11000s", "step": "1"}, "$query.step"),  # 11,001 points per series
        ({"host": 'x"} or vector(1) #'}, "$query.host"),
        ({"host": "a\\b"}, "$query.host"),
        ({"host": "a" * 129}, "$query.host"),
        ({"host": "gpu-1\n"}, "$query.host"),
        # given empty is given (the fuzzer's find: `?host=` answered every host)
        ({"host": ""}, "$query.host"),
        ({"range": ""}, "$query.range"),
        ({"step": ""}, "$query.step"),
    ],
)
def test_rejects_with_the_path_of_the_bad_parameter(params, path):
    with pytest.raises(ValidationFailed) as raised:
        parse_query(params)
    assert [d["path"] for d in raised.value.extra["details"]] == [path]


def test_reports_every_problem_at_once():
    with pytest.raises(ValidationFailed) as raised:
        parse_query({"range": "x", "step": "0", "host": "no spaces"})
    assert [d["path"] for d in raised.value.extra["details"]] == ["$query.range", "$query.step", "$query.host"]


def test_the_largest_window_stays_within_prometheus_points_limit():
    query = parse_query({"range": "31d", "step": "244"})
    assert query.range_seconds // query.step + 1 <= MAX_POINTS_PER_SERIES


def test_promql_aggregates_by_hostname_and_filters_one_host():
    assert TrendQuery(3600, 60, None).promql(UTIL) == "avg by (Hostname) (DCGM_FI_DEV_GPU_UTIL)"
    assert TrendQuery(3600, 60, "gpu-1").promql(FB_USED) == 'sum by (Hostname) (DCGM_FI_DEV_FB_USED{Hostname="gpu-1"})'


def test_promql_strings_escape_quotes_backslashes_and_newlines():
    assert promql_string('a"b\\c\nd') == 'a\\"b\\\\c\\nd'


def test_the_window_ends_now_and_holds_range_over_step_plus_one_points():
    start, end = TrendQuery(3600, 300, None).window(1_700_000_123.9)
    assert end == 1_700_000_123
    assert (end - start) // 300 + 1 == 13
