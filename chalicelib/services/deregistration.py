"""Deregistering a node (API.md "Agents and nodes", `DELETE /v1/nodes/{id}`).

The node item goes first: its token hash goes with it, so the token is refused from that
write on (and the id may be registered again). Then every active task is handed to a job on
the dispatch queue (`node_gone`), which looks at it once, as the sweeper does (a task the node
is the runner of, a group of its run partitions per job, as a cancel goes): the runs this node
would run — waiting for it, or for the apply of a plan it held — end `failed` (`node
deregistered`), and the runs it is running are asked to cancel. Its agent can no longer hear
that request (its token is refused): those runs end when their lease lapses, and the sweeper
never offers a run that was asked to cancel again.

Each run write is the transition table's, guarded by the attempt it was decided from, so a
claim, a completion or a retry racing the deregistration wins or loses cleanly, and the
stream counts every run exactly once. A claim that was authenticated just before the node
went away checks the token again after its writes (services/claims.py): no run stays
leased to a deleted node.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from chalicelib import clock
from chalicelib.domain import window
from chalicelib.domain.records import NodeRun, Task
from chalicelib.domain.statuses import RunStatus
from chalicelib.domain.task_types import SERVICE_NODE
from chalicelib.observability import logger
from chalicelib.services import jobs
from chalicelib.services.service_events import service_event
from chalicelib.store import events, inventory, runs, tasks

#: the error of a run whose runner was deregistered before it could run it
DEREGISTERED = "node deregistered"
_WAITING = (RunStatus.PENDING, RunStatus.APPLY_PENDING)


@dataclass(frozen=True)
class Deregistered:
    node_id: str
    #: active tasks whose runs of the node end in the background (one dispatch-queue job each)
    tasks_to_check: int


def deregister(node_id: str) -> Deregistered:
    """Delete the node (its token fails at once, its open allocation ends), then hand each
    active task to a job that ends the node's runs in it: the request does not grow with the
    runs (a node that runs a 10,000-node task on behalf of its targets) beyond one message per
    ten active tasks.

    Raises NotFound, Conflict (the node changed meanwhile: retry), Busy, EnqueueFailed (the
    node is gone; the sweeper's claim timeouts end what its runs were waiting for).
    """
    inventory.remove(inventory.get(node_id), clock.now_iso())
    # a node registered as `service` before that id was reserved (refused every agent route since):
    # the runs named for `service` are those the service executes itself, and they go on
    active = [] if node_id == SERVICE_NODE else list(tasks.iter_active())
    jobs.enqueue_batch([{"job": jobs.NODE_GONE, "task_id": task_id, "node": node_id} for task_id in active])
    logger.info("node deregistered", extra={"node": node_id, "tasks_to_check": len(active)})
    return Deregistered(node_id, len(active))


def end_runs_of(task_id: str, node_id: str, partition: int = 0) -> tuple[int, int]:
    """The `node_gone` job: in one task, the runs waiting for the deregistered node end `failed`
    and those it runs are asked to cancel. Returns (failed, asked to cancel). Idempotent: a run
    already ended or asked is left as it is. Raises what the store raises (the job is retried).

    The runner of a task runs every run of it: a job goes through a group of its run partitions
    (about jobs.RUNS_PER_JOB runs) and hands the next group to a job of its own."""
    task = tasks.find(task_id)
    if task is None:
        return 0, 0
    if task.runner_node == node_id:
        group, shards = jobs.partition_group(task, partition)
        found = list(runs.iter_runs(task_id, partitions=group))
        if group.stop < shards:
            jobs.enqueue(jobs.NODE_GONE, task_id, node=node_id, partition=group.stop)
    else:
        found = _own_run(task, node_id)
    failed, asked = _end(task, node_id, [r for r in found if int(r.generation) == int(task.attempt)])
    if failed or asked:
        logger.info("runs of a deregistered node ended", extra={"task_id": task_id, "node": node_id,
                                                               "failed": failed, "cancel_requested": asked})
    return failed, asked


def _own_run(task: Task, node_id: str) -> list[NodeRun]:
    """The node's own run of a task it is not the runner of (none when another node runs them)."""
    if task.runner_node is not None:
        return []
    run = runs.find(task.task_id, node_id)
    return [run] if run is not None else []


def _end(task: Task, node_id: str, found: list[NodeRun]) -> tuple[int, int]:
    now = clock.now_iso()
    waiting = [r for r in found if r.status in _WAITING]
    running = [r for r in found if r.status == RunStatus.RUNNING and r.lease_owner == node_id
               and not r.cancel_requested]
    _keep_window(task, waiting, now)
    calls: list[Callable[[], Any]] = [
        *(partial(runs.transition, r, "orphan", now, error_message=DEREGISTERED, generation=int(task.attempt))
          for r in waiting),
        *(partial(runs.transition, r, "request_cancel", now, runner=node_id) for r in running),
    ]
    results = runs.run_concurrently(calls)
    failed = sum(1 for r in results[:len(waiting)] if r is not None)
    asked = sum(1 for r in results[len(waiting):] if r is not None)
    if failed or asked:
        events.append(task.task_id, [service_event(
            "node.deregistered", f"{node_id} was deregistered: {failed} run(s) failed, {asked} asked to cancel",
            type_="warning", node=node_id, data={"failed": failed, "cancel_requested": asked})])
    return failed, asked


def _keep_window(task: Task, waiting: list[NodeRun], now: str) -> None:
    """Runs failed before their turn would each release one more run than the concurrency
    window allows (domain/window.py): the window narrows by as many first. Done before the
    runs fail, so a failure in between leaves it narrower, never wider (a stalled window is
    reopened by the sweeper); counts the stream has not applied yet err the same way."""
    released = window.released(task.max_concurrency, task.counts, task.finished_base)
    early = sum(1 for r in waiting if r.status == RunStatus.PENDING and int(r.ordinal) >= released)
    if early:
        tasks.update_quietly(task, "narrow_window", now, shift=early)
