"""Reclaiming a machine: the node goes to `maintenance` together with the `machine.reclaim`
task that cleans it (one transaction); when that task settles, the node follows it.

- success (`completed`) → the node is `idle` again (event `node.reclaimed`);
- any other terminal status → the node stays `maintenance` with `reclaim_outcome: failed` and
  the task gets a `node.reclaim_failed` event (the task itself ended `failed`, which
  notification subscribers receive as `task.failed`); a new reclaim may then be started,
  or the failed task retried (`POST /v1/tasks/{id}/retry`): its outcome counts again.

The reaction is a stream consumer of the task's META changes: every write is conditional on
the node still being reclaimed by that task, so a replayed batch changes nothing.
"""

from __future__ import annotations

from pynamodb.exceptions import PynamoDBException
from pynamodb.expressions.condition import Condition
from pynamodb.expressions.update import Action
from pynamodb.transactions import TransactWrite

from chalicelib import clock
from chalicelib.domain.node_states import NODE_TRANSITIONS, RECLAIM_FAILED, NodeStatus
from chalicelib.domain.statuses import TASK_TERMINAL, TaskStatus
from chalicelib.errors import Busy, Conflict, InvalidTransition, NotFound, ValidationFailed
from chalicelib.observability import logger
from chalicelib.services import submit
from chalicelib.services.views import service_event
from chalicelib.store import events, inventory, tasks
from chalicelib.store.inventory import TxPart
from chalicelib.store.models import EventItem, NodeItem, TaskItem, node_pk
from chalicelib.store.stream_records import Record
from chalicelib.store.writes import is_condition_failure, is_transaction_conflict

TASK_TYPE = "machine.reclaim"
#: reclaims go before other work of the node
PRIORITY = 10


def start(actor: str, node_id: str, user: str | None) -> TaskItem:
    """Put the node in `maintenance` and create its `machine.reclaim` task, atomically.

    `user` defaults to the user of the node's open allocation, which the reclaim ends (or to
    the user of the failed reclaim it repeats).
    Raises NotFound, ValidationFailed (no user to reclaim from), InvalidTransition (offline,
    or a reclaim is still running), Conflict.
    """
    node = inventory.get(node_id)
    reclaim_user = user or node.allocated_to or node.reclaim_user  # (a failed reclaim's user)
    if not reclaim_user:
        raise ValidationFailed(
            f"node {node_id} has no allocation: say whose account to reclaim",
            [{"path": "$.user", "message": "required when the node is not allocated"}],
        )
    allowed = NODE_TRANSITIONS["reclaim"].sources
    if node.status not in allowed:
        raise InvalidTransition("node", node.status, "reclaim", allowed)
    if node.status == NodeStatus.MAINTENANCE and node.reclaim_outcome != RECLAIM_FAILED:
        # from maintenance only once the previous reclaim failed
        raise InvalidTransition("node", node.status, "reclaim", {NodeStatus.IDLE, NodeStatus.ALLOCATED})
    now = clock.now_iso()
    planned: list[inventory.NodeWrite] = []

    def alongside(task: TaskItem) -> list[TxPart]:
        write = inventory.plan(node_id, "reclaim", now, condition=_unchanged(node),
                               reclaim_task_id=task.task_id, reclaim_user=reclaim_user)
        planned.append(write)
        parts: list[TxPart] = [write.add_to]
        if node.allocation_sk:
            parts.append(inventory.close_allocation_part(node_id, node.allocation_sk, now, "reclaim"))
        return parts

    body = {
        "type": TASK_TYPE, "name": f"reclaim {node_id} from {reclaim_user}", "target_nodes": [node_id],
        "parameters": {"user": reclaim_user}, "tags": ["reclaim"], "priority": PRIORITY,
    }
    try:
        result = submit.submit(actor, body, None, alongside)
    except PynamoDBException as error:
        if not planned:
            raise
        raise inventory.explain(planned[0], error) from None
    logger.info("node reclaim started", extra={"node": node_id, "user": reclaim_user, "task_id": result.task.task_id})
    return result.task


def _unchanged(node: NodeItem) -> Condition:
    """The node is still as read: same status, same open allocation, same failed reclaim."""
    condition: Condition = NodeItem.status == node.status
    if node.allocation_id:
        condition &= NodeItem.allocation_id == node.allocation_id
    else:
        condition &= NodeItem.allocation_id.does_not_exist()
    if node.status == NodeStatus.MAINTENANCE:
        condition &= NodeItem.reclaim_outcome == RECLAIM_FAILED
    return condition


# --- the task settles -------------------------------------------------------------------
def consume(records: list[Record]) -> None:
    """Stream consumer: react to `machine.reclaim` tasks that settle or are retried."""
    for record in records:
        if record.sk != "META" or not record.pk.startswith("TASK#") or record.new is None:
            continue
        if record.new_value("type") != TASK_TYPE:
            continue
        old, new = record.old_value("status"), record.new_value("status")
        if old == new:
            continue
        task_id = record.pk.removeprefix("TASK#")
        if new in TASK_TERMINAL:
            settled(task_id, str(new), record.new_value("error_message"))
        elif old in TASK_TERMINAL:
            reopened(task_id)


def settled(task_id: str, status: str, error: str | None) -> None:
    """The reclaim task `task_id` ended in `status`: move its node (idempotent)."""
    node_id = _node_of(task_id)
    if node_id is None:
        return
    now = clock.now_iso()
    if status == TaskStatus.COMPLETED:
        event = events.new_item(task_id, [service_event(
            "node.reclaimed", f"{node_id} is idle again", type_="success", node=node_id)])
        write = inventory.plan(node_id, "reclaim_succeeded", now, condition=NodeItem.reclaim_task_id == task_id)
        offline_actions: list[Action] = [
            NodeItem.offline_from.set(NodeStatus.IDLE), NodeItem.reclaim_task_id.remove(),
            NodeItem.reclaim_user.remove(), NodeItem.reclaim_outcome.remove(),
        ]
    else:
        event = events.new_item(task_id, [service_event(
            "node.reclaim_failed", f"{node_id} stays in maintenance: {error or status}", type_="error",
            node=node_id, data={"task_status": status})])
        still_running = (NodeItem.reclaim_task_id == task_id) & NodeItem.reclaim_outcome.does_not_exist()
        write = inventory.plan(node_id, "reclaim_failed", now, condition=still_running)
        offline_actions = [NodeItem.reclaim_outcome.set(RECLAIM_FAILED)]
    try:
        inventory.apply(write, [lambda tx: tx.save(event)])
    except Busy:
        raise  # a transient conflict: the stream redelivers the batch
    except (InvalidTransition, Conflict, NotFound):
        if not _settle_offline(node_id, task_id, offline_actions, event, status):
            logger.info("reclaim outcome already applied or superseded", extra={"task_id": task_id, "node": node_id})
            return
    logger.info("reclaim settled", extra={"task_id": task_id, "node": node_id, "status": status})


def _settle_offline(node_id: str, task_id: str, actions: list[Action], event: EventItem, status: str) -> bool:
    """A node that went offline during its reclaim keeps `offline`; the outcome decides what
    it returns to (`idle` on success, `maintenance` otherwise)."""
    guard = (
        NodeItem.pk.exists() & (NodeItem.status == NodeStatus.OFFLINE)
        & (NodeItem.offline_from == NodeStatus.MAINTENANCE) & (NodeItem.reclaim_task_id == task_id)
    )
    if status != TaskStatus.COMPLETED:
        guard &= NodeItem.reclaim_outcome.does_not_exist()
    try:
        with TransactWrite(connection=NodeItem._get_connection().connection) as tx:
            tx.update(NodeItem(node_pk(node_id), "META"), actions=actions, condition=guard)
            tx.save(event)
    except PynamoDBException as error:
        if is_condition_failure(error) and not is_transaction_conflict(error):
            return False
        raise
    return True


def reopened(task_id: str) -> None:
    """A failed reclaim task was retried: its node waits for the new outcome."""
    node_id = _node_of(task_id)
    if node_id is not None:
        inventory.update_quietly(node_id, [NodeItem.reclaim_outcome.remove()], NodeItem.reclaim_task_id == task_id)


def _node_of(task_id: str) -> str | None:
    targets = tasks.load_targets(task_id)
    return targets[0] if targets else None
