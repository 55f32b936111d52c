"""The agent protocol: claim, heartbeat, events, complete, plan-lost."""

from __future__ import annotations

import json
from typing import Any

from chalicelib import aws, clock, config, secrets
from chalicelib.domain import rules
from chalicelib.domain.statuses import RunStatus, TaskStatus
from chalicelib.domain.task_types import get_task_type
from chalicelib.errors import LeaseLost, NotFound
from chalicelib.observability import count, logger, tracer
from chalicelib.services import liveness, twophase
from chalicelib.services.views import counts_of
from chalicelib.store import events, plans, runs, tasks
from chalicelib.store.models import NodeRunItem, TaskItem
from chalicelib.store.runs import run_id, split_run_id

#: outputs larger than this go to S3 (a run item must stay small: write units are per KB)
INLINE_OUTPUT_BYTES = 1024
MAX_OUTPUT_BYTES = 64 * 1024
#: completion events up to this size travel on the run's own write (one write unit is 1 KB)
FINAL_EVENTS_BYTES = 400
_CANDIDATES_PER_QUERY = 25


@tracer.capture_method
def claim(node_id: str, max_runs: int, node_status: str | None = None) -> list[dict[str, Any]]:
    """Lease up to `max_runs` claimable runs whose runner is this node, best priority first.

    A node in maintenance claims only runs of the types `liveness.claimable_types` allows.
    """
    claimed: list[dict[str, Any]] = []
    task_cache: dict[str, TaskItem | None] = {}
    after: str | None = None
    while len(claimed) < max_runs:
        candidates = runs.claimable(node_id, after, _CANDIDATES_PER_QUERY)
        for candidate in candidates:
            after = candidate.claim_sk
            priority, task_id, ordinal = candidate.claim_sk.split("#")
            if task_id not in task_cache:
                task_cache[task_id] = tasks.find(task_id)
            task = task_cache[task_id]
            if task is None or not _may_start(task, int(ordinal)) or not liveness.may_claim(node_status, task.type):
                after = f"{priority}#{task_id}#~"  # nothing later of this task can start either
                continue
            run = _lease(task, candidate.sk.removeprefix("RUN#"), candidate.claim_sk, node_id)
            if run is not None:
                claimed.append(_claimed_view(task, run))
                if len(claimed) == max_runs:
                    break
        if len(candidates) < _CANDIDATES_PER_QUERY:
            break
    if claimed:
        count("NodeRunsClaimed", value=len(claimed))
    return claimed


def _may_start(task: TaskItem, ordinal: int) -> bool:
    if task.status != TaskStatus.RUNNING or task.halted or int(task.dispatched_attempt) != int(task.attempt):
        return False
    finished = rules.finished_count(counts_of(task))
    released = int(task.max_concurrency) + finished - int(task.finished_base)
    return ordinal < released


def _lease(task: TaskItem, node: str, claim_sk: str, runner: str) -> NodeRunItem | None:
    now = clock.now_epoch()
    task_type = get_task_type(task.type)
    claimed = (NodeRunItem.claim_sk == claim_sk) & (NodeRunItem.generation == task.attempt)
    lease = {"lease_owner": runner, "lease_expires_at": int(now) + config.lease_seconds(),
             "claim_pk": None, "claim_sk": None, "cancel_requested": False}
    if not (task_type.requires_confirmation and task.plan_confirmed):
        return runs.apply(
            task.task_id, node, "claim", clock.rfc3339(now), condition=claimed,
            fields={**lease, "progress": 0, "step": task_type.steps[0], "phase": task_type.first_phase},
        )
    # the apply phase: only the runner holding the confirmed plan, while its reservation is live
    return runs.apply(
        task.task_id, node, "claim_apply", clock.rfc3339(now),
        condition=claimed & (NodeRunItem.confirmed == True) & plans.live(now)  # noqa: E712
        & (NodeRunItem.reservation_owner == runner) & (NodeRunItem.phase == "plan"),
        fields={**lease, "step": task_type.apply_steps[0], "phase": "apply", "reservation_expires_at": None},
    )


def _claimed_view(task: TaskItem, run: NodeRunItem) -> dict[str, Any]:
    task_type = get_task_type(task.type)
    return {
        "run_id": run_id(run.task_id, run.node),
        "task_id": run.task_id,
        "node": run.node,
        "type": task.type,
        "phase": run.phase,
        "step": run.step,
        "steps": list(task_type.steps_of(run.phase)),
        "attempt": int(run.attempt),
        "parameters": secrets.reveal(tasks.parameters_of(task), task.sealed_secrets),
        "lease_expires_at": clock.rfc3339(float(run.lease_expires_at or 0)),
    }


def _runner_run(run_id_value: str, node_id: str) -> NodeRunItem:
    """The run, when this node is its runner; another node's run is reported as not found."""
    run = runs.find(*split_run_id(run_id_value))
    if run is None or run.runner != node_id:
        raise NotFound(f"run {run_id_value} not found")
    return run


def heartbeat(node_id: str, run_id_value: str, attempt: int, progress: int | None, step: str | None) -> dict[str, Any]:
    """Extend the lease; tell the agent whether to stop. Raises LeaseLost."""
    task_id, node = split_run_id(run_id_value)
    now = clock.now_epoch()
    fields: dict[str, Any] = {"lease_expires_at": int(now) + config.lease_seconds(), "updated_at": clock.rfc3339(now)}
    if progress is not None:
        fields["progress"] = progress
    if step is not None:
        fields["step"] = step
    run = runs.update_leased(task_id, node, attempt, node_id, fields)
    if run is None:
        reserved = twophase.heartbeat(task_id, node, attempt, node_id)
        if reserved is not None:  # an `apply_pending` run: the runner keeps its plan reservation
            return reserved
        raise _lease_lost(run_id_value, node_id)
    return {
        "lease_expires_at": clock.rfc3339(float(run.lease_expires_at or 0)),
        "cancel_requested": bool(run.cancel_requested),
    }


def _lease_lost(run_id_value: str, node_id: str) -> Exception:
    current = _runner_run(run_id_value, node_id)
    return LeaseLost(run_id_value, current.status, int(current.attempt))


def record_events(node_id: str, run_id_value: str, attempt: int, batch: list[dict[str, Any]]) -> int:
    """Append an agent's events (one write). Raises LeaseLost for another attempt."""
    run = _runner_run(run_id_value, node_id)
    if int(run.attempt) != attempt:
        raise LeaseLost(run_id_value, run.status, int(run.attempt))
    _append_events(run, batch, _secret_values(run.task_id))
    return len(batch)


def _secret_values(task_id: str) -> list[str]:
    """The task's secret parameter values: whatever an agent sends back is scrubbed of them."""
    task = tasks.get(task_id, consistent=False)
    return [str(v) for v in secrets.unseal(task.sealed_secrets).values()]


def _append_events(run: NodeRunItem, batch: list[dict[str, Any]], secret_values: list[str]) -> None:
    if batch:
        events.append(run.task_id, _clean_events(run, batch, secret_values))


def _clean_events(run: NodeRunItem, batch: list[dict[str, Any]], secret_values: list[str]) -> list[dict[str, Any]]:
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


_ACTIONS = {"succeeded": "succeed", "failed": "fail", "cancelled": "cancel"}


@tracer.capture_method
def complete(node_id: str, run_id_value: str, attempt: int, status: str, error_message: str | None,
             output: str | None, batch: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Finish a leased run. A repeated identical call answers the same; a stale one raises LeaseLost."""
    task_id, node = split_run_id(run_id_value)
    current = _runner_run(run_id_value, node_id)
    if current.cancel_requested and (status == RunStatus.FAILED or current.phase == "plan"):
        status = RunStatus.CANCELLED  # a plan finished for a cancelled task waits for nobody
    secret_values = _secret_values(task_id) if (error_message or output or batch) else []
    error_message = secrets.redact(error_message, secret_values)
    fields: dict[str, Any] = {"lease_expires_at": None, "final_events": None}
    fields.update(_store_output(task_id, node, attempt, secrets.redact(output, secret_values)))
    separate = batch or []
    if batch:
        packed = pack_final_events(_clean_events(current, batch, secret_values))
        if len(packed) <= FINAL_EVENTS_BYTES:  # the run item stays within one write unit
            fields["final_events"], separate = packed, []
    planned = status == RunStatus.SUCCEEDED and current.phase == "plan" and twophase.is_two_phase(current.type)
    if planned:  # the plan step: the run waits for confirmation, reserved to this runner
        run = twophase.finish_plan(current, node_id, attempt, fields)
    else:
        run = runs.apply(
            task_id, node, _ACTIONS[status], clock.now_iso(),
            condition=runs.lease_held(attempt, node_id), error_message=error_message, fields=fields,
        )
    if run is None:
        latest = runs.find(task_id, node)
        same = latest is not None and int(latest.attempt) == attempt and latest.lease_owner == node_id
        expected = RunStatus.APPLY_PENDING if planned else status
        if same and latest is not None and latest.status == expected:
            return {"run": _done_view(latest), "replayed": True}
        raise LeaseLost(run_id_value, latest.status if latest else None, int(latest.attempt) if latest else None)
    if separate:
        _append_events(run, separate, secret_values)
    count("NodeRunsFinished", status=status)
    logger.info("run finished", extra={"task_id": task_id, "node": node, "status": status, "attempt": attempt})
    return {"run": _done_view(run), "replayed": False}


def pack_final_events(cleaned: list[dict[str, Any]]) -> str:
    """Completion events as stored on the run item: only what the run item does not already say
    (node, attempt and time come from the run when the stream unpacks them)."""
    rows = [[e["type"], e["step"], e["message"], e["progress"], *([e["data"]] if e["data"] else [])] for e in cleaned]
    return json.dumps(rows, separators=(",", ":"))


def unpack_final_events(packed: str, node: str, attempt: int, at: str) -> list[dict[str, Any]]:
    return [
        {"at": at, "type": row[0], "step": row[1], "node": node, "message": row[2], "progress": row[3],
         "data": row[4] if len(row) > 4 else {}, "attempt": attempt}
        for row in json.loads(packed)
    ]


def _done_view(run: NodeRunItem) -> dict[str, Any]:
    return {"run_id": run_id(run.task_id, run.node), "status": run.status, "attempt": int(run.attempt)}


def _store_output(task_id: str, node: str, attempt: int, output: str | None) -> dict[str, Any]:
    if not output:
        return {"output": None, "output_key": None}
    data = output.encode()[-MAX_OUTPUT_BYTES:]
    if len(data) <= INLINE_OUTPUT_BYTES:
        return {"output": data.decode(errors="replace"), "output_key": None}
    key = f"outputs/{task_id}/{node}/{attempt}.txt"
    aws.client("s3").put_object(Bucket=config.outputs_bucket(), Key=key, Body=data, ContentType="text/plain")
    return {"output": data[-INLINE_OUTPUT_BYTES:].decode(errors="replace"), "output_key": key}


def plan_lost(node_id: str, run_id_value: str, attempt: int) -> None:
    """The runner no longer has the plan context of its `apply_pending` run: plan again.
    Raises NotFound, InvalidTransition (not apply_pending), LeaseLost (another attempt)."""
    twophase.plan_lost(_runner_run(run_id_value, node_id), node_id, attempt)


def lease_one(task: TaskItem, node: str, runner: str) -> NodeRunItem | None:
    """Lease one named pending run, under the same window and conditions as `claim` (the
    work-queue worker's claim of a service-executed run). None when it is not claimable now
    (already claimed by a duplicate delivery, finished, outside the window, task not running)."""
    run = runs.find(task.task_id, node)
    if run is None or run.claim_sk is None or run.status != RunStatus.PENDING:
        return None
    if not _may_start(task, int(run.claim_sk.split("#")[2])):
        return None
    return _lease(task, node, run.claim_sk, runner)
