"""Fan-out: one node run per (task, node), created idempotently; backfill; cancel and halt."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from chalicelib import clock
from chalicelib.domain.statuses import RunStatus, TaskStatus
from chalicelib.domain.task_types import get_task_type
from chalicelib.domain.transitions import RUN_TRANSITIONS
from chalicelib.errors import ConditionFailed, Conflict, InvalidTransition, ValidationFailed
from chalicelib.observability import count, logger, metrics, tracer
from chalicelib.services import concurrency, work
from chalicelib.services.views import service_event
from chalicelib.store import events, runs, tasks
from chalicelib.store.models import NodeRunItem, TaskItem
from chalicelib.store.runs import NewRun, RunTemplate

DISPATCHABLE = frozenset({TaskStatus.PENDING})


def _template(task: TaskItem, dispatch_id: str, now: str) -> RunTemplate:
    return RunTemplate(
        task_id=task.task_id, type=task.type, owner=task.owner, priority=int(task.priority),
        runner_node=task.runner_node, generation=int(task.attempt), dispatch_id=dispatch_id, now=now,
    )


@tracer.capture_method
def run_dispatch_job(task_id: str, attempt: int) -> None:
    """Create (attempt 1) or reset (retry) the runs of a task's attempt, then start it.

    Idempotent: a duplicate, late or resumed job creates only what is missing and records
    the same figures.
    """
    task = tasks.find(task_id)
    if task is None or int(task.attempt) != attempt or int(task.dispatched_attempt) >= attempt:
        logger.info("dispatch job is stale or done; ignored", extra={"task_id": task_id, "attempt": attempt})
        return
    if task.status not in DISPATCHABLE:
        logger.info("task not dispatchable", extra={"task_id": task_id, "status": task.status})
        return
    if not concurrency.may_dispatch(task):
        return  # waits in `pending`; the key's release (or the sweeper) sends this job again
    now = clock.now_iso()
    created, skipped, ordinal_next = _prepare_attempt(task, now)
    dispatched = events.new_item(task_id, [service_event(
        "task.dispatched", f"attempt {attempt}: {len(created)} node run(s) created, {len(skipped)} skipped",
        data={"attempt": attempt, "created_count": len(created), "skipped_count": len(skipped)},
    )])
    extra = [
        TaskItem.dispatch_triggered.set(True),
        TaskItem.dispatched_attempt.set(attempt),
        TaskItem.created_count.set(len(created)),
        TaskItem.skipped_count.set(len(skipped)),
        TaskItem.ordinal_next.set(ordinal_next),
    ]
    try:
        tasks.transition(task_id, "start", now, condition=TaskItem.attempt == attempt, extra=extra, event=dispatched)
    except (InvalidTransition, Conflict):
        current = tasks.get(task_id)
        if current.status == TaskStatus.CANCELLING and int(current.attempt) == attempt:
            # cancelled while we created runs: the cancel job may have missed the new ones
            cancel_runs(task_id, attempt, include_running=True)
            return
        if current.status == TaskStatus.CANCELLED:
            logger.warning("runs created for a task cancelled meanwhile; cancelling them", extra={"task_id": task_id})
            _cancel_each(current, include_running=True)
            return
        raise
    if not get_task_type(task.type).agent_executed:
        # service-executed runs: a wake-up on the work queue (the sweeper re-sends lost ones)
        work.enqueue(task_id, created, attempt)
    count("NodeRunsDispatched", value=len(created))
    if attempt == 1:
        lag = clock.now_epoch() - clock.parse_rfc3339(task.created_at)
        metrics.add_metric(name="DispatchLag", unit=MetricUnit.Seconds, value=lag)
    figures = {"created_count": len(created), "skipped_count": len(skipped)}
    logger.info("task dispatched", extra={"task_id": task_id, **figures})


def _prepare_attempt(task: TaskItem, now: str) -> tuple[list[str], list[str], int]:
    """Create (attempt 1) or reset (a retry) the runs of the task's current attempt."""
    attempt = int(task.attempt)
    template = _template(task, f"{task.task_id}:{attempt}", now)
    targets = tasks.load_targets(task.task_id)
    if attempt == 1:
        created, skipped = runs.create_missing(template, [NewRun(n, i) for i, n in enumerate(targets)])
        return created, skipped, len(targets)
    return _reset_for_retry(task, template, targets)


def _reset_for_retry(task: TaskItem, template: RunTemplate, targets: list[str]) -> tuple[list[str], list[str], int]:
    """Reset the runs a retry covers to `pending` with new dense ordinals; backfill missing runs.

    The selection and numbering depend only on stored state, so a resumed job numbers the
    same way: runs this attempt already reset carry `reset_gen == attempt`.
    """
    attempt = int(task.attempt)
    action = "retry_all" if task.retry_scope == "all" else "retry_failed"
    resettable = RUN_TRANSITIONS[action].sources
    present: set[str] = set()
    created: list[str] = []
    skipped: list[str] = []
    calls: list[Callable[[], Any]] = []
    ordinal = 0
    for run in runs.iter_runs(task.task_id):
        if int(run.generation) == attempt and run.reset_gen is None and run.dispatch_id == template.dispatch_id:
            continue  # backfilled by an earlier try of this job: numbered below with the missing ones
        present.add(run.node)
        if run.reset_gen is not None and int(run.reset_gen) == attempt:
            created.append(run.node)
            ordinal += 1
        elif int(run.generation) < attempt and run.status in resettable:
            calls.append(partial(_reset_run, run, action, attempt, ordinal, template))
            created.append(run.node)
            ordinal += 1
        else:
            skipped.append(run.node)
    runs.run_concurrently(calls)
    missing = [NewRun(node, ordinal + i) for i, node in enumerate(n for n in targets if n not in present)]
    backfilled, _ = runs.create_missing(template, missing)
    return created + backfilled, skipped, ordinal + len(missing)


def _reset_run(run: NodeRunItem, action: str, attempt: int, ordinal: int, template: RunTemplate) -> None:
    claim_pk, claim_sk = runs.claim_keys(run.runner, template.priority, run.task_id, ordinal)
    runs.apply(
        run.task_id, run.node, action, template.now,
        condition=(NodeRunItem.generation == run.generation) & (NodeRunItem.attempt == run.attempt),
        fields={
            "attempt": int(run.attempt) + 1, "generation": attempt, "reset_gen": attempt, "ordinal": ordinal,
            "claim_pk": claim_pk, "claim_sk": claim_sk, "lease_owner": None, "lease_expires_at": None,
            "cancel_requested": False, "output": None, "output_key": None, "final_events": None,
            "reservation_owner": None, "reservation_expires_at": None, "confirmed": None,
        },
    )


def dispatch_nodes(task: TaskItem, nodes: list[str]) -> dict[str, Any]:
    """Make sure every listed node has a run in the task's current attempt (backfill).

    Raises InvalidTransition unless the task is pending or running, Conflict while the
    task's own dispatch is still in progress or when another dispatch raced this one.
    """
    allowed = frozenset({TaskStatus.PENDING, TaskStatus.RUNNING})
    if task.status not in allowed:
        raise InvalidTransition("task", task.status, "dispatch", allowed)
    if task.halted:
        raise Conflict(f"task {task.task_id} is halted: more nodes failed than max_errors allows, no node starts")
    if int(task.dispatched_attempt) < int(task.attempt):
        raise Conflict(f"task {task.task_id} is still being dispatched; retry in a moment")
    targets = set(tasks.load_targets(task.task_id))
    unique = list(dict.fromkeys(nodes))
    new_nodes = [n for n in unique if n not in targets]
    if new_nodes and get_task_type(task.type).requires_confirmation:
        raise ValidationFailed(
            f"{task.type} plans and applies on its one runner; it takes no further nodes",
            [{"path": "$.target_nodes", "message": "two-phase tasks have exactly one target node"}],
        )
    listed = [n for n in unique if n in targets]
    # a listed target without a run can only be left by a crash between reserve and create
    orphans = [n for n, run in zip(listed, runs.run_concurrently(
        partial(runs.find, task.task_id, n) for n in listed), strict=True) if run is None]
    now = clock.now_iso()
    base = int(task.ordinal_next)
    to_create = new_nodes + orphans
    if to_create:
        _reserve(task, new_nodes, len(to_create), now)
    template = _template(task, f"{task.task_id}:route:{now}", now)
    created, _ = runs.create_missing(template, [NewRun(n, base + i) for i, n in enumerate(to_create)])
    skipped = len(unique) - len(created)
    events.append(task.task_id, [service_event(
        "task.dispatched", f"dispatch request: {len(created)} created, {skipped} skipped",
        data={"created_count": len(created), "skipped_count": skipped, "nodes": unique[:100]},
    )])
    return {
        "triggered": True,
        "target_node_count": len(unique),
        "created_count": len(created),
        "skipped_count": skipped,
    }


def _reserve(task: TaskItem, new_nodes: list[str], ordinals: int, now: str) -> None:
    """Grow the task's targets and reserve ordinals, guarded against a racing dispatch."""
    chunks = tasks.chunk_targets(task.task_id, new_nodes, first_chunk=int(task.target_chunks))
    guard = (
        (TaskItem.ordinal_next == task.ordinal_next)
        & TaskItem.status.is_in(TaskStatus.PENDING, TaskStatus.RUNNING)
        & (TaskItem.halted == False)  # noqa: E712
    )
    try:
        tasks.update_with_chunks(task.task_id, [
            TaskItem.target_count.add(len(new_nodes)),
            TaskItem.ordinal_next.add(ordinals),
            TaskItem.target_chunks.add(len(chunks)),
            TaskItem.created_count.add(ordinals),
            TaskItem.updated_at.set(now),
        ], guard, chunks)
    except ConditionFailed:
        raise Conflict(f"task {task.task_id} changed during dispatch; retry") from None


def cancel_runs(task_id: str, attempt: int, *, include_running: bool) -> int:
    """The cancel (or, without `include_running`, the halt) job of one attempt.

    A duplicate or late job is a no-op: it acts only while the task is still cancelling (or
    halted) in that attempt, and every run write is conditioned on the attempt's generation.
    """
    task = tasks.find(task_id)
    if task is None or int(task.attempt) != attempt:
        logger.info("cancel/halt job for another attempt; ignored", extra={"task_id": task_id, "attempt": attempt})
        return 0
    if include_running and task.status != TaskStatus.CANCELLING:
        return 0
    if not include_running and not (task.halted and task.status == TaskStatus.RUNNING):
        return 0
    if int(task.dispatched_attempt) < attempt and attempt > 1:
        # cancelled before the retry's dispatch ran: its counts already moved to pending, so
        # reset the runs first (the dispatch job will find the task no longer dispatchable)
        _prepare_attempt(task, clock.now_iso())
    return _cancel_each(task, include_running=include_running)


def _cancel_each(task: TaskItem, *, include_running: bool) -> int:
    now = clock.now_iso()
    generation = NodeRunItem.generation == task.attempt
    calls: list[Callable[[], Any]] = []
    for run in runs.iter_runs(task.task_id):
        if int(run.generation) != int(task.attempt):
            continue
        if run.status in (RunStatus.PENDING, RunStatus.APPLY_PENDING):
            calls.append(partial(
                runs.apply, task.task_id, run.node, "cancel", now,
                condition=(NodeRunItem.attempt == run.attempt) & generation,
                error_message="cancelled before it started" if run.status == RunStatus.PENDING else "cancelled",
                fields={"claim_pk": None, "claim_sk": None},
            ))
        elif include_running and run.status == RunStatus.RUNNING and not run.cancel_requested:
            calls.append(partial(
                runs.update_leased, task.task_id, run.node, int(run.attempt), run.lease_owner or run.runner,
                {"cancel_requested": True},
            ))
    return sum(1 for result in runs.run_concurrently(calls) if result is not None)


def handle_job(job: dict[str, Any]) -> None:
    kind, task_id = job.get("job"), job.get("task_id")
    if not isinstance(task_id, str):
        logger.warning("job without task_id; dropped", extra={"job": job})
        return
    logger.append_keys(task_id=task_id)
    if kind == "dispatch":
        run_dispatch_job(task_id, int(job.get("attempt", 1)))
    elif kind == "cancel":
        cancel_runs(task_id, int(job.get("attempt", 0)), include_running=True)
    elif kind == "halt":
        cancel_runs(task_id, int(job.get("attempt", 0)), include_running=False)
    else:
        logger.warning("unknown job kind; dropped", extra={"job": job})

