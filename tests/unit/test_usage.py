"""Usage figures: months, clipping to the month and to the report time, totals, the files."""

from __future__ import annotations

import csv
import io

import pytest
from openpyxl import load_workbook

from chalicelib import clock
from chalicelib.errors import ValidationFailed
from chalicelib.services import reports
from chalicelib.services.usage import Month, aggregate, clip

NOV = Month(2026, 11)
NOW = clock.parse_rfc3339("2026-12-05T00:00:00.000Z")


def at(text: str) -> float:
    return clock.parse_rfc3339(text)


@pytest.mark.parametrize(("text", "month"), [
    ("2026-11", NOV), ("2027-01", Month(2027, 1)), ("1999-12", Month(1999, 12)),
])
def test_a_month_parses_from_yyyy_mm(text, month):
    assert Month.parse(text) == month
    assert str(month) == text


@pytest.mark.parametrize("text", ["2026-13", "2026-00", "26-11", "2026-1", "", "2026-11-01", "november"])
def test_anything_else_is_a_validation_error(text):
    with pytest.raises(ValidationFailed):
        Month.parse(text)


@pytest.mark.parametrize("text", ["0000-01", "0001-01", "1969-12"])
def test_a_month_before_1970_is_a_validation_error_not_a_crash(text):
    with pytest.raises(ValidationFailed, match="1970-9999") as caught:
        Month.parse(text)
    assert caught.value.extra["details"][0]["path"] == "$query.month"
    assert Month.parse("1970-01") == Month(1970, 1)


def test_months_know_their_bounds_and_neighbours():
    assert NOV.start == at("2026-11-01T00:00:00.000Z")
    assert NOV.end == at("2026-12-01T00:00:00.000Z")
    assert Month(2026, 12).next() == Month(2027, 1)
    assert Month(2027, 1).previous() == Month(2026, 12)
    assert [str(m) for m in Month(2026, 11).until(Month(2027, 2))] == ["2026-11", "2026-12", "2027-01", "2027-02"]


@pytest.mark.parametrize(("start", "end", "now", "hours"), [
    ("2026-10-31T22:00:00.000Z", "2026-11-01T03:00:00.000Z", NOW, 3.0),    # begins before the month
    ("2026-11-30T20:00:00.000Z", "2026-12-01T02:00:00.000Z", NOW, 4.0),    # ends after it
    ("2026-10-01T00:00:00.000Z", "2026-12-02T00:00:00.000Z", NOW, 720.0),  # spans it
    ("2026-11-30T23:00:00.000Z", None, NOW, 1.0),                          # open: up to month end
    ("2026-11-20T00:00:00.000Z", None, at("2026-11-20T06:00:00.000Z"), 6.0),  # open: up to the report time
    ("2026-11-10T00:00:00.000Z", "2026-11-10T01:30:00.000Z", NOW, 1.5),    # inside
])
def test_allocation_time_is_clipped_to_the_month_and_the_report_time(start, end, now, hours):
    clipped = clip(NOV, now, "a", "bob", "n1", start, end)
    assert clipped is not None
    assert clipped.seconds == hours * 3600


@pytest.mark.parametrize(("start", "end"), [
    ("2026-10-01T00:00:00.000Z", "2026-11-01T00:00:00.000Z"),  # ends as the month begins
    ("2026-12-01T00:00:00.000Z", None),                       # begins as it ends
])
def test_allocations_outside_the_month_do_not_count(start, end):
    assert clip(NOV, NOW, "a", "bob", "n1", start, end) is None


def a_report():
    allocations = [
        clip(NOV, NOW, "a1", "bob", "n1", "2026-11-01T00:00:00.000Z", "2026-11-01T02:00:00.000Z"),
        clip(NOV, NOW, "a2", "bob", "n1", "2026-11-02T00:00:00.000Z", "2026-11-02T01:00:00.000Z"),
        clip(NOV, NOW, "a3", "bob", "n2", "2026-11-03T00:00:00.000Z", "2026-11-03T00:30:00.000Z"),
        clip(NOV, NOW, "a4", "carol", "n1", "2026-11-30T23:00:00.000Z", None),
    ]
    return aggregate(NOV, NOW, [a for a in allocations if a], {"bob": 1, "dave": 3, "zed": 0})


def test_figures_add_up_per_user_and_node_per_user_and_in_total():
    report = a_report()
    assert {k: (f.allocations, f.seconds / 3600) for k, f in report.by_user_node.items()} == {
        ("bob", "n1"): (2, 3.0), ("bob", "n2"): (1, 0.5), ("carol", "n1"): (1, 1.0),
    }
    assert {u: (f.allocations, f.seconds / 3600, f.tasks) for u, f in report.by_user.items()} == {
        "bob": (3, 3.5, 1), "carol": (1, 1.0, 0), "dave": (0, 0.0, 3),
    }
    assert (report.total.allocations, report.total.seconds / 3600, report.total.tasks) == (4, 4.5, 4)
    assert report.complete


def test_the_csv_and_the_xlsx_hold_the_same_table():
    report = a_report()
    parsed = list(csv.DictReader(io.StringIO(reports.render_csv(report).decode())))
    assert [(r["kind"], r["user"], r["node"], r["allocated_hours"], r["tasks"]) for r in parsed] == [
        ("node", "bob", "n1", "3.0", ""), ("node", "bob", "n2", "0.5", ""), ("node", "carol", "n1", "1.0", ""),
        ("user", "bob", "", "3.5", "1"), ("user", "carol", "", "1.0", "0"), ("user", "dave", "", "0.0", "3"),
        ("total", "", "", "4.5", "4"),
    ]
    sheet = load_workbook(io.BytesIO(reports.render_xlsx(report)))["Usage"]
    values = [list(row) for row in sheet.iter_rows(values_only=True)]
    assert tuple(values[0]) == reports.COLUMNS
    assert values[1:] == reports.rows(report)


def test_an_empty_month_is_a_valid_report_with_zero_totals():
    report = aggregate(NOV, NOW, [], {})
    assert list(csv.reader(io.StringIO(reports.render_csv(report).decode()))) == [
        list(reports.COLUMNS), ["2026-11", "total", "", "", "0", "0.0", "0"],
    ]
    book = load_workbook(io.BytesIO(reports.render_xlsx(report)))
    assert [list(r) for r in book["Usage"].iter_rows(values_only=True)][1:] == [
        ["2026-11", "total", None, None, 0, 0.0, 0],
    ]
    assert book.sheetnames == ["Usage", "Allocations", "About"]
