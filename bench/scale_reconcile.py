"""The statistics reconcile's cost per invocation, for bench/scale.py.

A reconcile pass runs in steps (chalicelib/services/reconcile.py), one per invocation of the
dispatch worker: at most `TASK_CHUNK` tasks or `SCOPE_CHUNK` scopes each. This runs a whole pass
step by step in this process and counts the AWS requests of each step (every botocore call:
the index page, the item reads, the recounts of active tasks, the transaction, the job sent
for the next step), so the figure holds whatever the table's size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sized
from contextlib import contextmanager
from typing import Any

from botocore.client import BaseClient
from botocore.exceptions import ClientError


@contextmanager
def counted_requests() -> Iterator[Callable[[], int]]:
    """Count every AWS request made in this process while inside (a callable returns the count)."""
    original = BaseClient._make_api_call
    count = 0

    def counting(self: BaseClient, operation_name: str, api_params: dict[str, Any]) -> Any:
        nonlocal count
        count += 1
        return original(self, operation_name, api_params)

    BaseClient._make_api_call = counting  # type: ignore[method-assign]
    try:
        yield lambda: count
    finally:
        BaseClient._make_api_call = original  # type: ignore[method-assign]


def reconcile_steps() -> list[int]:
    """Run one whole reconcile pass, step by step; the AWS requests of each step."""
    from chalicelib.services import jobs, reconcile
    from chalicelib.store.retrying import is_conflict_or_throttle

    per_step: list[int] = []
    pass_id = reconcile._open_pass_quietly()
    number: int | None = 0
    while number is not None:
        with counted_requests() as requests:
            try:
                number, _ = reconcile.step(pass_id, number)
            except ClientError as error:
                if not is_conflict_or_throttle(error):
                    raise
                # the queue would deliver the job again: the step is redone from fresh reads
                per_step.append(requests())
                continue
            if number is not None:  # what the job handler does next: send the following step
                jobs.enqueue_reconcile(pass_id, number)
            per_step.append(requests())
    return per_step


def reconcile_requests_per_invocation(fleet: Any, tasks: Sized | int) -> int:
    """The most AWS requests one reconcile invocation (one step) made in a whole pass over the
    table `fleet` serves, holding `tasks` (a number, or the tasks' ids; for the record only: the
    figure is bounded by the chunk sizes, not by it). The steps' jobs are left on the dispatch
    queue: drain it (or reset the queue) before measuring anything else there."""
    del fleet, tasks  # the pass reads whatever the table holds
    return max(reconcile_steps())


def main() -> None:  # pragma: no cover - a figure for a person
    """`python bench/scale_reconcile.py [TASKS ...]`: the most requests a reconcile step made over
    a table of so many tasks (default 100 and 1000: equal, whatever the table holds)."""
    import json
    import sys
    from pathlib import Path

    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench import scale_common, scale_sweeps

    scale_common.bootstrap()
    figures: dict[str, Any] = {}
    for count in [int(a) for a in sys.argv[1:]] or [100, 1000]:
        with scale_common.strict_fleet() as fleet:
            scale_sweeps.add_active_tasks(count, owner="bench-reconcile")
            steps = reconcile_steps()
            figures[str(count)] = {"steps": len(steps), "max_requests_per_step": max(steps)}
            scale_common.note(f"{count} tasks: {len(steps)} steps, at most {max(steps)} requests each")
            del fleet
    print(json.dumps({"reconcile_requests_per_invocation": figures}))


if __name__ == "__main__":  # pragma: no cover
    main()
