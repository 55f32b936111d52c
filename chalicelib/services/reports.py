"""Usage report files (CSV and XLSX) in S3: built by the monthly job or on demand, handed out
as short-lived presigned URLs.

A month that has ended is final (allocations are only ever ended in the present, tasks are
counted by creation), so its files are built once and reused. The current month is rebuilt
on every request, as of that moment.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Any, Final

from botocore.exceptions import ClientError

from chalicelib import aws, clock, config
from chalicelib.errors import ValidationFailed
from chalicelib.observability import logger
from chalicelib.services.usage import Month, UsageReport, collect, hours

CONTENT_TYPES: Final = {
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}
COLUMNS: Final = ("month", "kind", "user", "node", "allocations", "allocated_hours", "tasks")
URL_SECONDS: Final = 300


def key(month: Month, fmt: str) -> str:
    return f"reports/usage/{month}.{fmt}"


def rows(report: UsageReport) -> list[list[Any]]:
    """The table of both files: one row per user and node (allocations), one per user (with
    tasks), one total. A cell with nothing to say is empty."""
    month = str(report.month)
    table: list[list[Any]] = []
    for (user, node), figures in report.by_user_node.items():
        table.append([month, "node", user, node, figures.allocations, hours(figures.seconds), None])
    for user, figures in report.by_user.items():
        table.append([month, "user", user, None, figures.allocations, hours(figures.seconds), figures.tasks])
    total = report.total
    table.append([month, "total", None, None, total.allocations, hours(total.seconds), total.tasks])
    return table


def render_csv(report: UsageReport) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows(report):
        writer.writerow(["" if cell is None else cell for cell in row])
    return out.getvalue().encode("utf-8")


def render_xlsx(report: UsageReport) -> bytes:
    from openpyxl import Workbook  # only this job needs it: keep it off the import path of every Lambda

    book = Workbook()
    usage = book.active
    assert usage is not None
    usage.title = "Usage"
    usage.append(list(COLUMNS))
    for row in rows(report):
        usage.append(row)
    detail = book.create_sheet("Allocations")
    detail.append(["allocation_id", "user", "node", "started_at", "ended_at", "counted_from", "counted_until",
                   "hours"])
    for a in report.allocations:
        detail.append([a.allocation_id, a.user, a.node, a.started_at, a.ended_at, clock.rfc3339(a.counted_from),
                       clock.rfc3339(a.counted_until), hours(a.seconds)])
    about = book.create_sheet("About")
    for line in (
        ("month", str(report.month)),
        ("as_of", clock.rfc3339(report.as_of)),
        ("complete", report.complete),
        ("allocated_hours", "allocation time inside the month (an open allocation up to as_of), in hours"),
        ("tasks", "tasks the user created in the month"),
    ):
        about.append(list(line))
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


@dataclass(frozen=True)
class StoredReport:
    month: Month
    fmt: str
    key: str
    as_of: str
    complete: bool


def build(month: Month, now: float | None = None) -> list[StoredReport]:
    """Aggregate the month and store both files (overwriting). Returns what was stored."""
    report = collect(month, now)
    as_of = clock.rfc3339(report.as_of)
    stored = []
    for fmt, body in (("csv", render_csv(report)), ("xlsx", render_xlsx(report))):
        aws.client("s3").put_object(
            Bucket=config.reports_bucket(), Key=key(month, fmt), Body=body, ContentType=CONTENT_TYPES[fmt],
            Metadata={"as-of": as_of, "complete": str(report.complete).lower()},
        )
        stored.append(StoredReport(month, fmt, key(month, fmt), as_of, report.complete))
    logger.info("usage report built", extra={"month": str(month), "as_of": as_of, "users": len(report.by_user),
                                             "allocations": report.total.allocations})
    return stored


def _stored(month: Month, fmt: str) -> StoredReport | None:
    try:
        head = aws.client("s3").head_object(Bucket=config.reports_bucket(), Key=key(month, fmt))
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return None
        raise
    metadata = head.get("Metadata", {})
    return StoredReport(month, fmt, key(month, fmt), metadata.get("as-of", ""), metadata.get("complete") == "true")


def ensure(month: Month, fmt: str, now: float | None = None) -> StoredReport:
    """The month's report file: the stored one when it is final, else built now.

    Raises ValidationFailed for a month that has not started or an unknown format.
    """
    now = clock.now_epoch() if now is None else now
    if fmt not in CONTENT_TYPES:
        raise ValidationFailed("format must be csv or xlsx", [{"path": "$query.format", "message": "csv or xlsx"}])
    if month.start > now:
        raise ValidationFailed(f"{month} has not started yet", [{"path": "$query.month", "message": "a future month"}])
    found = _stored(month, fmt)
    if found is not None and found.complete:
        return found
    return next(r for r in build(month, now) if r.fmt == fmt)


def link(stored: StoredReport) -> dict[str, Any]:
    """Where to download the file: a presigned GET valid for URL_SECONDS."""
    filename = f"fleetrun-usage-{stored.month}.{stored.fmt}"
    url = aws.client("s3").generate_presigned_url(
        "get_object",
        Params={
            "Bucket": config.reports_bucket(), "Key": stored.key,
            "ResponseContentDisposition": f'attachment; filename="{filename}"',
            "ResponseContentType": CONTENT_TYPES[stored.fmt],
        },
        ExpiresIn=URL_SECONDS,
    )
    return {
        "month": str(stored.month), "format": stored.fmt, "url": url, "expires_in": URL_SECONDS,
        "filename": filename, "as_of": stored.as_of, "complete": stored.complete,
    }


def build_previous_month(now: float | None = None) -> list[StoredReport]:
    """The monthly job: the previous month's files, unless they are already final."""
    now = clock.now_epoch() if now is None else now
    month = Month.of(now).previous()
    if all(found is not None and found.complete for found in (_stored(month, "csv"), _stored(month, "xlsx"))):
        return []
    return build(month, now)
