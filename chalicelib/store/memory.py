"""An in-memory backend for the task and run repositories: the service rules' unit tests run
on it in milliseconds. It keeps the DynamoDB backend's contract (tests/contract): guarded
writes evaluated on the stored values, all-or-nothing transactions, idempotent creation,
claimable runs sorted by claim key, and `conflict_next` to make the next write fail with a
transaction conflict as DynamoDB may.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict
from typing import Any

from chalicelib.domain.records import IdempotencyRecord, NodeRun, Task, from_values
from chalicelib.domain.writes import Change
from chalicelib.errors import ConditionFailed, IdempotencyRecordExists
from chalicelib.store import run_partitions
from chalicelib.store.backend import EventBatch, LeaseWatch, first_look


class MemoryBackend:
    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.tasks: dict[str, dict[str, Any]] = {}
        self.targets: dict[str, list[str]] = {}
        #: the targets as the chunks DynamoDB stores them (each growth starts a new chunk)
        self.chunks: dict[str, list[list[str]]] = {}
        self.runs: dict[tuple[str, str], dict[str, Any]] = {}
        self.events: list[EventBatch] = []
        self.idempotency: dict[tuple[str, str], IdempotencyRecord] = {}
        #: how many of the next writes fail as if another transaction held the item
        self.conflict_next = 0
        #: the lease watches by (shard, sort key) (domain/due.py)
        self.lease_watches_by_key: dict[tuple[int, str], LeaseWatch] = {}
        #: the partition each run was made in (store/run_partitions.py): listings by partition
        self.run_pks: dict[tuple[str, str], str] = {}
        #: every change applied, in order (tests read what was written)
        self.log: list[Change] = []

    # --- tasks ---
    def get_task(self, task_id: str, consistent: bool = True) -> Task | None:
        with self._lock:
            values = self.tasks.get(task_id)
            return from_values(Task, values) if values is not None else None  # type: ignore[no-any-return]

    def run_layout(self, task_id: str) -> run_partitions.Layout:
        task = self.get_task(task_id)
        if task is None:
            return run_partitions.Layout(task_id)
        return run_partitions.Layout.of(task_id, task)

    def create_task(self, task: Task, targets: Sequence[str], idempotency: IdempotencyRecord | None,
                    event: EventBatch, alongside: Sequence[Any] = ()) -> None:
        if alongside:
            raise NotImplementedError("the memory backend takes no DynamoDB transaction parts")
        with self._lock:
            key = (idempotency.owner, idempotency.key) if idempotency is not None else None
            if key is not None and key in self.idempotency:
                raise IdempotencyRecordExists(f"idempotency record {key} exists")
            if task.task_id in self.tasks:
                raise ConditionFailed(f"task {task.task_id} exists")
            if key is not None and idempotency is not None:
                self.idempotency[key] = idempotency
            values = asdict(task)
            values.update(active_pk="ACTIVE", active_sk=task.task_id)
            values["due_pk"], values["due_sk"] = first_look(task)
            self.tasks[task.task_id] = values
            self.targets[task.task_id] = list(targets)
            self.chunks[task.task_id] = _chunked(targets)
            self.events.append(event)

    def get_idempotency(self, owner: str, key: str) -> IdempotencyRecord | None:
        with self._lock:
            return self.idempotency.get((owner, key))

    def load_targets(self, task_id: str) -> list[str]:
        with self._lock:
            return list(self.targets.get(task_id, []))

    def load_targets_of(self, chunks: Mapping[str, int]) -> dict[str, list[str]]:
        with self._lock:
            return {task_id: list(self.targets.get(task_id, [])) for task_id in chunks}

    def add_targets(self, change: Change, task_id: str, nodes: Sequence[str], first_chunk: int) -> None:
        with self._lock:
            self.commit([change])
            self.targets.setdefault(task_id, []).extend(nodes)
            self.chunks.setdefault(task_id, []).extend(_chunked(nodes))

    def load_target_chunk(self, task_id: str, number: int) -> list[str]:
        with self._lock:
            found = self.chunks.get(task_id, [])
            return list(found[number]) if 0 <= number < len(found) else []

    def active_task_ids(self) -> Iterator[str]:
        with self._lock:
            found = sorted(t for t, values in self.tasks.items() if values.get("active_pk"))
        yield from found

    def due_entries(self, due_pk: str, upto: str, limit: int) -> list[tuple[str, str | None, str]]:
        with self._lock:
            items = [*((t, None, v) for t, v in self.tasks.items()), *((t, n, v) for (t, n), v in self.runs.items())]
            found = sorted((v["due_sk"], t, n) for t, n, v in items
                           if v.get("due_pk") == due_pk and v["due_sk"] <= upto)
        return [(t, n, sk) for sk, t, n in found[:limit]]

    # --- lease watches ---
    def put_lease_watches(self, watches: Sequence[LeaseWatch]) -> None:
        with self._lock:
            self.lease_watches_by_key.update(((w.shard, w.sk), w) for w in watches)

    def lease_watches(self, shard: int, upto: str, limit: int) -> list[LeaseWatch]:
        with self._lock:
            found = [w for (number, sk), w in self.lease_watches_by_key.items() if number == shard and sk <= upto]
        return sorted(found, key=lambda w: w.sk)[:limit]

    def delete_lease_watches(self, watches: Sequence[LeaseWatch]) -> None:
        with self._lock:
            for watch in watches:
                self.lease_watches_by_key.pop((watch.shard, watch.sk), None)

    # --- runs ---
    def get_run(self, task_id: str, node: str, consistent: bool = True) -> NodeRun | None:
        with self._lock:
            values = self.runs.get((task_id, node))
            return from_values(NodeRun, values) if values is not None else None  # type: ignore[no-any-return]

    def get_runs(self, keys: Sequence[tuple[str, str]]) -> list[NodeRun]:
        with self._lock:
            return [from_values(NodeRun, self.runs[key]) for key in keys if key in self.runs]

    def put_run_if_absent(self, run: NodeRun) -> bool:
        with self._lock:
            if (run.task_id, run.node) in self.runs:
                return False
            self.runs[(run.task_id, run.node)] = asdict(run)
            self.run_pks[(run.task_id, run.node)] = self.run_layout(run.task_id).new_pk(run.node)
            return True

    def runs_of(self, task_id: str, status: str | None = None,
                partitions: range | None = None) -> Iterator[NodeRun]:
        pks = self.run_layout(task_id).pks()
        wanted = set(pks if partitions is None else pks[partitions.start:partitions.stop])
        with self._lock:
            found = [
                from_values(NodeRun, values) for (t, node), values in sorted(self.runs.items())
                if t == task_id and (status is None or values.get("status") == status)
                and self.run_pks[(t, node)] in wanted
            ]
        yield from found

    def claimable(self, runner: str, after: str | None, limit: int) -> list[tuple[str, str, str]]:
        with self._lock:
            found = sorted(
                (values["claim_sk"], t, node) for (t, node), values in self.runs.items()
                if values.get("claim_pk") == f"RUNNER#{runner}" and values.get("claim_sk")
                and (after is None or values["claim_sk"] > after)
            )
        return [(t, node, claim_sk) for claim_sk, t, node in found[:limit]]

    # --- events ---
    def put_events(self, batch: EventBatch) -> None:
        with self._lock:
            self.events.append(batch)

    # --- changes ---
    def _items(self, change: Change) -> dict[Any, dict[str, Any]]:
        if change.kind == "task":
            return self.tasks
        if change.kind == "run":
            return self.runs  # type: ignore[return-value]
        raise ValueError(f"no item kind {change.kind!r} here")

    def _key(self, change: Change) -> Any:
        return change.key[0] if change.kind == "task" else tuple(change.key)

    def _conflict(self) -> None:
        if self.conflict_next > 0:
            self.conflict_next -= 1
            raise ConditionFailed("another transaction was writing the item", conflict=True)

    def update(self, change: Change) -> dict[str, Any] | None:
        with self._lock:
            self._conflict()
            items, key = self._items(change), self._key(change)
            current = items.get(key)
            if current is None or not change.holds(current):
                return None
            items[key] = change.applied_to(current)
            self.log.append(change)
            return dict(items[key])

    def commit(self, changes: Sequence[Change], events: Sequence[EventBatch] = ()) -> None:
        with self._lock:
            self._conflict()
            for change in changes:
                current = self._items(change).get(self._key(change))
                if current is None or not change.holds(current):
                    raise ConditionFailed(f"{change.kind} {'/'.join(change.key)}: {change.action} guard failed")
            for change in changes:
                items, key = self._items(change), self._key(change)
                items[key] = change.applied_to(items[key])
                self.log.append(change)
            self.events.extend(events)


def _chunked(nodes: Sequence[str]) -> list[list[str]]:
    from chalicelib.store.dynamo import TARGET_CHUNK_SIZE

    return [list(nodes[i:i + TARGET_CHUNK_SIZE]) for i in range(0, len(nodes), TARGET_CHUNK_SIZE)]
