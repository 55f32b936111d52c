"""Usage reports on moto: `GET /v1/reports/usage` answers 303 to the file in S3; the figures
equal a recount of the allocation and task items; the monthly job builds last month once."""

from __future__ import annotations

import csv
import io
from urllib.parse import unquote, urlparse

import boto3
import pytest
from openpyxl import load_workbook
from ulid import ULID

from chalicelib import aws, clock, config
from chalicelib.services import reports, statistics
from chalicelib.services.usage import Month
from chalicelib.store import counters, inventory, tasks
from chalicelib.store.models import AllocationItem, TaskItem

ADMIN = ("admin",)


def admin(fleet, path):
    return fleet.user("GET", path, who="root", roles=ADMIN)


def recorded(node: str, user: str, start: float, end: float | None) -> None:
    """An allocation as allocate/release would have left it, at chosen times."""
    item = inventory.new_allocation(node, str(ULID()), user, clock.rfc3339(start))
    if end is not None:
        item.ended_at, item.ended_by = clock.rfc3339(end), "release"
        item.list_pk = f"ALLOCEND#{item.ended_at[:7]}"
    item.save()


def download(answer) -> bytes:
    """The file behind a report answer's presigned URL (bucket and key from its path)."""
    assert answer.status == 303, answer
    assert answer.headers["Location"] == answer.body["url"]
    url = urlparse(answer.body["url"])
    path = unquote(url.path).lstrip("/")
    bucket = config.reports_bucket()
    key = path if (url.hostname or "").startswith(f"{bucket}.") else path.removeprefix(f"{bucket}/")
    assert key == f"reports/usage/{answer.body['month']}.{answer.body['format']}"
    body: bytes = boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    return body


def recount(month: Month, now: float) -> dict[str, tuple[int, float, int]]:
    """Per user: (allocations, hours, tasks), from a scan of every item: another read path."""
    figures: dict[str, list[float]] = {}
    for item in AllocationItem.scan(AllocationItem.sk.startswith("ALLOC#")):
        start = max(clock.parse_rfc3339(item.started_at), month.start)
        end = min(clock.parse_rfc3339(item.ended_at) if item.ended_at else now, month.end, now)
        if end > start:
            row = figures.setdefault(item.user, [0, 0.0, 0])
            row[0] += 1
            row[1] += end - start
    for task in TaskItem.scan((TaskItem.sk == "META") & TaskItem.pk.startswith("TASK#")):
        if clock.rfc3339(month.start) <= task.created_at < clock.rfc3339(month.end):
            figures.setdefault(task.owner, [0, 0.0, 0])[2] += 1
    return {user: (int(a), round(s / 3600, 3), int(t)) for user, (a, s, t) in figures.items()}


def user_rows_of_csv(data: bytes) -> dict[str, tuple[int, float, int]]:
    rows = list(csv.DictReader(io.StringIO(data.decode())))
    return {r["user"]: (int(r["allocations"]), float(r["allocated_hours"]), int(r["tasks"]))
            for r in rows if r["kind"] == "user"}


def user_rows_of_xlsx(data: bytes) -> dict[str, tuple[int, float, int]]:
    sheet = load_workbook(io.BytesIO(data))["Usage"]
    header, *rows = [list(r) for r in sheet.iter_rows(values_only=True)]
    named = [dict(zip(header, r, strict=True)) for r in rows]
    return {r["user"]: (r["allocations"], r["allocated_hours"], r["tasks"]) for r in named if r["kind"] == "user"}


class TestLastMonth:
    @pytest.fixture
    def last_month(self, fleet):
        """Allocations around, across and inside last month, and one long before it."""
        month = Month.of(clock.now_epoch()).previous()
        hour = 3600
        recorded("n1", "bob", month.start - 2 * hour, month.start + 3 * hour)        # 3 h counted
        recorded("n2", "bob", month.start + 10 * hour, month.start + 15.5 * hour)    # 5.5 h
        recorded("n1", "carol", month.end - 1 * hour, None)                          # open: 1 h
        recorded("n3", "dave", month.start - 40 * 24 * hour, month.end + 2 * hour)   # the whole month
        recorded("n4", "erin", month.start - 60 * 24 * hour, month.start - 50 * 24 * hour)  # before
        return month

    def test_the_csv_and_xlsx_equal_a_recount_of_the_allocations(self, fleet, last_month):
        # WHEN an admin asks for last month's report in both formats
        as_csv = admin(fleet, f"/v1/reports/usage?month={last_month}&format=csv")
        as_xlsx = admin(fleet, f"/v1/reports/usage?month={last_month}&format=xlsx")
        # THEN both answer with a link to a file whose figures equal the recount
        expected = recount(last_month, clock.now_epoch())
        assert expected["bob"] == (2, 8.5, 0)
        assert expected["carol"] == (1, 1.0, 0)
        assert "erin" not in expected
        assert expected["dave"][1] == round((last_month.end - last_month.start) / 3600, 3)
        assert user_rows_of_csv(download(as_csv)) == expected
        assert user_rows_of_xlsx(download(as_xlsx)) == expected
        assert as_csv.body["complete"] is True
        assert as_csv.body["filename"] == f"fleetrun-usage-{last_month}.csv"

    def test_a_finished_month_is_built_once_and_reused(self, fleet, last_month):
        first = admin(fleet, f"/v1/reports/usage?month={last_month}")
        # a late allocation record cannot change a final report: it is not rebuilt
        recorded("n9", "zoe", last_month.start + 3600, last_month.start + 7200)
        second = admin(fleet, f"/v1/reports/usage?month={last_month}")
        assert second.body["as_of"] == first.body["as_of"]
        assert "zoe" not in user_rows_of_csv(download(second))

    def test_the_monthly_job_builds_the_previous_month_once(self, fleet, last_month):
        stored = reports.build_previous_month()
        assert sorted(s.fmt for s in stored) == ["csv", "xlsx"]
        assert all(s.month == last_month and s.complete for s in stored)
        assert reports.build_previous_month() == []  # already final


class TestThisMonth:
    def test_open_allocations_and_tasks_count_up_to_the_report_time(self, fleet):
        # GIVEN an allocation made through the API and tasks of two users this month
        fleet.register("cur-1")
        assert fleet.user("POST", "/v1/nodes/cur-1/allocate", {"user": "bob"}, who="root", roles=ADMIN).status == 200
        for who in ("alice", "alice", "bob"):
            assert fleet.submit({"type": "shell", "target_nodes": ["cur-1"], "parameters": {"command": ["true"]}},
                                who=who).status == 202
        fleet.settle()  # the stream counts each task in its owner's month (seconds on AWS)
        month = Month.of(clock.now_epoch())
        # WHEN the report of this month is asked for twice
        first = admin(fleet, f"/v1/reports/usage?month={month}")
        second = admin(fleet, f"/v1/reports/usage?month={month}")
        # THEN it is rebuilt each time (not final) and counts the tasks per user
        assert first.body["complete"] is False
        assert second.body["as_of"] >= first.body["as_of"]
        figures = user_rows_of_csv(download(second))
        assert figures["alice"] == (0, 0.0, 2)
        assert figures["bob"][0] == 1
        assert figures["bob"][2] == 1
        assert figures == {u: (a, figures[u][1], t) for u, (a, _, t) in recount(month, clock.now_epoch()).items()}


def submitted(fleet, owners: list[str]) -> None:
    for who in owners:
        answer = fleet.submit({"type": "shell", "target_nodes": ["cur-1"], "parameters": {"command": ["true"]}},
                              who=who)
        assert answer.status == 202, answer
    fleet.settle()


class DynamoRequests:
    """The DynamoDB requests the service's boto3 client makes, by operation."""

    def __init__(self) -> None:
        self.made: list[str] = []

    def __call__(self, model, **_) -> None:
        self.made.append(model.name)


@pytest.fixture
def dynamo_requests():
    requests = DynamoRequests()
    events = aws.client("dynamodb").meta.events
    events.register("before-call.dynamodb", requests)
    yield requests
    events.unregister("before-call.dynamodb", requests)


class TestTasksPerUser:
    """A report counts each user's tasks from the month scopes: a fixed number of reads per
    user, however many tasks the month holds (services/usage.py)."""

    @pytest.fixture(autouse=True)
    def node(self, fleet):
        fleet.register("cur-1")

    def test_tasks_are_counted_without_reading_any_task(self, fleet, monkeypatch, dynamo_requests):
        # GIVEN tasks of three users this month, one whose name holds the key separators
        submitted(fleet, ["alice", "alice", "bob", "carol#1|x", "carol#1|x", "carol#1|x"])
        month = Month.of(clock.now_epoch())

        def no_task_reads(*args, **kwargs):
            raise AssertionError("the report read the tasks themselves")

        monkeypatch.setattr(tasks, "iter_all", no_task_reads)
        dynamo_requests.made.clear()
        # WHEN the report of this month is built, then again after many more tasks of the same users
        first = user_rows_of_csv(download(admin(fleet, f"/v1/reports/usage?month={month}&format=csv")))
        reads_then = list(dynamo_requests.made)
        submitted(fleet, ["alice", "bob", "carol#1|x"] * 10)
        dynamo_requests.made.clear()
        second = admin(fleet, f"/v1/reports/usage?month={month}&format=csv")
        # THEN each equals a recount of the task items, and the second read no more than the first
        assert {u: t for u, (_, _, t) in first.items()} == {"alice": 2, "bob": 1, "carol#1|x": 3}
        assert user_rows_of_csv(download(second)) == recount(month, clock.now_epoch())
        assert sorted(dynamo_requests.made) == sorted(reads_then), reads_then

    def test_a_month_before_the_counts_began_is_read_from_its_tasks(self, fleet):
        # GIVEN tasks of this month the month scopes do not hold, as after an upgrade this month:
        # the counts begin next month
        submitted(fleet, ["alice", "bob", "bob"])
        month = Month.of(clock.now_epoch())
        ddb = boto3.client("dynamodb")
        for item in ddb.scan(TableName=config.table_name())["Items"]:
            if "|month:" in item["pk"]["S"] or item["pk"]["S"].startswith(f"USAGE#{month}"):
                ddb.delete_item(TableName=config.table_name(), Key={"pk": item["pk"], "sk": item["sk"]})
        ddb.put_item(TableName=config.table_name(), Item=counters.usage_since_item(str(month.next())))
        # WHEN its report is built
        answer = admin(fleet, f"/v1/reports/usage?month={month}&format=csv")
        # THEN it counts every task, read from the tasks themselves
        assert {u: t for u, (_, _, t) in user_rows_of_csv(download(answer)).items()} == {"alice": 1, "bob": 2}

    def test_the_first_count_after_an_upgrade_says_the_counts_begin_next_month(self, fleet, monkeypatch):
        # GIVEN a table from before the month scopes (no note of when they began)
        ddb = boto3.client("dynamodb")
        ddb.delete_item(TableName=config.table_name(), Key=counters.USAGE_SINCE_KEY)
        monkeypatch.setattr(counters, "_since_noted", False)
        assert counters.usage_counted_since() is None
        # WHEN the stream counts a task
        submitted(fleet, ["alice"])
        # THEN the counts are said to be whole from next month on
        assert counters.usage_counted_since() == str(Month.of(clock.now_epoch()).next())

    def test_the_reconcile_restores_a_lost_month_count_and_its_user(self, fleet):
        # GIVEN bob's month count and listing lost (a stream record that never came)
        submitted(fleet, ["alice", "bob", "bob"])
        month = Month.of(clock.now_epoch())
        ddb = boto3.client("dynamodb")
        for item in ddb.scan(TableName=config.table_name())["Items"]:
            pk = item["pk"]["S"]
            if pk == f"STATS#{counters.month_scope('bob', str(month))}" or (
                    pk == f"USAGE#{month}" and item["sk"]["S"] == "bob"):
                ddb.delete_item(TableName=config.table_name(), Key={"pk": item["pk"], "sk": item["sk"]})
        answer = admin(fleet, f"/v1/reports/usage?month={month}&format=csv")
        assert "bob" not in user_rows_of_csv(download(answer))
        # WHEN the nightly reconcile runs
        drift = statistics.reconcile()
        # THEN it repaired bob's count, and the report counts his tasks again
        assert drift[counters.month_scope("bob", str(month))] == {"created": "2"}
        answer = admin(fleet, f"/v1/reports/usage?month={month}&format=csv")
        assert {u: t for u, (_, _, t) in user_rows_of_csv(download(answer)).items()} == {"alice": 1, "bob": 2}


class TestAMonthLongPast:
    def test_every_allocation_that_overlaps_a_month_decades_back_is_counted(self, fleet):
        # GIVEN allocations from January 1970: one that ended in 1971, one still open, one that
        # ended before the month began, and one that ended this month
        month = Month(1970, 1)
        day = 86400
        recorded("old-1", "bob", month.start + day, month.start + 400 * day)
        recorded("old-2", "carol", month.start + 2 * day, None)
        recorded("old-3", "dave", month.start - 10 * day, month.start - day)
        recorded("old-4", "erin", month.start + 3 * day, clock.now_epoch() - 60)
        # WHEN its report is asked for (its months' partitions: one per month since, read concurrently)
        answer = admin(fleet, f"/v1/reports/usage?month={month}&format=csv")
        # THEN it counts the three that overlap it, and equals a recount
        figures = user_rows_of_csv(download(answer))
        assert sorted(figures) == ["bob", "carol", "erin"]
        assert figures == recount(month, clock.now_epoch())
        assert answer.body["complete"] is True


class TestAnswers:
    def test_an_empty_month_gives_a_valid_empty_report(self, fleet):
        answer = admin(fleet, "/v1/reports/usage?month=2020-02&format=xlsx")
        book = load_workbook(io.BytesIO(download(answer)))
        assert [list(r) for r in book["Usage"].iter_rows(values_only=True)] == [
            list(reports.COLUMNS), ["2020-02", "total", None, None, 0, 0.0, 0],
        ]
        as_csv = admin(fleet, "/v1/reports/usage?month=2020-02&format=csv")
        assert download(as_csv).decode().splitlines() == [",".join(reports.COLUMNS), "2020-02,total,,,0,0.0,0"]

    @pytest.mark.parametrize("query", ["", "?month=2026-13", "?month=2999-01", "?month=2026-01&format=pdf"])
    def test_bad_queries_are_validation_errors(self, fleet, query):
        answer = admin(fleet, f"/v1/reports/usage{query}")
        assert answer.status == 400, answer
        assert answer.body["error"]["code"] == "validation_error"

    def test_only_admins_get_reports(self, fleet):
        assert fleet.user("GET", "/v1/reports/usage?month=2026-01", who="alice").status == 403

    def test_reports_are_rate_limited_like_writes(self, fleet, monkeypatch):
        monkeypatch.setenv("FLEETRUN_RATE_LIMIT", "2")
        config.reset()
        statuses = [admin(fleet, "/v1/reports/usage?month=2020-03").status for _ in range(3)]
        assert statuses[:2] == [303, 303]
        limited = admin(fleet, "/v1/reports/usage?month=2020-03")
        assert limited.status == 429
        assert int(limited.headers["Retry-After"]) >= 1



def test_a_container_lists_an_owner_of_a_month_once_however_many_batches_create_tasks(fleet):
    # GIVEN alice's first task of the month counted (her listing written)
    fleet.register("cur-1")
    submitted(fleet, ["alice"])
    month = Month.of(clock.now_epoch())
    listings: list[dict] = []

    def record(params, **_):
        if params.get("Key", {}).get("pk", {}).get("S", "").startswith("USAGE#"):
            listings.append(params)

    events = aws.client("dynamodb").meta.events
    events.register("before-parameter-build.dynamodb.UpdateItem", record)
    try:
        # WHEN more of her tasks are counted, one stream batch each
        for _ in range(3):
            submitted(fleet, ["alice"])
    finally:
        events.unregister("before-parameter-build.dynamodb.UpdateItem", record)

    # THEN her listing was not written again, and the report counts all four
    assert listings == []
    answer = admin(fleet, f"/v1/reports/usage?month={month}&format=csv")
    assert user_rows_of_csv(download(answer))["alice"][2] == 4
