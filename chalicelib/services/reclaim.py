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

from chalicelib import clock
from chalicelib.domain.node_states import RECLAIM_FAILED, NodeStatus
from chalicelib.domain.records import Task
from chalicelib.domain.statuses import TASK_TERMINAL, TaskStatus
from chalicelib.domain.writes import Change
from chalicelib.errors import Busy, ConditionFailed, Conflict, InvalidTransition, NotFound, ValidationFailed
from chalicelib.observability import logger
from chalicelib.services import submit
from chalicelib.services.service_events import service_event
from chalicelib.store import events, inventory, tasks
from chalicelib.store.backend import TxPart
from chalicelib.store.inventory import NodeKey
from chalicelib.store.stream_records import Record

TASK_TYPE = "machine.reclaim"
#: reclaims go before other work of the node
PRIORITY = 10


def start(actor: str, node_id: str, user: str | None) -> Task:
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
    if node.status == NodeStatus.MAINTENANCE and node.reclaim_outcome != RECLAIM_FAILED:
        # the table's guard refuses it too; this names the rule: from maintenance only once
        # the previous reclaim failed
        raise InvalidTransition("node", node.status, "reclaim", {NodeStatus.IDLE, NodeStatus.ALLOCATED})
    now = clock.now_iso()
    planned: list[Change] = []

    def alongside(task: Task) -> list[TxPart]:
        write = inventory.change(node, "reclaim", now, reclaim_task_id=task.task_id, reclaim_user=reclaim_user)
        planned.append(write)
        parts: list[TxPart] = inventory.parts_of(node, write)  # with the label index: out of selections
        if node.allocation_sk:
            parts.append(inventory.close_allocation_part(node_id, node.allocation_sk, now, "reclaim"))
        return parts

    body = {
        "type": TASK_TYPE, "name": f"reclaim {node_id} from {reclaim_user}", "target_nodes": [node_id],
        "parameters": {"user": reclaim_user}, "tags": ["reclaim"], "priority": PRIORITY,
    }
    try:
        result = submit.submit(actor, body, None, alongside)
    except ConditionFailed as error:
        if not planned:
            raise
        raise inventory.explain(planned[0], error) from None
    logger.info("node reclaim started", extra={"node": node_id, "user": reclaim_user, "task_id": result.task.task_id})
    return result.task


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
    if status == TaskStatus.COMPLETED:
        event = events.new_item(task_id, [service_event(
            "node.reclaimed", f"{node_id} is idle again", type_="success", node=node_id)])
        actions = ("reclaim_succeeded", "offline_reclaim_succeeded")
    else:
        event = events.new_item(task_id, [service_event(
            "node.reclaim_failed", f"{node_id} stays in maintenance: {error or status}", type_="error",
            node=node_id, data={"task_status": status})])
        actions = ("reclaim_failed", "offline_reclaim_failed")
    # a node that went offline during its reclaim stays offline; the outcome decides what it
    # returns to (`idle` on success, `maintenance` otherwise)
    for action in actions:
        try:
            inventory.transition(NodeKey(node_id), action, clock.now_iso(), task_id=task_id,
                                 parts=[lambda tx: tx.save(event)])
        except Busy:
            raise  # a transient conflict: the stream redelivers the batch
        except (InvalidTransition, Conflict, NotFound):
            continue
        logger.info("reclaim settled", extra={"task_id": task_id, "node": node_id, "status": status})
        return
    logger.info("reclaim outcome already applied or superseded", extra={"task_id": task_id, "node": node_id})


def reopened(task_id: str) -> None:
    """A failed reclaim task was retried: its node waits for the new outcome."""
    node_id = _node_of(task_id)
    if node_id is not None:
        inventory.update_quietly(NodeKey(node_id), "reclaim_reopened", clock.now_iso(), task_id=task_id)


def _node_of(task_id: str) -> str | None:
    targets = tasks.load_targets(task_id)
    return targets[0] if targets else None
