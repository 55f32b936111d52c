"""The runs of a task attempt: created for the first attempt, reset for a retry (with
backfill of what is missing), one per (task, node), numbered for the concurrency window."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from chalicelib.domain.records import NodeRun, Task
from chalicelib.domain.run_transitions import RUN_TRANSITIONS, retry_action
from chalicelib.store import runs, tasks
from chalicelib.store.runs import NewRun, RunTemplate


def template(task: Task, dispatch_id: str, now: str) -> RunTemplate:
    return RunTemplate(
        task_id=task.task_id, type=task.type, owner=task.owner, priority=int(task.priority),
        runner_node=task.runner_node, generation=int(task.attempt), dispatch_id=dispatch_id, now=now,
    )


def prepare_attempt(task: Task, now: str) -> tuple[list[str], list[str], int]:
    """Create (attempt 1) or reset (a retry) the runs of the task's current attempt.
    Returns (created, skipped, the next free ordinal)."""
    attempt = int(task.attempt)
    runs_of = template(task, f"{task.task_id}:{attempt}", now)
    targets = tasks.load_targets(task.task_id)
    if attempt == 1:
        created, skipped = runs.create_missing(runs_of, [NewRun(n, i) for i, n in enumerate(targets)])
        return created, skipped, len(targets)
    return _reset_for_retry(task, runs_of, targets)


def _reset_for_retry(task: Task, runs_of: RunTemplate, targets: list[str]) -> tuple[list[str], list[str], int]:
    """Reset the runs a retry covers to `pending` with new dense ordinals; backfill missing runs.

    The selection and numbering depend only on stored state, so a resumed job numbers the
    same way: runs this attempt already reset carry `reset_gen == attempt`.
    """
    attempt = int(task.attempt)
    action = retry_action(task.retry_scope or "failed")
    resettable = RUN_TRANSITIONS[action].sources
    present: set[str] = set()
    created: list[str] = []
    skipped: list[str] = []
    calls: list[Callable[[], Any]] = []
    ordinal = 0
    for run in runs.iter_runs(task.task_id):
        if int(run.generation) == attempt and run.reset_gen is None and run.dispatch_id == runs_of.dispatch_id:
            continue  # backfilled by an earlier try of this job: numbered below with the missing ones
        present.add(run.node)
        if run.reset_gen is not None and int(run.reset_gen) == attempt:
            created.append(run.node)
            ordinal += 1
        elif int(run.generation) < attempt and run.status in resettable:
            calls.append(partial(_reset_run, run, action, attempt, ordinal, runs_of.now))
            created.append(run.node)
            ordinal += 1
        else:
            skipped.append(run.node)
    runs.run_concurrently(calls)
    missing = [NewRun(node, ordinal + i) for i, node in enumerate(n for n in targets if n not in present)]
    backfilled, _ = runs.create_missing(runs_of, missing)
    return created + backfilled, skipped, ordinal + len(missing)


def _reset_run(run: NodeRun, action: str, attempt: int, ordinal: int, now: str) -> None:
    runs.transition(run, action, now, generation=attempt, ordinal=ordinal)
