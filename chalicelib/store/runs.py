"""Node-run items: idempotent creation, claim, lease, completion, reset, cancel."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from pynamodb.exceptions import DoesNotExist, PynamoDBException
from pynamodb.expressions.condition import Condition
from pynamodb.expressions.update import Action

from chalicelib.domain.statuses import RunStatus
from chalicelib.domain.transitions import run_transition
from chalicelib.store.models import NodeRunItem, run_sk, task_pk
from chalicelib.store.writes import field_actions, is_condition_failure, status_in

#: parallel conditional writes during fan-out (one Lambda, I/O bound)
FANOUT_THREADS = 16


def run_id(task_id: str, node: str) -> str:
    return f"{task_id}.{node}"


def split_run_id(value: str) -> tuple[str, str]:
    task_id, _, node = value.partition(".")
    return task_id, node


def claim_keys(runner: str, priority: int, task_id: str, ordinal: int) -> tuple[str, str]:
    """Claimable runs of a runner sort by priority (10 first), then task age, then ordinal."""
    return f"RUNNER#{runner}", f"{10 - priority:02d}#{task_id}#{ordinal:06d}"


@dataclass(frozen=True)
class NewRun:
    node: str
    ordinal: int


@dataclass(frozen=True)
class RunTemplate:
    task_id: str
    type: str
    owner: str
    priority: int
    runner_node: str | None
    generation: int
    dispatch_id: str
    now: str

    def build(self, new: NewRun) -> NodeRunItem:
        runner = self.runner_node or new.node
        claim_pk, claim_sk = claim_keys(runner, self.priority, self.task_id, new.ordinal)
        return NodeRunItem(
            task_pk(self.task_id), run_sk(new.node), task_id=self.task_id, node=new.node, runner=runner,
            type=self.type, owner=self.owner, status=RunStatus.PENDING, attempt=1, generation=self.generation,
            ordinal=new.ordinal, priority=self.priority, progress=0, dispatch_id=self.dispatch_id,
            last_action="dispatch", updated_at=self.now, claim_pk=claim_pk, claim_sk=claim_sk,
        )


def create_missing(template: RunTemplate, runs: Sequence[NewRun]) -> tuple[list[str], list[str]]:
    """Create each run unless it exists. Returns (created, skipped) node lists.

    A run that exists but was created by this same dispatch (a resumed or redelivered
    dispatch) counts as created, so the figures of one dispatch never change on replay.
    """

    def put(new: NewRun) -> tuple[str, bool]:
        try:
            template.build(new).save(condition=NodeRunItem.pk.does_not_exist())
            return new.node, True
        except PynamoDBException as error:
            if not is_condition_failure(error):
                raise
        existing = find(template.task_id, new.node)
        return new.node, existing is not None and existing.dispatch_id == template.dispatch_id

    created: list[str] = []
    skipped: list[str] = []
    with ThreadPoolExecutor(max_workers=FANOUT_THREADS) as pool:
        for node, was_created in pool.map(put, runs):
            (created if was_created else skipped).append(node)
    return created, skipped


def find(task_id: str, node: str, consistent: bool = True) -> NodeRunItem | None:
    try:
        return NodeRunItem.get(task_pk(task_id), run_sk(node), consistent_read=consistent)
    except DoesNotExist:
        return None


def query(task_id: str, *, start_key: dict[str, Any] | None = None, limit: int | None = None,
          consistent: bool = False) -> Any:
    return NodeRunItem.query(
        task_pk(task_id), NodeRunItem.sk.startswith("RUN#"), limit=limit,
        last_evaluated_key=start_key, consistent_read=consistent,
    )


def iter_runs(task_id: str, status: str | None = None) -> Iterator[NodeRunItem]:
    condition = NodeRunItem.status == status if status is not None else None
    yield from NodeRunItem.query(
        task_pk(task_id), NodeRunItem.sk.startswith("RUN#"), filter_condition=condition, consistent_read=True,
    )


def claimable(runner: str, after: str | None, limit: int) -> list[NodeRunItem]:
    """Candidate claim keys of a runner, best first (eventually consistent, keys only)."""
    range_condition = NodeRunItem.claim_sk > after if after else None
    found: Any = NodeRunItem.claim_index.query(f"RUNNER#{runner}", range_condition, limit=limit)
    return list(found)


def apply(
    task_id: str,
    node: str,
    action: str,
    now: str,
    *,
    condition: Condition | None = None,
    error_message: str | None = None,
    fields: dict[str, Any] | None = None,
    extra: Sequence[Action] = (),
) -> NodeRunItem | None:
    """One run transition as one conditional write. Returns the new item, or None when the
    run was not in an allowed status or the extra condition did not hold."""
    item, actions, guard = transition_write(task_id, node, action, now, condition=condition,
                                            error_message=error_message, fields=fields, extra=extra)
    try:
        item.update(actions=actions, condition=guard)
    except PynamoDBException as error:
        if is_condition_failure(error):
            return None
        raise
    return item


def transition_write(
    task_id: str, node: str, action: str, now: str, *, condition: Condition | None = None,
    error_message: str | None = None, fields: dict[str, Any] | None = None, extra: Sequence[Action] = (),
) -> tuple[NodeRunItem, list[Action], Condition]:
    """The item, actions and guard of one run transition, for `apply` or a transaction."""
    change = run_transition(action, now, error_message)
    values = {**change.fields, "last_action": action, **(fields or {})}
    guard = NodeRunItem.pk.exists() & status_in(NodeRunItem, change.transition.sources)
    if condition is not None:
        guard &= condition
    return NodeRunItem(task_pk(task_id), run_sk(node)), [*field_actions(NodeRunItem, values), *extra], guard


def update_leased(task_id: str, node: str, attempt: int, runner: str, fields: dict[str, Any]) -> NodeRunItem | None:
    """Change a running run's non-status fields (heartbeat) while the caller holds its lease."""
    item = NodeRunItem(task_pk(task_id), run_sk(node))
    guard = lease_held(attempt, runner)
    try:
        item.update(actions=field_actions(NodeRunItem, fields), condition=guard)
    except PynamoDBException as error:
        if is_condition_failure(error):
            return None
        raise
    return item


def lease_held(attempt: int, runner: str) -> Condition:
    condition: Condition = (
        NodeRunItem.pk.exists()
        & (NodeRunItem.status == RunStatus.RUNNING)
        & (NodeRunItem.attempt == attempt)
        & (NodeRunItem.lease_owner == runner)
    )
    return condition


def run_concurrently(calls: Iterable[Any]) -> list[Any]:
    """Run zero-argument callables on the fan-out pool; returns their results in order."""
    with ThreadPoolExecutor(max_workers=FANOUT_THREADS) as pool:
        return list(pool.map(lambda call: call(), calls))
