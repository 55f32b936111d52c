"""Claims: a runner leases the runs it may start, best priority first, inside each task's
concurrency window (domain/window.py)."""

from __future__ import annotations

import hmac
import random
from typing import Any

from chalicelib import clock, config, secrets
from chalicelib.domain import window
from chalicelib.domain.records import NodeRun, Task
from chalicelib.domain.statuses import RunStatus, TaskStatus
from chalicelib.errors import Unauthenticated
from chalicelib.observability import count, logger, tracer
from chalicelib.services import deregistration, liveness, type_registry
from chalicelib.store import inventory, runs, tasks
from chalicelib.store.runs import ClaimCandidate, run_id

_CANDIDATES_PER_QUERY = 25
#: the `retry_after_seconds` of an empty claim while runs of the runner are being dispatched: the
#: agent asks again this soon instead of growing its idle pause (README "What a month costs")
DISPATCH_IN_PROGRESS_RETRY_SECONDS = 1.0


def answer(node_id: str, max_runs: int, node_status: str | None = None,
           token_hash: str | None = None) -> dict[str, Any]:
    """The claim route's answer: the runs leased, and when nothing was but some of this runner's
    runs exist for a task whose dispatch has not finished, how soon to ask again.

    `token_hash`: the token the claim was authenticated with, checked again once runs are
    leased (`_hold_to_token`). Raises Unauthenticated when it is no longer the node's.
    """
    leased, dispatching = _claim(node_id, max_runs, node_status)
    if leased and token_hash is not None:
        _hold_to_token(node_id, token_hash, leased)
    claimed = [_claimed_view(task, run) for task, run in leased]
    if claimed or not dispatching:
        return {"runs": claimed}
    return {"runs": claimed, "retry_after_seconds": DISPATCH_IN_PROGRESS_RETRY_SECONDS}


def claim(node_id: str, max_runs: int, node_status: str | None = None) -> list[dict[str, Any]]:
    """Lease up to `max_runs` claimable runs whose runner is this node, best priority first."""
    return [_claimed_view(task, run) for task, run in _claim(node_id, max_runs, node_status)[0]]


def _hold_to_token(node_id: str, token_hash: str, leased: list[tuple[Task, NodeRun]]) -> None:
    """A claim authenticated before its node's token was rotated, or before the node was
    deregistered, gets nothing: its answer would hand the runs' secrets to a refused token, or
    lease them to a deleted node. The leases go back — to `pending` for the node's new token,
    or `failed` as deregistration fails a gone node's waiting runs; an apply phase is left to
    lapse, and goes back to planning (services/twophase.py). Raises Unauthenticated."""
    node = inventory.find(node_id)
    if node is not None and hmac.compare_digest(node.token_hash, token_hash):
        return
    now = clock.now_iso()
    for _, run in leased:
        if node is None:
            runs.transition(run, "fail", now, runner=node_id, error_message=deregistration.DEREGISTERED)
        elif run.phase != "apply":
            runs.transition(run, "give_back", now, runner=node_id)
    logger.warning("claim answered nothing: the node token changed meanwhile",
                   extra={"node": node_id, "runs": len(leased), "deregistered": node is None})
    raise Unauthenticated("the node token was rotated or the node deregistered while it claimed")


@tracer.capture_method
def _claim(node_id: str, max_runs: int, node_status: str | None) -> tuple[list[tuple[Task, NodeRun]], bool]:
    """The runs leased (with their tasks), and whether a candidate was passed over because its
    task's dispatch is still creating the attempt's runs.

    A node in maintenance claims only runs of the types `liveness.claimable_types` allows.
    Several agents serving one runner read the same candidates: each claim tries the runs of a
    task in a random order (priorities and tasks keep theirs, `_spread`), so the claimers do not
    all race for the same first run. The order within a task is no promise: the concurrency
    window decides which of its runs may start, and any of those may start first.
    """
    claimed: list[tuple[Task, NodeRun]] = []
    dispatching = False
    task_cache: dict[str, Task | None] = {}
    after: str | None = None
    while len(claimed) < max_runs:
        candidates = runs.claimable(node_id, after, _CANDIDATES_PER_QUERY)
        pending, past = list(candidates), [c.claim_sk for c in candidates[-1:]]
        _spread(pending)
        while pending and len(claimed) < max_runs:
            candidate = pending.pop(0)
            if candidate.task_id not in task_cache:
                task_cache[candidate.task_id] = tasks.find(candidate.task_id)
            task = task_cache[candidate.task_id]
            if task is None or not may_start(task, candidate.ordinal) or not liveness.may_claim(node_status, task.type):
                dispatching = dispatching or (task is not None and _dispatching(task))
                # nothing later of this task starts either (on this page or the next)
                past.append(f"{candidate.priority_key}#{candidate.task_id}#~")
                pending = [c for c in pending if c.task_id != candidate.task_id or c.ordinal < candidate.ordinal]
                continue
            run = _lease(task, candidate, node_id)
            if run is not None:  # else someone leased it first: try the next one
                claimed.append((task, run))
        after = max(past, default=after)
        if len(candidates) < _CANDIDATES_PER_QUERY:
            break
    if claimed:
        count("NodeRunsClaimed", value=len(claimed))
    return claimed, dispatching


def _dispatching(task: Task) -> bool:
    """The task's current attempt is being dispatched: its runs become claimable when it starts."""
    return task.status == TaskStatus.PENDING and not task.halted and int(task.dispatched_attempt) < int(task.attempt)


def _spread(pending: list[ClaimCandidate]) -> None:
    """Shuffle the candidates within each task, keeping priorities and tasks in their order."""
    rank = {task_id: i for i, task_id in enumerate(dict.fromkeys(c.task_id for c in pending))}
    pending.sort(key=lambda c: (c.priority_key, rank[c.task_id], random.random()))


def may_start(task: Task, ordinal: int) -> bool:
    """Whether a run of `task` with this ordinal may be claimed now."""
    if task.status != TaskStatus.RUNNING or task.halted or int(task.dispatched_attempt) != int(task.attempt):
        return False
    return window.may_start(ordinal, task.max_concurrency, task.counts, task.finished_base)


def _lease(task: Task, candidate: ClaimCandidate, runner: str) -> NodeRun | None:
    now = clock.now_epoch()
    task_type = type_registry.task_type_of(task)
    lease = {"runner": runner, "lease_expires_at": int(now) + config.lease_seconds(),
             "claim_sk": candidate.claim_sk, "generation": int(task.attempt), "now_epoch": now}
    if not (task_type.requires_confirmation and task.plan_confirmed):
        return runs.transition(candidate, "claim", clock.rfc3339(now), step=task_type.steps[0],
                               phase=task_type.first_phase, **lease)
    # the apply phase: only the runner holding the confirmed plan, while its reservation is live
    return runs.transition(candidate, "claim_apply", clock.rfc3339(now), step=task_type.apply_steps[0],
                           phase="apply", **lease)


def _claimed_view(task: Task, run: NodeRun) -> dict[str, Any]:
    task_type = type_registry.task_type_of(task)
    return {
        "run_id": run_id(run.task_id, run.node),
        "task_id": run.task_id,
        "node": run.node,
        "type": task.type,
        "phase": run.phase,
        "step": run.step,
        "steps": list(task_type.steps_of(run.phase)),
        #: an extension: how long the agent lets the run's steps take in all (null: its own default)
        "run_timeout_seconds": task_type.run_timeout_seconds,
        "attempt": int(run.attempt),
        "parameters": secrets.reveal(tasks.parameters_of(task), task.sealed_secrets),
        # what the agent scrubs from live output before chunking it (a secret split across two
        # chunks escapes a scrub of each chunk): the leaves the service scrubs with
        "secret_values": sorted({str(v) for v in secrets.leaves(secrets.unseal(task.sealed_secrets))}),
        "lease_expires_at": clock.rfc3339(float(run.lease_expires_at or 0)),
    }


def lease_one(task: Task, node: str, runner: str) -> NodeRun | None:
    """Lease one named pending run, under the same window and conditions as `claim` (the
    work-queue worker's claim of a service-executed run). None when it is not claimable now
    (already claimed by a duplicate delivery, finished, outside the window, task not running)."""
    run = runs.find(task.task_id, node)
    if run is None or run.claim_sk is None or run.status != RunStatus.PENDING:
        return None
    candidate = ClaimCandidate(task.task_id, node, run.claim_sk)
    if not may_start(task, candidate.ordinal):
        return None
    return _lease(task, candidate, runner)
