"""DynamoDB requests of one sweep at N active tasks (issue 17: sweeps cost O(due work)).

The sweeper reads its work from the due index (chalicelib/domain/due.py): a constant number of
queries per pass, plus a read and a write per item that is due. A pass with nothing due costs
the same at 10 and at 1,000 active tasks; this counts it. Active tasks are created through the
store directly (a task on a node that does not exist, never dispatched: the cheapest active
task), and their looks are not due yet.

    python bench/scale_sweeps.py [--tasks 10 1000] [--json]

`sweeper_requests_per_sweep(fleet, active_tasks)` is the reusable part (bench/scale.py, tests):
it takes a tests.harness.Fleet (its moto mock running) and tops the active tasks up to
`active_tasks` before it counts.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
#: passes allowed to drain work that is due before the idle pass is counted
DRAIN_PASSES = 20


class DynamoRequests:
    """Counts DynamoDB API calls (one per call: botocore's retries of a throttle are not new
    requests) by operation, in every botocore session created while installed."""

    def __init__(self) -> None:
        self.by_operation: Counter[str] = Counter()
        self.counting = False
        self._lock = threading.Lock()

    def _on_call(self, model: Any, **_: Any) -> None:
        if self.counting:
            with self._lock:
                self.by_operation[model.name] += 1

    @property
    def total(self) -> int:
        return sum(self.by_operation.values())

    @contextlib.contextmanager
    def installed(self) -> Iterator[DynamoRequests]:
        from botocore import handlers

        entry = ("before-call.dynamodb", self._on_call)
        handlers.BUILTIN_HANDLERS.append(entry)
        _fresh_clients()  # the hook reaches only sessions created from now on
        try:
            yield self
        finally:
            handlers.BUILTIN_HANDLERS.remove(entry)
            _fresh_clients()

    @contextlib.contextmanager
    def measuring(self) -> Iterator[DynamoRequests]:
        self.by_operation.clear()
        self.counting = True
        try:
            yield self
        finally:
            self.counting = False


def _fresh_clients() -> None:
    from chalicelib import aws
    from chalicelib.store import models

    aws.reset()
    models.reset_connections()


def add_active_tasks(count: int, owner: str = "bench-sweeps") -> list[str]:
    """Create `count` active tasks (pending, on a node that does not exist) through the store."""
    from ulid import ULID

    from chalicelib import clock
    from chalicelib.domain.records import Task
    from chalicelib.services.service_events import service_event
    from chalicelib.store import events, runs, tasks

    def create(number: int) -> str:
        now = clock.now_iso()
        task = Task(task_id=str(ULID()), type="shell", owner=owner, status="pending", created_at=now,
                    updated_at=now, max_concurrency=1, parameters=json.dumps({"command": ["true"]}))
        created = events.new_item(task.task_id, [service_event("task.created", "bench task")])
        tasks.create(task, [f"ghost-{number:05d}"], None, created)
        return task.task_id

    return list(runs.run_concurrently([lambda n=n: create(n) for n in range(count)]))


def active_count() -> int:
    from chalicelib.store import tasks

    return sum(1 for _ in tasks.iter_active())


def drain() -> None:
    """Sweep until a pass changes nothing (work due from earlier scenarios is not counted)."""
    from chalicelib.services import sweeper

    for _ in range(DRAIN_PASSES):
        if not sweeper.sweep().changed():
            return


def sweeper_requests_per_sweep(fleet: Any, active_tasks: int) -> int:
    """DynamoDB requests of one sweep with nothing due, once `active_tasks` tasks are active."""
    from chalicelib.services import sweeper

    missing = active_tasks - active_count()
    if missing > 0:
        add_active_tasks(missing)
    drain()
    requests = DynamoRequests()
    with requests.installed(), requests.measuring():
        sweeper.sweep()
    return requests.total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, nargs="+", default=[10, 1000])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from scale_common import bootstrap, strict_fleet  # type: ignore[import-not-found]

    bootstrap()
    figures: dict[str, int] = {}
    with strict_fleet() as fleet:
        for count in sorted(args.tasks):
            figures[f"sweeper_requests_per_sweep_{count}"] = sweeper_requests_per_sweep(fleet, count)
            if not args.json:
                print(f"active tasks {count:>6}: {figures[f'sweeper_requests_per_sweep_{count}']} DynamoDB requests")
    if args.json:
        print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
