"""Creating a task: validation, secrets, idempotency, one transaction."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ulid import ULID

from chalicelib import clock, secrets
from chalicelib.domain import claim_deadlines
from chalicelib.domain.records import IdempotencyRecord, Task
from chalicelib.domain.statuses import TaskStatus
from chalicelib.domain.task_types import SERVICE_NODE, SHORTEST_SECRET, TaskType, refuse_service_node
from chalicelib.errors import Conflict, IdempotencyKeyReused, IdempotencyRecordExists, ValidationFailed
from chalicelib.observability import count, logger, tracer
from chalicelib.services import concurrency, harbor_sources, selectors, twophase, type_registry
from chalicelib.services.service_events import service_event
from chalicelib.store import events, keys, tasks
from chalicelib.store.backend import TxPart
from chalicelib.store.models import ConcurrencyKeyItem
from chalicelib.validation import validate_parameters

IDEMPOTENCY_TTL_SECONDS = 24 * 3600


@dataclass(frozen=True)
class Submitted:
    task: Task
    targets: list[str]
    replayed: bool


def request_hash(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@tracer.capture_method
def submit(owner: str, body: dict[str, Any], idempotency_key: str | None,
           alongside: Callable[[Task], Sequence[TxPart]] | None = None) -> Submitted:
    """Create a task from a validated `POST /v1/tasks` body. `alongside(task)` may add writes
    to the creating transaction (they all happen or none does).

    Raises UnknownTaskType, ValidationFailed, PayloadTooLarge, IdempotencyKeyReused, and
    ConditionFailed when a write `alongside` added does not hold.
    """
    task_type, parameters, targets = _checked(body)
    fingerprint = request_hash(body)
    if idempotency_key is not None:
        replay = _replay(owner, idempotency_key, fingerprint)
        if replay is not None:
            return replay
    task = _new_task(owner, task_type, body, parameters, targets, idempotency_key)
    idempotency = None
    if idempotency_key is not None:
        idempotency = IdempotencyRecord(owner, idempotency_key, task.task_id, fingerprint,
                                        int(clock.now_epoch()) + IDEMPOTENCY_TTL_SECONDS)
    created = events.new_item(task.task_id, [service_event(
        "task.created", f"{task_type.name} on {len(targets)} node(s) by {owner}",
        data={"target_node_count": len(targets)}, at=task.created_at,
    )])
    # a task with a concurrency key takes its place in the key's queue in the same transaction
    queued = [_queue(keys.queue_entry(task))] if task.concurrency_key else []
    try:
        tasks.create(task, targets, idempotency, created, [*(alongside(task) if alongside else ()), *queued])
    except IdempotencyRecordExists:
        # a racing request with the same key won: answer with its task
        assert idempotency_key is not None
        for pause in (0.0, 0.05, 0.2, 0.5):
            time.sleep(pause)
            replay = _replay(owner, idempotency_key, fingerprint)
            if replay is not None:
                return replay
        raise Conflict("a request with this Idempotency-Key is in flight; retry") from None
    logger.info("task created", extra={"task_id": task.task_id, "type": task.type, "targets": len(targets)})
    count("TasksCreated", type=task.type)
    return Submitted(task, targets, replayed=False)


def _queue(entry: ConcurrencyKeyItem) -> TxPart:
    def put(tx: Any) -> None:
        tx.save(entry)
    return put


def _targets(task_type: TaskType, body: dict[str, Any]) -> list[str]:
    nodes: list[str] | None = body.get("target_nodes")
    if task_type.agent_executed:
        refuse_service_node(nodes or (), "$.target_nodes")
        refuse_service_node([body.get("runner_node")], "$.runner_node")
        nodes = selectors.with_selected(nodes, body.get("target_selector"))  # given nodes, then selected
        refuse_service_node(nodes or (), "$.target_selector")  # (a node registered as `service` before)
        if not nodes:
            raise ValidationFailed(
                f"target_nodes is required for {task_type.name}",
                [{"path": "$.target_nodes", "message": "required for agent-executed task types"}],
            )
        if task_type.requires_confirmation and len(nodes) > twophase.MAX_TARGETS:
            path = "$.target_selector" if body.get("target_selector") else "$.target_nodes"
            raise ValidationFailed(
                f"{task_type.name} plans and applies on one runner: give exactly one target node",
                [{"path": path, "message": f"at most {twophase.MAX_TARGETS} node for two-phase types"}],
            )
        return list(nodes)
    # (a `runner_node` would key the run to that node's agent, which never runs a service type)
    for field in ("target_nodes", "target_selector", "runner_node"):
        if body.get(field):
            raise ValidationFailed(
                f"{task_type.name} runs inside the service and takes no {field}",
                [{"path": f"$.{field}", "message": "not allowed for service-executed task types"}],
            )
    return [SERVICE_NODE]


def _max_errors(body: dict[str, Any]) -> str:
    """`max_errors` as the task stores it: "10%" or a count. JSON Schema's `integer` admits 3.0,
    which is the count 3 (stored as "3.0" it would be neither form the answers promise)."""
    max_errors = body.get("max_errors", 0)
    return str(int(max_errors)) if isinstance(max_errors, float) else str(max_errors)


def _check_max_errors(body: dict[str, Any], targets: list[str]) -> None:
    """Raises ValidationFailed for a count of tolerated failures above the number of targets (the
    schema holds a percentage to 100%): it allows no more than the target count does, so it is a
    slip (`10^30`), and the stored task would carry it as given."""
    max_errors = _max_errors(body)
    if not max_errors.endswith("%") and int(max_errors) > len(targets):
        raise ValidationFailed(
            f"max_errors {max_errors} is more than the task's {len(targets)} target node(s)",
            [{"path": "$.max_errors", "message": f"must be at most the number of target nodes ({len(targets)})"}],
        )


def split_secrets(task_type: TaskType, parameters: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the parameters with secrets masked, the secret values). Raises ValidationFailed when a
    secret value (any value inside a secret object or list) is shorter than SHORTEST_SECRET."""
    masked, secret_values = secrets.split(parameters, task_type.secret_parameters)
    short = secrets.too_short(secret_values, SHORTEST_SECRET)
    if short:
        raise ValidationFailed(
            f"secret values must be at least {SHORTEST_SECRET} characters long: a shorter one could not be "
            "masked safely in what agents send back",
            [{"path": path, "message": f"shorter than {SHORTEST_SECRET} characters"} for path in short],
        )
    return masked, secret_values


def _new_task(owner: str, task_type: TaskType, body: dict[str, Any], parameters: dict[str, Any],
              targets: list[str], idempotency_key: str | None) -> Task:
    masked, secret_values = split_secrets(task_type, parameters)
    task_id = str(ULID())
    now = clock.now_iso()
    max_errors = _max_errors(body)
    return Task(
        task_id=task_id, type=task_type.name, type_version=task_type.version, name=body.get("name"), owner=owner,
        status=TaskStatus.PENDING,
        attempt=1, priority=body.get("priority", 5),
        max_concurrency=body.get("max_concurrency") or task_type.default_max_concurrency,
        max_errors=max_errors, runner_node=body.get("runner_node"),
        concurrency_key=concurrency.default_key(task_type, parameters, body.get("concurrency_key")),
        tags=body.get("tags", []), parameters=json.dumps(masked, separators=(",", ":")),
        sealed_secrets=secrets.seal(secret_values),
        created_at=now, updated_at=now, queued_at=now, idempotency_key=idempotency_key,
        target_selector=selectors.stored(body.get("target_selector")),
        claim_timeout_seconds=int(body.get("claim_timeout_seconds", claim_deadlines.DEFAULT_SECONDS)),
    )


def _replay(owner: str, key: str, fingerprint: str) -> Submitted | None:
    record = tasks.idempotency_record(owner, key)
    if record is None:
        return None
    if record.request_hash != fingerprint:
        raise IdempotencyKeyReused(key, record.task_id)
    task = tasks.get(record.task_id)
    return Submitted(task, tasks.load_targets(task.task_id), replayed=True)


def check(body: dict[str, Any]) -> TaskType:
    """Validate a schema-valid `POST /v1/tasks` body as `submit` would, creating nothing
    (a schedule checks its task this way when it is created).

    Raises UnknownTaskType, ValidationFailed, PayloadTooLarge.
    """
    return _checked(body)[0]


def _checked(body: dict[str, Any]) -> tuple[TaskType, dict[str, Any], list[str]]:
    """The request's type, parameters and target nodes, each checked beyond the body's schema:
    the type's parameter schema, the Harbor allow-list, the targets the type takes, `max_errors`
    against them. Raises UnknownTaskType, ValidationFailed, PayloadTooLarge."""
    task_type = type_registry.current(body["type"])
    parameters = body.get("parameters") or {}
    validate_parameters(task_type, parameters)
    harbor_sources.check_task(task_type.name, parameters)
    targets = _targets(task_type, body)
    _check_max_errors(body, targets)
    return task_type, parameters, targets
