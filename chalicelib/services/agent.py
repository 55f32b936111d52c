"""The agent protocol after the claim: heartbeat, events, complete, plan-lost.

Every write is a transition of the run table guarded by the caller's lease (or, for a
planned run, its reservation): a stale attempt is refused with LeaseLost.
"""

from __future__ import annotations

import functools
from dataclasses import replace
from typing import Any

from chalicelib import clock, config, secrets
from chalicelib.domain.records import NodeRun
from chalicelib.domain.run_transitions import OUTCOME_ACTIONS
from chalicelib.domain.statuses import RunStatus
from chalicelib.errors import LeaseLost, NotFound
from chalicelib.observability import count, logger, tracer
from chalicelib.services import twophase
from chalicelib.services.run_output import FINAL_EVENTS_BYTES, pack_final_events, store_output
from chalicelib.store import events, runs, tasks
from chalicelib.store.runs import run_id, split_run_id


def _runner_run(run_id_value: str, node_id: str) -> NodeRun:
    """The run, when this node is its runner; another node's run is reported as not found."""
    run = runs.find(*split_run_id(run_id_value))
    if run is None or run.runner != node_id:
        raise NotFound(f"run {run_id_value} not found")
    return run


def heartbeat(node_id: str, run_id_value: str, attempt: int, progress: int | None, step: str | None) -> dict[str, Any]:
    """Extend the lease; tell the agent whether to stop. Raises LeaseLost, NotFound."""
    task_id, node = split_run_id(run_id_value)
    now = clock.now_epoch()
    ref = runs.RunKey(task_id, node, attempt)
    if step:  # it becomes the run's step and the task's stage: never a secret the agent echoed
        step = secrets.redact(step, _secret_values(task_id))
    run = runs.transition(ref, "heartbeat", clock.rfc3339(now), runner=node_id, progress=progress, step=step,
                          lease_expires_at=int(now) + config.lease_seconds())
    if run is None:
        reserved = twophase.heartbeat(ref, node_id)
        if reserved is not None:  # an `apply_pending` run: the runner keeps its plan reservation
            return reserved
        current = _runner_run(run_id_value, node_id)
        raise LeaseLost(run_id_value, current.status, int(current.attempt))
    return {
        "lease_expires_at": clock.rfc3339(float(run.lease_expires_at or 0)),
        "cancel_requested": bool(run.cancel_requested),
    }


def heartbeat_unless_fresh(node_id: str, run_id_value: str, attempt: int, progress: int | None,
                           step: str | None) -> dict[str, Any]:
    """A heartbeat that writes only when it has something to record: when the run's progress or
    step changed, or less than half of its lease is left. A lease with more than half left and
    nothing new is answered from a strongly consistent read (1 read unit instead of the run's write):
    `lease_expires_at` is then the stored expiry, so the agent comes back
    sooner, before half the lease is gone. Anything else (another attempt, a plan reservation, a
    lost lease) goes through `heartbeat`. Raises LeaseLost, NotFound."""
    task_id, node = split_run_id(run_id_value)
    run = runs.find(task_id, node)
    if run is not None and _fresh(run, node_id, attempt, progress, step):
        return {"lease_expires_at": clock.rfc3339(float(run.lease_expires_at or 0)),
                "cancel_requested": bool(run.cancel_requested)}
    return heartbeat(node_id, run_id_value, attempt, progress, step)


def _fresh(run: NodeRun, node_id: str, attempt: int, progress: int | None, step: str | None) -> bool:
    if run.status != RunStatus.RUNNING or run.lease_owner != node_id or run.runner != node_id:
        return False
    if int(run.attempt) != attempt or run.lease_expires_at is None:
        return False
    if progress is not None and progress != int(run.progress or 0):
        return False
    if step and secrets.redact(step, _secret_values(run.task_id)) != run.step:
        return False
    return float(run.lease_expires_at) - clock.now_epoch() > config.lease_seconds() / 2


def record_events(node_id: str, run_id_value: str, attempt: int, batch: list[dict[str, Any]]) -> int:
    """Append an agent's events (one write). Raises LeaseLost for another attempt."""
    run = _runner_run(run_id_value, node_id)
    if int(run.attempt) != attempt:
        raise LeaseLost(run_id_value, run.status, int(run.attempt))
    if batch:
        events.append(run.task_id, _clean_events(run, batch, _secret_values(run.task_id)), node=run.node)
    return len(batch)


@functools.lru_cache(maxsize=1024)
def _task_facts(task_id: str) -> tuple[str, Any, int]:
    """A task's type, sealed secrets and type version: set at submit and never changed, so a warm
    Lambda reads them once per task instead of once per completion and per batch of events.
    Raises NotFound."""
    task = tasks.get(task_id, consistent=False)
    return str(task.type), task.sealed_secrets, int(task.type_version)


@functools.lru_cache(maxsize=1024)
def _secret_values(task_id: str) -> tuple[str, ...]:
    """The task's secret parameter values: whatever an agent sends back is scrubbed of them."""
    return tuple(str(value) for value in secrets.leaves(secrets.unseal(_task_facts(task_id)[1])))


def secret_values(task_id: str) -> tuple[str, ...]:
    """The task's secret values (cached per task): every agent route scrubs what it is sent of them.
    Raises NotFound."""
    return _secret_values(task_id)


def _single_phase(task_id: str) -> bool:
    """The task exists and its runs finish in one phase (no plan waits for a confirmation)."""
    try:
        task_type, _, version = _task_facts(task_id)
        return not twophase.is_two_phase(task_type, version)
    except NotFound:
        return False


def reset() -> None:
    """Forget the cached task facts (tests reuse task ids across stores)."""
    _task_facts.cache_clear()
    _secret_values.cache_clear()


def clean_events(run: NodeRun | runs.RunKey, batch: list[dict[str, Any]],
                 secret_values: tuple[str, ...]) -> list[dict[str, Any]]:
    """An agent's events as stored: stamped, attributed to the run's node and attempt, scrubbed."""
    return _clean_events(run, batch, secret_values)


def _clean_events(run: NodeRun | runs.RunKey, batch: list[dict[str, Any]],
                  secret_values: tuple[str, ...]) -> list[dict[str, Any]]:
    now = clock.now_iso()
    cleaned = [
        {
            "at": now, "type": event.get("type", "info"), "step": event.get("step"), "node": run.node,
            "message": event.get("message", ""), "progress": event.get("progress"), "data": event.get("data") or {},
            "attempt": int(run.attempt),
        }
        for event in batch
    ]
    redacted: list[dict[str, Any]] = secrets.redact(cleaned, secret_values)
    return redacted


@tracer.capture_method
def complete(node_id: str, run_id_value: str, attempt: int, status: str, error_message: str | None,
             output: str | None, batch: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Finish a leased run. A repeated identical call answers the same; a stale one raises LeaseLost."""
    task_id, node = split_run_id(run_id_value)
    current: NodeRun | runs.RunKey
    if status == RunStatus.SUCCEEDED and _single_phase(task_id):
        # the common outcome needs no read: it depends on nothing stored but the lease, which the
        # write's guard checks (a run of another runner, or another attempt, fails it: see below)
        current, planned = runs.RunKey(task_id, node, attempt), False
    else:
        current = _runner_run(run_id_value, node_id)
        if current.cancel_requested and (status == RunStatus.FAILED or current.phase == "plan"):
            status = RunStatus.CANCELLED  # a plan finished for a cancelled task waits for nobody
        planned = status == RunStatus.SUCCEEDED and current.phase == "plan" and not _single_phase(task_id)
    secret_values = _secret_values(task_id) if (error_message or output or batch) else ()
    completion = store_output(task_id, node, attempt, secrets.redact(output, secret_values))
    separate = batch or []
    if batch:
        packed = pack_final_events(_clean_events(current, batch, secret_values))
        if len(packed) <= FINAL_EVENTS_BYTES:  # the run item stays within one write unit
            completion["final_events"], separate = packed, []
    ref = replace(current, attempt=attempt)  # the lease guard checks the caller's attempt
    if planned:  # the plan step: the run waits for confirmation, reserved to this runner
        assert isinstance(ref, NodeRun)  # a plan's completion reads the run first
        run = twophase.finish_plan(ref, node_id, completion)
    else:
        run = runs.transition(ref, OUTCOME_ACTIONS[status], clock.now_iso(), runner=node_id,
                              error_message=secrets.redact(error_message, secret_values), completion=completion)
    if run is None:
        latest = runs.find(task_id, node)
        if latest is None or latest.runner != node_id:
            raise NotFound(f"run {run_id_value} not found")
        same = int(latest.attempt) == attempt and latest.lease_owner == node_id
        expected = RunStatus.APPLY_PENDING if planned else status
        if same and latest.status == expected:
            return {"run": _done_view(latest), "replayed": True}
        raise LeaseLost(run_id_value, latest.status, int(latest.attempt))
    if separate:
        events.append(run.task_id, _clean_events(run, separate, secret_values), node=run.node)
    count("NodeRunsFinished", status=status)
    logger.info("run finished", extra={"task_id": task_id, "node": node, "status": status, "attempt": attempt})
    return {"run": _done_view(run), "replayed": False}


def _done_view(run: NodeRun) -> dict[str, Any]:
    return {"run_id": run_id(run.task_id, run.node), "status": run.status, "attempt": int(run.attempt)}


def plan_lost(node_id: str, run_id_value: str, attempt: int) -> None:
    """The runner no longer has the plan context of its `apply_pending` run: plan again.
    Raises NotFound, InvalidTransition (not apply_pending), LeaseLost (another attempt)."""
    twophase.plan_lost(_runner_run(run_id_value, node_id), node_id, attempt)
