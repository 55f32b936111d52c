"""The batched agent report (API.md "Agents and nodes", `POST /v1/agents/{node_id}/report`): in one
request, the heartbeats of every run an agent holds, the completions that are ready, and a claim.

Each item is handled on its own, exactly as its single route would handle it (`agent.heartbeat`,
`agent.complete`, `claims.answer`), and answered on its own with the status and error document that
route would have answered: a stale attempt in one item is that item's `409`, never the others'. A
throttled or conflicting item is that item's `503` (with `retry_after`); the agent retries only it.
The request itself answers `200` once the node is authenticated and the body is valid.

A heartbeat item with nothing new, while more than half of its lease is left, writes nothing
(`agent.heartbeat_unless_fresh`): the agent heartbeats every third of a lease, so about every
other heartbeat of a quiet run is a read instead of a run write.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from chalicelib.errors import FleetrunError, StoreBusy
from chalicelib.observability import logger
from chalicelib.services import agent, claims
from chalicelib.store import events
from chalicelib.store.retrying import is_conflict_or_throttle
from chalicelib.store.runs import RunKey, split_run_id

#: the HTTP status a single route answers a domain error with (the API layer's table, passed in)
StatusOf = Callable[[FleetrunError], int]


def report(node_id: str, body: dict[str, Any], status_of: StatusOf, node_status: str | None = None,
           token_hash: str | None = None) -> dict[str, Any]:
    """Answer every item of a validated report body (see the module docstring)."""
    answer: dict[str, Any] = {
        "heartbeats": [_item(item["run_id"], functools.partial(_heartbeat, node_id, item), status_of)
                       for item in body.get("heartbeats") or []],
        "completions": [_item(item["run_id"], functools.partial(_complete, node_id, item), status_of)
                        for item in body.get("completions") or []],
    }
    wanted = body.get("claim")
    if wanted is not None:
        answer["claim"] = _outcome(
            lambda: claims.answer(node_id, int(wanted.get("max", 1)), node_status, token_hash), status_of,
            reraise_auth=True,
        )
    return answer


def _heartbeat(node_id: str, item: dict[str, Any]) -> dict[str, Any]:
    attempt = item["attempt"]
    answered = agent.heartbeat_unless_fresh(node_id, item["run_id"], attempt, item.get("progress"), item.get("step"))
    batch = item.get("events") or []
    if batch:  # the lease was just confirmed for this attempt: the events need no read of the run
        task_id, node = split_run_id(item["run_id"])
        ref = RunKey(task_id, node, attempt)
        events.append(task_id, agent.clean_events(ref, batch, agent.secret_values(task_id)), node=node)
    return answered


def _complete(node_id: str, item: dict[str, Any]) -> dict[str, Any]:
    done = agent.complete(node_id, item["run_id"], item["attempt"], item["status"], item.get("error_message"),
                          item.get("output"), item.get("events"))
    return {"replayed": bool(done["replayed"])}


def _item(run_id: str, handle: Callable[[], dict[str, Any]], status_of: StatusOf) -> dict[str, Any]:
    return {"run_id": run_id, **_outcome(handle, status_of)}


def _outcome(handle: Callable[[], dict[str, Any]], status_of: StatusOf, *,
             reraise_auth: bool = False) -> dict[str, Any]:
    """`{"status": 200, ...answer}`, or `{"status": <the single route's status>, "error": {...}}`."""
    try:
        return {"status": 200, **handle()}
    except FleetrunError as error:
        status = status_of(error)
        if reraise_auth and status == 401:  # the token was rotated under the claim: the whole call is refused
            raise
        if status >= 500:
            logger.warning("report item failed", extra={"status": status, "reason": error.message})
        return {"status": status, **error.document()}
    except Exception as error:
        if is_conflict_or_throttle(error):
            return {"status": 503, **StoreBusy().document()}
        logger.exception("report item failed")
        return {"status": 500, **FleetrunError("an internal error occurred; it has been logged").document()}
