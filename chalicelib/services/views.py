"""The public representations of API.md (tasks, runs, nodes), built from records."""

from __future__ import annotations

import json
from typing import Any

from chalicelib import clock
from chalicelib.domain import dispatch_progress, rules
from chalicelib.domain.records import Node, NodeRun, Task
from chalicelib.domain.statuses import RunStatus, TaskStatus
from chalicelib.store.runs import run_id


def task_view(task: Task, targets: list[str]) -> dict[str, Any]:
    progress = rules.progress(int(task.progress_sum), int(task.target_count))
    if task.status == TaskStatus.COMPLETED:
        progress = 100
    return {
        "task_id": task.task_id,
        "type": task.type,
        "type_version": int(task.type_version),
        "name": task.name,
        "owner": task.owner,
        "status": task.status,
        "stage": task.stage,
        "progress": progress,
        "target_nodes": targets,
        "parameters": json.loads(task.parameters or "{}"),
        "tags": list(task.tags or []),
        "priority": int(task.priority),
        "max_concurrency": int(task.max_concurrency),
        "max_errors": rules.max_errors_value(task.max_errors),
        "concurrency_key": task.concurrency_key,
        "runner_node": task.runner_node,
        "target_selector": json.loads(task.target_selector) if task.target_selector else None,
        "claim_timeout_seconds": int(task.claim_timeout_seconds),
        "waiting_for": {"task_id": task.waiting_for_task_id, "owner": task.waiting_for_owner}
        if task.waiting_for_task_id else None,
        "attempt": int(task.attempt),
        "node_counts": dict(task.counts),
        "dispatch": {
            "triggered": bool(task.dispatch_triggered),
            "state": dispatch_progress.state(task),
            "target_node_count": int(task.target_count),
            "created_count": int(task.created_count),
            "skipped_count": int(task.skipped_count),
        },
        "error_message": task.error_message,
        "created_at": task.created_at,
        "started_at": task.started_at,
        "completed_at": task.completed_at,
        "updated_at": task.updated_at,
        # grows with every write of the task item (its transitions `ver`, the counters' `counted_ver`)
        "revision": int(task.ver) + int(task.counted_ver),
    }


def run_view(run: NodeRun) -> dict[str, Any]:
    return {
        "run_id": run_id(run.task_id, run.node),
        "task_id": run.task_id,
        "node": run.node,
        "runner": run.runner,
        "status": run.status,
        "attempt": int(run.attempt),
        "progress": int(run.progress or 0),
        "step": run.step,
        "phase": run.phase,
        "error_message": run.error_message,
        "started_at": run.started_at,
        "completed_at": run.completed_at,
        # every change of the run stamps it: a client keeps the later of a read and a push
        "updated_at": run.updated_at,
        "lease_expires_at": clock.rfc3339(float(run.lease_expires_at)) if run.lease_expires_at else None,
        # two-phase runs: who holds the plan, until when, and whether the apply was confirmed
        "reservation": {
            "runner": run.reservation_owner,
            "expires_at": clock.rfc3339(float(run.reservation_expires_at)),
            "confirmed": bool(run.confirmed),
        } if run.status == RunStatus.APPLY_PENDING and run.reservation_expires_at else None,
    }


def node_view(node: Node) -> dict[str, Any]:
    return {
        "node_id": node.node_id,
        "labels": dict(node.labels),
        "slots": int(node.slots),
        "status": node.status,
        "last_seen_at": node.last_seen_at,
        "created_at": node.created_at,
        "status_changed_at": node.status_changed_at,
        "allocation": {"allocation_id": node.allocation_id, "user": node.allocated_to, "started_at": node.allocated_at}
        if node.allocation_id else None,
        "reclaim": {
            "task_id": node.reclaim_task_id, "user": node.reclaim_user, "outcome": node.reclaim_outcome or "running",
        } if node.reclaim_task_id else None,
        "offline_since": node.offline_since,
        "offline_from": node.offline_from,
    }
