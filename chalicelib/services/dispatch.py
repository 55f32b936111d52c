"""The dispatch job: once the task holds its concurrency key, make the runs of its attempt
(services/attempts.py) one chunk per job, start the task after the first chunk, and send
the next chunk (the continuation) until the last (domain/dispatch_progress.py).

A chunk job that finds its chunk already recorded does nothing (a duplicate), except send
the next chunk once more when the next is the one still to do: the job that recorded it may
have died before sending it. The sweeper re-sends a continuation whose progress stamp went stale.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from chalicelib import clock, config
from chalicelib.domain import dispatch_progress as progress
from chalicelib.domain.records import Task
from chalicelib.domain.statuses import TaskStatus
from chalicelib.errors import Busy, Conflict, InvalidTransition
from chalicelib.observability import count, logger, metrics, tracer
from chalicelib.services import attempts, cancellation, concurrency, jobs, type_registry, work
from chalicelib.services.service_events import service_event
from chalicelib.store import events, target_chunks, tasks


@tracer.capture_method
def run_dispatch_job(task_id: str, attempt: int, chunk: int | None = None, dispatch_id: str | None = None) -> None:
    """Create (attempt 1) or reset (retry) the runs of one chunk of a dispatch; the first chunk
    of an attempt starts the task. Idempotent: a duplicate, late or resumed job creates only
    what is missing and records the same figures once."""
    task = tasks.find(task_id)
    if task is None or int(task.attempt) != attempt:
        logger.info("dispatch job is stale; ignored", extra={"task_id": task_id, "attempt": attempt})
        return
    if not progress.started(task):
        if chunk:
            logger.info("chunk of a dispatch not started; ignored", extra={"task_id": task_id, "chunk": chunk})
            return
        _first_chunk(task)
        return
    if chunk is None:  # the attempt's first job again (redelivered, or the outbox's duplicate)
        chunk, dispatch_id = 0, progress.attempt_dispatch_id(task_id, attempt)
    if dispatch_id != task.dispatch_id:
        logger.info("dispatch job is done or stale; ignored", extra={"task_id": task_id, "chunk": chunk})
        return
    through = int(task.dispatched_through)
    if chunk == through and through < int(task.dispatch_chunks):
        _next_chunk(task, chunk)
    elif chunk == through - 1 and through < int(task.dispatch_chunks):
        # recorded, but its sender may have died before sending the next one: send it (again)
        _send(task, through, task.dispatch_id)
    else:
        logger.info("dispatch chunk already done or not yet due; ignored",
                    extra={"task_id": task_id, "chunk": chunk, "dispatched_through": through})


def resend_if_stalled(task: Task, now: float) -> bool:
    """The sweeper's look at a dispatch in chunks: re-send the chunk it is at when its progress
    stamp is older than the grace period (never while chunks keep landing). Returns whether it did."""
    if not progress.started(task) or not progress.in_progress(task) or task.dispatch_progress_at is None:
        return False
    if now - clock.parse_rfc3339(task.dispatch_progress_at) <= config.undispatched_grace_seconds():
        return False
    _send(task, int(task.dispatched_through), task.dispatch_id)
    return True


def _first_chunk(task: Task) -> None:
    """Chunk 0 of the attempt's dispatch, then `start` (with the progress of a dispatch in chunks)."""
    attempt = int(task.attempt)
    if task.status not in tasks.allowed_from("start"):
        logger.info("task not dispatchable", extra={"task_id": task.task_id, "status": task.status})
        return
    if not concurrency.may_dispatch(task):
        return  # waits in `pending`; the key's release (or the sweeper) sends this job again
    now = clock.now_iso()
    dispatch_id = progress.attempt_dispatch_id(task.task_id, attempt)
    nodes = target_chunks.nodes_of_part(task.task_id, 0, 0, progress.DISPATCH_CHUNK_SIZE)
    created, skipped, used = attempts.prepare_part(task, dispatch_id, nodes, 0, now)
    total_chunks = attempts.chunks_for(int(task.target_count), int(task.target_chunks))
    dispatched = _dispatched_event(task, created, skipped, last=total_chunks <= 1)
    if not _start(task, now, dispatched, nodes, created_count=len(created), skipped_count=len(skipped),
                  ordinal_next=used, dispatch_id=dispatch_id, dispatch_chunks=total_chunks,
                  dispatch_total=int(task.target_count)):
        return
    _after_chunk(task, created, 0, last=total_chunks <= 1)
    if attempt == 1:
        lag = clock.now_epoch() - clock.parse_rfc3339(task.created_at)
        metrics.add_metric(name="DispatchLag", unit=MetricUnit.Seconds, value=lag)
    if total_chunks > 1:
        _send(task, 1, dispatch_id)


def _next_chunk(task: Task, chunk: int) -> None:
    """Chunk `chunk` (> 0 of an attempt's dispatch, or any of a dispatch request's)."""
    now = clock.now_iso()
    assert task.dispatch_id is not None
    own = task.dispatch_id == progress.attempt_dispatch_id(task.task_id, int(task.attempt))
    nodes: list[str] = []
    if task.status != TaskStatus.CANCELLING or (own and int(task.attempt) > 1):
        # (a cancelled task gets no new runs; a cancelled retry still resets the runs its counts moved)
        nodes = target_chunks.nodes_of_part(task.task_id, int(task.dispatch_first_chunk), chunk,
                                            progress.DISPATCH_CHUNK_SIZE)
    first = int(task.dispatch_first_ordinal) if chunk == 0 else int(task.ordinal_next)
    created, skipped, used = attempts.prepare_part(task, task.dispatch_id, nodes, first, now)
    last = chunk + 1 >= int(task.dispatch_chunks)
    try:
        # a dispatch request counted its nodes when it reserved them; an attempt counts per chunk
        after = tasks.transition(
            task, "dispatch_chunk", now, event=_dispatched_event(task, created, skipped, last=last) if last else None,
            dispatch_id=task.dispatch_id, chunk=chunk, ordinal_next=first + used,
            created_count=len(created) if own else 0, skipped_count=len(skipped) if own else 0)
    except (InvalidTransition, Conflict) as lost:
        current = tasks.find(task.task_id)
        logger.info("dispatch chunk recorded by another job, or the task moved on",
                    extra={"task_id": task.task_id, "chunk": chunk, "lost": type(lost).__name__,
                           "status": current.status if current else None})
        if current is not None and current.status == TaskStatus.CANCELLED:
            cancellation.cancel_nodes(current, nodes)  # the runs just made
        return
    _after_chunk(after, created, chunk, last=last)
    if not last:
        _send(after, chunk + 1, task.dispatch_id)


def _after_chunk(task: Task, created: list[str], chunk: int, *, last: bool) -> None:
    if task.status == TaskStatus.CANCELLING:
        if last:  # cancelled while chunks made runs: the cancel job may have missed some
            jobs.enqueue(jobs.CANCEL, task.task_id, attempt=int(task.attempt))
    elif not type_registry.task_type_of(task).agent_executed and created:
        # service-executed runs: a wake-up on the work queue (the sweeper re-sends lost ones)
        work.enqueue(task.task_id, created, int(task.attempt))
    count("NodeRunsDispatched", value=len(created))
    logger.info("dispatch chunk done", extra={"task_id": task.task_id, "chunk": chunk, "created_count": len(created)})


def _send(task: Task, chunk: int, dispatch_id: str | None) -> None:
    """The continuation: task, attempt, chunk and dispatch id."""
    jobs.enqueue(jobs.DISPATCH, task.task_id, attempt=int(task.attempt), chunk=chunk, dispatch_id=dispatch_id)


def _dispatched_event(task: Task, created: list[str], skipped: list[str], *, last: bool) -> Any:
    """`task.dispatched` once the dispatch is done (its figures: the task's counts)."""
    if not last:
        return None
    attempt = int(task.attempt)
    created_count = int(task.created_count) + len(created) if progress.started(task) else len(created)
    skipped_count = int(task.skipped_count) + len(skipped) if progress.started(task) else len(skipped)
    return events.new_item(task.task_id, [service_event(
        "task.dispatched", f"attempt {attempt}: {created_count} node run(s) created, {skipped_count} skipped",
        data={"attempt": attempt, "created_count": created_count, "skipped_count": skipped_count},
    )])


#: start writes tried on a task that is still pending after a lost one (each is itself retried)
_START_ROUNDS = 3


def _start(task: Task, now: str, dispatched: Any, nodes: list[str], **figures: Any) -> bool:
    """The attempt's `start` write. A lost one re-reads the task and goes on from what it says —
    never by making the runs again: started by this dispatch (a write that landed although its
    answer was lost) → go on; started by another → nothing left to do; still pending → write
    `start` again; cancelled meanwhile → cancel the runs just made. Returns whether to go on."""
    attempt = int(task.attempt)
    for _ in range(_START_ROUNDS):
        try:
            tasks.transition(task, "start", now, event=dispatched, **figures)
            return True
        except (InvalidTransition, Conflict) as lost:
            current = tasks.get(task.task_id)
            if int(current.attempt) == attempt and int(current.dispatched_attempt) >= attempt:
                mine = current.started_at == now
                logger.info("start already written; not dispatching again",
                            extra={"task_id": task.task_id, "by_this_dispatch": mine, "lost": type(lost).__name__})
                return mine
            if current.status == TaskStatus.CANCELLING and int(current.attempt) == attempt:
                # cancelled while we created runs: the cancel job may have missed the new ones
                cancellation.cancel_runs(task.task_id, attempt, include_running=True)
                return False
            if current.status == TaskStatus.CANCELLED:
                logger.warning("runs created for a task cancelled meanwhile; cancelling them",
                               extra={"task_id": task.task_id})
                cancellation.cancel_nodes(current, nodes)
                return False
            if current.status != TaskStatus.PENDING or int(current.attempt) != attempt:
                raise
            task = current  # still ours to start: write `start` again on what the task says now
    raise Busy(f"task {task.task_id} kept changing while its dispatch started it; retry")
