"""The node-run repository: idempotent creation, reads, claims, and transitions of the run
table (domain/run_transitions.py), each one conditional write by the backend in use."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from chalicelib import clock
from chalicelib.domain.records import NodeRun, from_values
from chalicelib.domain.run_transitions import RunInputs, claim_keys, run_change
from chalicelib.domain.statuses import RunStatus
from chalicelib.domain.writes import Change
from chalicelib.errors import ValidationFailed
from chalicelib.store import backend, run_partitions
from chalicelib.store.dynamo import run_concurrently, run_record
from chalicelib.store.models import NodeRunItem

__all__ = ["ClaimCandidate", "NewRun", "RunKey", "RunTemplate", "change", "claimable", "create_missing", "find",
           "iter_runs", "page", "run_concurrently", "run_id", "split_run_id", "transition"]


def run_id(task_id: str, node: str) -> str:
    return f"{task_id}.{node}"


def split_run_id(value: str) -> tuple[str, str]:
    task_id, _, node = value.partition(".")
    return task_id, node


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

    def build(self, new: NewRun) -> NodeRun:
        runner = self.runner_node or new.node
        claim_pk, claim_sk = claim_keys(runner, self.priority, self.task_id, new.ordinal)
        return NodeRun(
            task_id=self.task_id, node=new.node, runner=runner, type=self.type, owner=self.owner,
            status=RunStatus.PENDING, attempt=1, generation=self.generation, ordinal=new.ordinal,
            priority=self.priority, progress=0, dispatch_id=self.dispatch_id, last_action="dispatch",
            updated_at=self.now, claim_pk=claim_pk, claim_sk=claim_sk, claimable_at=clock.parse_rfc3339(self.now),
        )


def create_missing(template: RunTemplate, runs: Sequence[NewRun]) -> tuple[list[str], list[str]]:
    """Create each run unless it exists. Returns (created, skipped) node lists.

    A run that exists but was created by this same dispatch (a resumed or redelivered
    dispatch) counts as created, so the figures of one dispatch never change on replay.
    """
    store = backend.current()

    def put(new: NewRun) -> tuple[str, bool]:
        if store.put_run_if_absent(template.build(new)):
            return new.node, True
        existing = store.get_run(template.task_id, new.node)
        return new.node, existing is not None and existing.dispatch_id == template.dispatch_id

    created: list[str] = []
    skipped: list[str] = []
    for node, was_created in run_concurrently([lambda new=new: put(new) for new in runs]):
        (created if was_created else skipped).append(node)
    return created, skipped


def find(task_id: str, node: str, consistent: bool = True) -> NodeRun | None:
    return backend.current().get_run(task_id, node, consistent)


def find_many(keys: Sequence[tuple[str, str]]) -> list[NodeRun]:
    """The runs of (task id, node) `keys` that exist, read consistently (BatchGetItem)."""
    return backend.current().get_runs(keys)


def iter_runs(task_id: str, status: str | None = None, partitions: range | None = None) -> Iterator[NodeRun]:
    """The task's runs (of `status`); only those of the run partitions `partitions` when given."""
    return backend.current().runs_of(task_id, status, partitions)


def run_shards(task_id: str) -> int:
    """How many run partitions the task's new runs are spread over (store/run_partitions.py)."""
    return run_layout(task_id).current


def run_layout(task_id: str) -> run_partitions.Layout:
    """Every partition of the task's runs (store/run_partitions.py)."""
    return backend.current().run_layout(task_id)


def page(task_id: str, start_key: dict[str, Any] | None, limit: int) -> tuple[list[NodeRun], dict[str, Any] | None]:
    """One page of a task's runs: its run partitions one after the other (store/run_partitions.py),
    node order within each. The next key names the partition to resume in (the last key read, or
    the start of the next partition). Raises ValidationFailed for a key of another listing."""
    pks = run_layout(task_id).pks()
    index = _resume_partition(pks, start_key)
    items: list[NodeRun] = []
    while index < len(pks) and len(items) < limit:
        result: Any = NodeRunItem.query(pks[index], NodeRunItem.sk.startswith("RUN#"), limit=limit - len(items),
                                        last_evaluated_key=start_key)
        items.extend(run_record(item) for item in result)
        if result.last_evaluated_key is not None:
            return items, result.last_evaluated_key
        index, start_key = index + 1, None
    if index < len(pks):
        return items, {"pk": {"S": pks[index]}, "sk": {"S": "RUN#"}}  # "RUN#" sorts before every run
    return items, None


def _resume_partition(pks: list[str], start_key: dict[str, Any] | None) -> int:
    if start_key is None:
        return 0
    pk = start_key.get("pk")
    found = pk.get("S") if isinstance(pk, dict) else None
    sk = start_key.get("sk")
    if found not in pks or not isinstance(sk, dict) or not str(sk.get("S", "")).startswith("RUN#"):
        raise ValidationFailed("invalid query parameter cursor", [
            {"path": "$query.cursor", "message": "not a cursor from a previous page of this listing; start over"}])
    return pks.index(found)


@dataclass(frozen=True)
class RunKey:
    """A run known by its id and the attempt a caller holds (an agent's heartbeat needs no read)."""

    task_id: str
    node: str
    attempt: int


@dataclass(frozen=True)
class ClaimCandidate:
    """A claimable run as the claim index lists it: enough to write the claim."""

    task_id: str
    node: str
    claim_sk: str

    @property
    def priority_key(self) -> str:
        return self.claim_sk.split("#")[0]

    @property
    def ordinal(self) -> int:
        return int(self.claim_sk.split("#")[2])


def claimable(runner: str, after: str | None, limit: int) -> list[ClaimCandidate]:
    """Candidate claims of a runner, best first (eventually consistent, keys only)."""
    return [ClaimCandidate(*found) for found in backend.current().claimable(runner, after, limit)]


def change(run: Any, action: str, now: str, **inputs: Any) -> Change:
    """The write of `action` on `run` (a NodeRun as read, or anything with its placement)."""
    return run_change(action, run, RunInputs(now=now, **inputs))


def transition(run: Any, action: str, now: str, **inputs: Any) -> NodeRun | None:
    """Apply one transition as one conditional write. Returns the run after it, or None when
    it was not in an allowed status or the transition's guard did not hold.
    Raises ConditionFailed(conflict=True) when another transaction was writing it."""
    values = backend.current().update(change(run, action, now, **inputs))
    if values is None:
        return None
    record: NodeRun = from_values(NodeRun, values)
    return record
