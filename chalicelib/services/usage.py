"""Usage of a month: allocation hours per user and node, tasks created per user.

`aggregate` is pure (allocations and tasks per owner in, figures out); `collect` reads them:
allocations listed by end month (only those that ended in or after the month, plus the open
ones), and the tasks each owner created in the month from the statistics' month scopes
(store/counters.py `month_scope`): the month's owners, then one read of 4 items per owner,
however many tasks the month holds. The stream counts a task within seconds of its creation,
so a report of this month may miss the last seconds' tasks.

A month before the one the month scopes count in full (`counters.usage_counted_since`: the
month after an upgrade to them first counted a task) is read the old way: its tasks by id range
from the list index (task ids are ULIDs, time-ordered), one read per 100 tasks.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from ulid import ULID

from chalicelib import clock
from chalicelib.errors import ValidationFailed
from chalicelib.store import counters, inventory, tasks
from chalicelib.validation import FIRST_YEAR, LAST_YEAR

_MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")
#: the list index sorts tasks by id; ids and `created_at` are taken a moment apart
_ID_SLACK_SECONDS = 5.0


@dataclass(frozen=True, order=True)
class Month:
    year: int
    month: int

    @classmethod
    def parse(cls, text: str) -> Month:
        """Raises ValidationFailed unless `text` is YYYY-MM of the years 1970-9999 (API.md)."""
        found = _MONTH.match(text or "")
        if not found:
            raise ValidationFailed("month must look like 2026-11", [{"path": "$query.month", "message": "YYYY-MM"}])
        if int(found.group(1)) < FIRST_YEAR:  # year 0 has no datetime; nothing was allocated before 1970
            raise ValidationFailed(f"month must be in the years {FIRST_YEAR}-{LAST_YEAR}",
                                   [{"path": "$query.month", "message": f"not a month of {FIRST_YEAR}-{LAST_YEAR}"}])
        return cls(int(found.group(1)), int(found.group(2)))

    @classmethod
    def of(cls, epoch: float) -> Month:
        moment = datetime.fromtimestamp(epoch, UTC)
        return cls(moment.year, moment.month)

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"

    def next(self) -> Month:
        return Month(self.year + self.month // 12, self.month % 12 + 1)

    def previous(self) -> Month:
        return Month(self.year - (self.month == 1), 12 if self.month == 1 else self.month - 1)

    @property
    def start(self) -> float:
        return datetime(self.year, self.month, 1, tzinfo=UTC).timestamp()

    @property
    def end(self) -> float:
        return self.next().start

    def until(self, last: Month) -> list[Month]:
        """This month and every month after it up to `last`."""
        months, current = [], self
        while current <= last:
            months.append(current)
            current = current.next()
        return months


@dataclass(frozen=True)
class Allocation:
    """An allocation as a report counts it: clipped to the month and to the report time."""

    allocation_id: str
    user: str
    node: str
    started_at: str
    ended_at: str | None
    counted_from: float
    counted_until: float

    @property
    def seconds(self) -> float:
        return max(0.0, self.counted_until - self.counted_from)


@dataclass
class Figures:
    allocations: int = 0
    seconds: float = 0.0
    tasks: int = 0


@dataclass
class UsageReport:
    month: Month
    as_of: float
    #: the month had ended when the report was made: its figures are final
    complete: bool
    allocations: list[Allocation] = field(default_factory=list)
    by_user_node: dict[tuple[str, str], Figures] = field(default_factory=dict)
    by_user: dict[str, Figures] = field(default_factory=dict)
    total: Figures = field(default_factory=Figures)


def hours(seconds: float) -> float:
    return round(seconds / 3600, 3)


def clip(month: Month, now: float, allocation_id: str, user: str, node: str, started_at: str,
         ended_at: str | None) -> Allocation | None:
    """The part of an allocation inside the month and before `now` (None when there is none)."""
    start = max(clock.parse_rfc3339(started_at), month.start)
    end = min(clock.parse_rfc3339(ended_at) if ended_at else now, month.end, now)
    if end <= start:
        return None
    return Allocation(allocation_id, user, node, started_at, ended_at, start, end)


def aggregate(month: Month, now: float, allocations: Iterable[Allocation],
              tasks_by_owner: Mapping[str, int]) -> UsageReport:
    report = UsageReport(month, now, complete=now >= month.end)
    by_user_node: dict[tuple[str, str], Figures] = defaultdict(Figures)
    by_user: dict[str, Figures] = defaultdict(Figures)
    for allocation in sorted(allocations, key=lambda a: (a.user, a.node, a.started_at)):
        report.allocations.append(allocation)
        for figures in (by_user_node[(allocation.user, allocation.node)], by_user[allocation.user], report.total):
            figures.allocations += 1
            figures.seconds += allocation.seconds
    for owner, count in tasks_by_owner.items():
        if not count:
            continue
        by_user[owner].tasks += count
        report.total.tasks += count
    report.by_user_node = dict(sorted(by_user_node.items()))
    report.by_user = dict(sorted(by_user.items()))
    return report


def collect(month: Month, now: float | None = None) -> UsageReport:
    """Read the month's allocations and tasks and aggregate them (as of `now`)."""
    now = clock.now_epoch() if now is None else now
    return aggregate(month, now, _allocations(month, now), _tasks_by_owner(month))


def _allocations(month: Month, now: float) -> Iterator[Allocation]:
    months = [str(m) for m in month.until(Month.of(now))]
    start, end = clock.rfc3339(month.start), clock.rfc3339(month.end)
    for item in inventory.allocations_overlapping(start, end, months):
        clipped = clip(month, now, item.allocation_id, item.user, item.node_id, item.started_at, item.ended_at)
        if clipped is not None:
            yield clipped


def _tasks_by_owner(month: Month) -> dict[str, int]:
    since = counters.usage_counted_since()
    if since is None or str(month) < since:
        return dict(Counter(_task_owners(month)))
    owners = counters.month_owners(str(month))
    scopes = {counters.month_scope(owner, str(month)): owner for owner in owners}
    counted = counters.read_many_stats(sorted(scopes))
    return {owner: int(counted[scope].get("created", 0)) for scope, owner in scopes.items()}


def _task_owners(month: Month) -> Iterator[str]:
    """The owner of each task created in `month`, from the tasks themselves (months before the
    month scopes)."""
    low = _ulid_prefix(month.start - _ID_SLACK_SECONDS) + "0" * 16
    high = _ulid_prefix(month.end + _ID_SLACK_SECONDS) + "0" * 16
    start, end = clock.rfc3339(month.start), clock.rfc3339(month.end)
    for task in tasks.iter_all(low, high, attributes=["owner", "created_at"]):
        if start <= task.created_at < end:
            yield str(task.owner)


def _ulid_prefix(epoch: float) -> str:
    """The timestamp part (10 characters) of a ULID made at `epoch`."""
    return str(ULID.from_timestamp(max(0.0, epoch)))[:10]
