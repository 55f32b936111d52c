"""The work queue: runs of the task types the service executes itself (`images.sync`).

The dispatch job sends one wake-up per run it made claimable; the sweeper sends another for
a service run still pending after the grace period (a crash between the two writes, or an
expired lease). The worker claims the named run with the conditional write an agent's claim
uses, so a duplicate or late delivery finds nothing to claim and does nothing. It runs the
type's executor under a lease it keeps extending, records events and completes the run as
an agent would: same attempts, same stale-attempt rejection, same idempotent completion.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any, Final

from chalicelib import config, queues, secrets
from chalicelib.domain.records import Task
from chalicelib.domain.statuses import RunStatus
from chalicelib.domain.task_types import SERVICE_NODE
from chalicelib.errors import LeaseLost, Stopped
from chalicelib.executors.base import Lease, Outcome
from chalicelib.observability import bind, count, logger, tracer
from chalicelib.services import agent, claims, image_sync, type_registry
from chalicelib.store import runs, tasks
from chalicelib.store.runs import run_id

EXECUTE: Final = "execute"
Executor = Callable[[dict[str, Any], Lease], Outcome]
#: the executor of each service-executed type
EXECUTORS: Final[dict[str, Executor]] = {"images.sync": image_sync.execute}


def enqueue(task_id: str, nodes: Iterable[str], attempt: int) -> None:
    """Wake the worker for each run (ten per SendMessageBatch). Raises EnqueueFailed."""
    jobs = [{"job": EXECUTE, "task_id": task_id, "node": n, "attempt": attempt} for n in nodes]
    queues.send_batch(config.work_queue_url(), jobs, "work job")


def wake_pending(task: Task) -> int:
    """The sweeper's backstop: a wake-up for each pending run of a service-executed task."""
    if type_registry.task_type_of(task).agent_executed:
        return 0
    pending = [run.node for run in runs.iter_runs(task.task_id, RunStatus.PENDING)]
    if pending:
        enqueue(task.task_id, pending, int(task.attempt))
        logger.info("service runs woken again", extra={"task_id": task.task_id, "runs": len(pending)})
    return len(pending)


@tracer.capture_method
def handle_job(job: dict[str, Any]) -> None:
    """Claim, execute and complete one service run. Duplicates and stale jobs are no-ops."""
    task_id, node = job.get("task_id"), job.get("node") or SERVICE_NODE
    if not isinstance(task_id, str) or job.get("job") != EXECUTE:
        logger.warning("not a work job; dropped", extra={"job": job})
        return
    bind(task_id=task_id)
    task = tasks.find(task_id)
    executor = EXECUTORS.get(task.type) if task is not None else None
    if task is None or executor is None:
        logger.warning("work job for no service-executed task; dropped", extra={"job": job})
        return
    run = claims.lease_one(task, node, SERVICE_NODE)
    if run is None:
        logger.info("run not claimable (a duplicate delivery, or already claimed or finished)", extra={"job": job})
        return
    count("ServiceRunsStarted", type=task.type)
    lease = RunLease(run_id(task_id, node), int(run.attempt), type_registry.task_type_of(task).steps[0])
    try:
        outcome = executor(secrets.reveal(tasks.parameters_of(task), task.sealed_secrets), lease)
    except Stopped as stop:
        if not stop.cancelled:
            logger.warning("lease lost while executing; the newer attempt owns the run", extra={"job": job})
            return
        outcome = Outcome("cancelled", "cancelled while running")
    except Exception:
        logger.exception("service executor failed", extra={"type": task.type})
        outcome = Outcome("failed", f"{task.type} failed with an internal error; it has been logged")
    try:
        agent.complete(SERVICE_NODE, lease.run_id, lease.attempt, outcome.status, outcome.error_message,
                       outcome.output, outcome.events)
    except LeaseLost:
        logger.warning("lease lost before completion; the newer attempt owns the run", extra={"job": job})


class RunLease:
    """The lease of a claimed service run: heartbeats at most every third of the lease."""

    def __init__(self, run_id_value: str, attempt: int, step: str,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.run_id, self.attempt, self.step = run_id_value, attempt, step
        self._clock = clock
        self._last = clock()

    def progress(self, percent: int, step: str | None = None) -> None:
        if self._clock() - self._last < config.lease_seconds() / 3:
            return
        self._last = self._clock()
        try:
            answer = agent.heartbeat(SERVICE_NODE, self.run_id, self.attempt, max(0, min(100, percent)), step)
        except LeaseLost:
            raise Stopped(cancelled=False) from None
        if answer["cancel_requested"]:
            raise Stopped(cancelled=True)

    def event(self, type_: str, message: str, data: dict[str, Any] | None = None) -> None:
        try:
            agent.record_events(SERVICE_NODE, self.run_id, self.attempt,
                                [{"type": type_, "step": self.step, "message": message, "data": data or {}}])
        except LeaseLost:
            raise Stopped(cancelled=False) from None
