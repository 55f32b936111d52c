"""Why a runner did not claim a run: the sentence a run that timed out unclaimed carries
(`error_message`), and the warning a task gets at creation for runners that are not nodes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from chalicelib.domain.node_states import NodeStatus
from chalicelib.domain.records import Node, Task
from chalicelib.domain.task_types import SERVICE_NODE
from chalicelib.store import node_lookup

#: how many node ids a warning lists (its `count` says how many there are): a 10,000-node task
#: on unknown names must not make a megabyte answer
LISTED_NODES: Final = 100


def why_unclaimed(runner: str, node: Node | None, leased: int) -> str:
    """The runner's state as the reason nobody claimed its run. `node` is the runner as read
    (None: not registered, or deregistered), `leased` how many runs it holds that we know of."""
    if node is None:
        return f"runner {runner} is not a registered node"
    if node.status == NodeStatus.OFFLINE:
        return f"runner {runner} offline since {node.offline_since or node.last_seen_at or node.created_at}"
    if node.status == NodeStatus.MAINTENANCE:
        return f"runner {runner} in maintenance (it claims only its machine.reclaim run)"
    slots = int(node.slots or 1)
    if leased >= slots:
        return f"runner {runner} busy on all {slots} slots"
    return f"runner {runner} online but did not claim it (last seen {node.last_seen_at or 'never'})"


def runners_of(runner_node: str | None, targets: Sequence[str]) -> list[str]:
    """Who executes a task's runs: its delegate, else each target; none for a service-executed task."""
    if runner_node:
        return [runner_node]
    return [node for node in targets if node != SERVICE_NODE]


def warnings_of(task: Task, targets: Sequence[str]) -> list[dict[str, Any]]:
    """The create answer's `warnings`: the runners that are not registered nodes (one
    BatchGetItem per 100 runners, keys only), or [] when every runner is one. A replay's answer
    says it again as things are now (a node may have registered since)."""
    runners = runners_of(task.runner_node, targets)
    if not runners:
        return []
    known = node_lookup.registered(runners)
    unknown = sorted(node for node in set(runners) if node not in known)
    if not unknown:
        return []
    listed = ", ".join(unknown[:3]) + (", …" if len(unknown) > 3 else "")
    message = (f"{len(unknown)} runner(s) are not registered nodes ({listed}): their runs wait until the nodes "
               f"register, and end timed_out when nobody claims them within {int(task.claim_timeout_seconds)} s")
    return [{"code": "unknown_runners", "message": message, "nodes": unknown[:LISTED_NODES], "count": len(unknown)}]
