"""The DynamoDB backend of the task and run repositories (PynamoDB on the single table).

A `Change` becomes one `UpdateItem`: SET for values, REMOVE for `CLEAR`, ADD for `Add`,
guarded by `pk` existing, the status among the sources, and each predicate.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

from pynamodb.attributes import Attribute, MapAttribute
from pynamodb.exceptions import DoesNotExist, PynamoDBException
from pynamodb.expressions.condition import Condition
from pynamodb.expressions.update import Action
from pynamodb.transactions import TransactWrite

from chalicelib.domain import due, retention
from chalicelib.domain.records import IdempotencyRecord, NodeRun, Task, from_values, record_fields
from chalicelib.domain.writes import CLEAR, Add, Change, Predicate
from chalicelib.errors import ConditionFailed, IdempotencyRecordExists
from chalicelib.store import run_partitions
from chalicelib.store.backend import EventBatch, LeaseWatch, first_look
from chalicelib.store.key_parts import part
from chalicelib.store.models import (
    FleetrunModel,
    IdempotencyItem,
    LeaseWatchItem,
    NodeItem,
    NodeRunItem,
    RunCounts,
    TargetChunk,
    TaskItem,
    node_pk,
    owner_tasks_pk,
    run_sk,
    task_pk,
)
from chalicelib.store.retrying import retried
from chalicelib.store.writes import is_condition_failure, is_transaction_conflict

META = "META"
TARGET_CHUNK_SIZE = 1000
_MODELS: dict[str, type[FleetrunModel]] = {"task": TaskItem, "run": NodeRunItem, "node": NodeItem}


def _connection() -> Any:
    return TaskItem._get_connection().connection


def _values(item: FleetrunModel) -> dict[str, Any]:
    values = dict(item.attribute_values)
    counts = values.get("counts")
    if isinstance(counts, MapAttribute):
        values["counts"] = {k: int(v or 0) for k, v in counts.attribute_values.items()}
    return values


def task_record(item: TaskItem) -> Task:
    record: Task = from_values(Task, _values(item))
    # a run write after this read needs no lookup
    run_partitions.remember(run_partitions.Layout.of(record.task_id, record))
    return record


def run_record(item: NodeRunItem) -> NodeRun:
    record: NodeRun = from_values(NodeRun, _values(item))
    return record


def task_from_image(image: Any) -> Task:
    """A task record from a stream image (`NewImage`/`OldImage`)."""
    return task_record(TaskItem.from_raw_data(dict(image)))


def run_from_image(image: Any) -> NodeRun:
    """A node run record from a stream image (`NewImage`/`OldImage`)."""
    return run_record(NodeRunItem.from_raw_data(dict(image)))


def task_item(task: Task) -> TaskItem:
    values = {name: getattr(task, name) for name in record_fields(Task) if getattr(task, name) is not None}
    values["counts"] = RunCounts(**task.counts)  # type: ignore[no-untyped-call]
    return TaskItem(task_pk(task.task_id), META, **values)


def run_item(run: NodeRun) -> NodeRunItem:
    """A new run's item, in the partition its task's layout puts new runs in."""
    values = {name: getattr(run, name) for name in record_fields(NodeRun) if getattr(run, name) is not None}
    return NodeRunItem(run_layout(run.task_id).new_pk(run.node), run_sk(run.node), **values)


def run_layout(task_id: str) -> run_partitions.Layout:
    """The task's run partitions (store/run_partitions.py): remembered, or one projected read."""
    known = run_partitions.remembered(task_id)
    if known is not None:
        return known
    return _read_layout(task_id)


def _read_layout(task_id: str) -> run_partitions.Layout:
    try:
        item = TaskItem.get(task_pk(task_id), META, consistent_read=True,
                            attributes_to_get=["run_shards", "run_shards_before"])
    except DoesNotExist:
        return run_partitions.Layout(task_id)  # no task, no runs: any key misses (not remembered: the task may come)
    layout = run_partitions.Layout.of(task_id, item)
    run_partitions.remember(layout)
    return layout


def run_key(task_id: str, node: str) -> tuple[str, str]:
    """The (pk, sk) of the run of `node` in the task: in a grown task, the partition that holds
    it (one read, then remembered), or where a new one would go when none does."""
    pk = _find_pk(task_id, node)
    return pk or run_layout(task_id).new_pk(node), run_sk(node)


def _find_pk(task_id: str, node: str) -> str | None:
    """The partition holding the run of `node`: the one the layout names, unread, or when it
    leaves a choice (a grown task) the one remembered, or found by reading each candidate until
    one holds it (None when none does)."""
    layout = run_layout(task_id)
    candidates = layout.candidates(node)
    if len(candidates) == 1:
        return candidates[0]
    known = run_partitions.location(task_id, node)
    if known is not None:
        return known
    for pk in candidates:
        try:
            NodeRunItem.get(pk, run_sk(node), consistent_read=True, attributes_to_get=["pk"])
        except DoesNotExist:
            continue
        run_partitions.remember_location(task_id, node, pk)
        return pk
    return None


def _grown_since_read(runs: Sequence[tuple[str, ...]]) -> bool:
    """Whether a run missed, or a rejected write of `runs` ((task id, node)), may have keyed one
    from a layout this container read before its task grew (store/run_partitions.py): the layout
    of each task read afresh, unless a read found where each of its runs is. True when one grew
    (worth one more try)."""
    grown = False
    for task_id in dict.fromkeys(t for t, node in runs if run_partitions.location(t, node) is None):
        held = run_layout(task_id).history
        grown = _read_layout(task_id).history != held or grown
    return grown


def _batch_get_runs(keys: Sequence[tuple[str, str]]) -> list[NodeRun]:
    """The runs of `keys` that exist, looked for in every partition each may be in (one but in a
    grown task); 100 keys a request, unprocessed ones sent again."""
    wanted = [(pk, run_sk(node)) for task_id, node in keys for pk in run_layout(task_id).candidates(node)]
    return [run_record(item) for item in NodeRunItem.batch_get(wanted, consistent_read=True)]


def _runs_of(changes: Sequence[Change]) -> list[tuple[str, ...]]:
    return [change.key for change in changes if change.kind == "run"]


def idempotency_pk(owner: str, key: str) -> str:
    """Both are the user's (a JWT `sub`, an `Idempotency-Key`): escaped, so `("alice", "k#1")`
    and `("alice#k", "1")` are two records."""
    return f"IDEM#{part(owner)}#{part(key)}"


def _idempotency_item(record: IdempotencyRecord) -> IdempotencyItem:
    return IdempotencyItem(idempotency_pk(record.owner, record.key), "IDEM", task_id=record.task_id,
                           request_hash=record.request_hash, expires_at=record.expires_at)


def chunk_targets(task_id: str, nodes: Sequence[str], first_chunk: int = 0) -> list[TargetChunk]:
    return [
        TargetChunk(task_pk(task_id), _chunk_sk(first_chunk + i), nodes=list(nodes[start:start + TARGET_CHUNK_SIZE]))
        for i, start in enumerate(range(0, len(nodes), TARGET_CHUNK_SIZE))
    ]


def _chunk_sk(number: int) -> str:
    return f"TGT#{number:05d}"


def delete_target_chunks(task_id: str, count: int) -> None:
    """Delete the task's target chunks `TGT#00000` to `TGT#<count - 1>` (absent ones are no error)."""
    with TargetChunk.batch_write() as batch:  # 25 deletes a request; unprocessed ones are sent again
        for number in range(count):
            batch.delete(TargetChunk(task_pk(task_id), _chunk_sk(number)))


# --- a Change in PynamoDB's terms ------------------------------------------------------------
def _attribute(model: type[FleetrunModel], name: str) -> Attribute[Any]:
    head, _, rest = name.partition(".")
    attribute: Any = model.get_attributes()[head]
    found: Attribute[Any] = getattr(attribute, rest) if rest else attribute
    return found


def _condition(model: type[FleetrunModel], predicate: Predicate) -> Condition:
    attribute: Any = _attribute(model, predicate.attribute)
    if predicate.op == "==":
        return attribute == predicate.value  # type: ignore[no-any-return]
    if predicate.op == "<":
        return attribute < predicate.value  # type: ignore[no-any-return]
    if predicate.op == ">":
        return attribute > predicate.value  # type: ignore[no-any-return]
    if predicate.op == "exists":
        return attribute.exists()  # type: ignore[no-any-return]
    if predicate.op == "missing":
        return attribute.does_not_exist()  # type: ignore[no-any-return]
    if predicate.op == "in":
        return attribute.is_in(*sorted(predicate.value))  # type: ignore[no-any-return]
    raise ValueError(f"unknown predicate op {predicate.op!r}")


def _key(change: Change) -> tuple[str, str]:
    if change.kind == "task":
        return task_pk(change.key[0]), META
    if change.kind == "run":
        return run_key(change.key[0], change.key[1])
    if change.kind == "node":
        return node_pk(change.key[0]), META
    raise ValueError(f"no DynamoDB item kind {change.kind!r} here")


def write_of(change: Change) -> tuple[FleetrunModel, list[Action], Condition]:
    """The item, update actions and guard of a change (for an update or a transaction)."""
    model = _MODELS[change.kind]
    actions: list[Action] = []
    for name, value in change.fields.items():
        attribute: Any = _attribute(model, name)
        if value is CLEAR:
            actions.append(attribute.remove())
        elif isinstance(value, Add):
            actions.append(attribute.add(value.amount))
        else:
            actions.append(attribute.set(value))
    guard: Condition = model.pk.exists()
    if change.sources is not None:
        guard &= model.get_attributes()["status"].is_in(*sorted(change.sources))  # type: ignore[attr-defined]
    for predicate in change.guard:
        guard &= _condition(model, predicate)
    return model(*_key(change)), actions, guard


def _rejected(error: PynamoDBException) -> ConditionFailed | None:
    if is_transaction_conflict(error):
        return ConditionFailed("another transaction was writing the item", conflict=True)
    if is_condition_failure(error):
        return ConditionFailed()
    return None


class DynamoBackend:
    # --- tasks ---
    def get_task(self, task_id: str, consistent: bool = True) -> Task | None:
        try:
            return task_record(TaskItem.get(task_pk(task_id), META, consistent_read=consistent))
        except DoesNotExist:
            return None

    def create_task(self, task: Task, targets: Sequence[str], idempotency: IdempotencyRecord | None,
                    event: EventBatch, alongside: Sequence[Any] = ()) -> None:
        try:
            self._create_task(task, targets, idempotency, event, alongside)
        except ConditionFailed as rejected:
            # racing requests with one key: a winner's transaction still in flight after our
            # retries; the answer is the winner's (services/submit.py waits for its record)
            if idempotency is not None and rejected.conflict:
                raise IdempotencyRecordExists("the idempotency record is being written") from rejected
            raise

    @retried  # a conflict may be an unrelated transaction (or an injected one): try again first
    def _create_task(self, task: Task, targets: Sequence[str], idempotency: IdempotencyRecord | None,
                     event: EventBatch, alongside: Sequence[Any]) -> None:
        item = task_item(task)
        item.active_pk, item.active_sk = "ACTIVE", task.task_id
        item.due_pk, item.due_sk = first_look(task)
        item.list_pk, item.list_sk = "TASK", task.task_id
        item.owner_pk, item.owner_sk = owner_tasks_pk(task.owner), task.task_id
        try:
            with TransactWrite(connection=_connection()) as tx:
                if idempotency is not None:
                    tx.save(_idempotency_item(idempotency), condition=IdempotencyItem.pk.does_not_exist())
                tx.save(item, condition=TaskItem.pk.does_not_exist())
                for chunk in chunk_targets(task.task_id, targets):
                    tx.save(chunk)
                tx.save(cast(Any, event))
                for part in alongside:
                    part(tx)
        except PynamoDBException as error:
            # racing requests with one key: the loser sees the record (the winner's answer)
            if idempotency is not None and is_condition_failure(error):
                raise IdempotencyRecordExists("the idempotency record exists") from error
            rejected = _rejected(error)
            if rejected is None:
                raise
            raise rejected from error

    def get_idempotency(self, owner: str, key: str) -> IdempotencyRecord | None:
        try:
            item = IdempotencyItem.get(idempotency_pk(owner, key), "IDEM", consistent_read=True)
        except DoesNotExist:
            return None
        return IdempotencyRecord(owner, key, item.task_id, item.request_hash, int(item.expires_at))

    def load_targets(self, task_id: str) -> list[str]:
        nodes: list[str] = []
        for chunk in TargetChunk.query(task_pk(task_id), TargetChunk.sk.startswith("TGT#"), consistent_read=True):
            nodes.extend(str(node) for node in chunk.nodes)
        return nodes

    def load_targets_of(self, chunks: Mapping[str, int]) -> dict[str, list[str]]:
        keys = [(task_pk(task_id), _chunk_sk(n)) for task_id, count in chunks.items() for n in range(count)]
        parts: dict[str, dict[str, list[str]]] = {task_id: {} for task_id in chunks}
        for chunk in TargetChunk.batch_get(keys, consistent_read=True):  # 100 keys a request
            parts[run_partitions.task_id_of(chunk.pk)][chunk.sk] = [str(node) for node in chunk.nodes]
        return {task_id: [node for sk in sorted(found) for node in found[sk]] for task_id, found in parts.items()}

    def load_target_chunk(self, task_id: str, number: int) -> list[str]:
        try:
            chunk = TargetChunk.get(task_pk(task_id), _chunk_sk(number), consistent_read=True)
        except DoesNotExist:
            return []
        return [str(node) for node in chunk.nodes]

    @retried
    def add_targets(self, change: Change, task_id: str, nodes: Sequence[str], first_chunk: int) -> None:
        item, actions, guard = write_of(change)
        try:
            with TransactWrite(connection=_connection()) as tx:
                tx.update(item, actions=actions, condition=guard)
                for chunk in chunk_targets(task_id, nodes, first_chunk):
                    tx.save(chunk)
        except PynamoDBException as error:
            rejected = _rejected(error)
            if rejected is None:
                raise
            raise rejected from error

    def active_task_ids(self) -> Iterator[str]:
        for item in TaskItem.active_index.query("ACTIVE"):
            yield run_partitions.task_id_of(item.pk)

    def due_entries(self, due_pk: str, upto: str, limit: int) -> list[tuple[str, str | None, str]]:
        found: Any = NodeRunItem.due_index.query(due_pk, NodeRunItem.due_sk <= upto, limit=limit)
        return [(item.task_id, item.node, item.due_sk) for item in found]

    # --- lease watches ---
    def put_lease_watches(self, watches: Sequence[LeaseWatch]) -> None:
        with LeaseWatchItem.batch_write() as batch:  # 25 puts a request; unprocessed ones are sent again
            for watch in watches:
                second = due.due_second(watch.sk)
                batch.save(LeaseWatchItem(due.watch_pk(watch.shard), watch.sk, expires_at=retention.item_expiry(second),
                                          runs=[due.run_item_id(task_id, node) for task_id, node in watch.runs]))

    def lease_watches(self, shard: int, upto: str, limit: int) -> list[LeaseWatch]:
        found: Any = LeaseWatchItem.query(due.watch_pk(shard), LeaseWatchItem.sk <= upto, limit=limit,
                                          consistent_read=True)
        return [LeaseWatch(shard, item.sk, tuple(due.run_of_item_id(run) for run in item.runs)) for item in found]

    def delete_lease_watches(self, watches: Sequence[LeaseWatch]) -> None:
        with LeaseWatchItem.batch_write() as batch:
            for watch in watches:
                batch.delete(LeaseWatchItem(due.watch_pk(watch.shard), watch.sk))

    # --- runs ---
    def get_run(self, task_id: str, node: str, consistent: bool = True) -> NodeRun | None:
        for _ in range(2):
            try:
                return run_record(NodeRunItem.get(*run_key(task_id, node), consistent_read=consistent))
            except DoesNotExist:
                if not _grown_since_read([(task_id, node)]):
                    return None
        return None

    def get_runs(self, keys: Sequence[tuple[str, str]]) -> list[NodeRun]:
        found = _batch_get_runs(keys)
        got = {(run.task_id, run.node) for run in found}
        missing = [key for key in keys if key not in got]
        if missing and _grown_since_read(missing):
            found += _batch_get_runs(missing)
        return found

    @retried
    def put_run_if_absent(self, run: NodeRun) -> bool:
        # (in the partition new runs go to: a run of an earlier generation of a grown task is
        # never made again, as a task takes new nodes only once its attempt's runs all exist,
        # and a retry finds the runs it resets)
        try:
            run_item(run).save(condition=NodeRunItem.pk.does_not_exist())
            return True
        except PynamoDBException as error:
            if not is_condition_failure(error):
                raise
            return False

    def runs_of(self, task_id: str, status: str | None = None,
                partitions: range | None = None) -> Iterator[NodeRun]:
        condition = NodeRunItem.status == status if status is not None else None
        pks = run_layout(task_id).pks()
        for pk in pks if partitions is None else pks[partitions.start:partitions.stop]:
            for item in NodeRunItem.query(pk, NodeRunItem.sk.startswith("RUN#"),
                                          filter_condition=condition, consistent_read=True):
                yield run_record(item)

    def claimable(self, runner: str, after: str | None, limit: int) -> list[tuple[str, str, str]]:
        range_condition = NodeRunItem.claim_sk > after if after else None
        found: Any = NodeRunItem.claim_index.query(f"RUNNER#{runner}", range_condition, limit=limit)
        claimable: list[tuple[str, str, str]] = []
        for item in found:
            task_id, node = run_partitions.task_id_of(item.pk), item.sk.removeprefix("RUN#")
            run_partitions.remember_location(task_id, node, item.pk)  # (the claim writes it next)
            claimable.append((task_id, node, item.claim_sk))
        return claimable

    def run_layout(self, task_id: str) -> run_partitions.Layout:
        return run_layout(task_id)

    # --- events ---
    @retried
    def put_events(self, batch: EventBatch) -> None:
        cast(Any, batch).save()

    # --- changes ---
    @retried
    def update(self, change: Change, *, again: bool = True) -> dict[str, Any] | None:
        item, actions, guard = write_of(change)
        try:
            item.update(actions=actions, condition=guard)
        except PynamoDBException as error:
            rejected = _rejected(error)
            if rejected is None:
                raise
            if rejected.conflict:
                raise rejected from error
            if again and _grown_since_read(_runs_of([change])):
                return self.update(change, again=False)
            return None
        return _values(item)

    def commit(self, changes: Sequence[Change], events: Sequence[EventBatch] = ()) -> None:
        try:
            self._commit(changes, events)
        except ConditionFailed as rejected:
            if rejected.conflict or not _grown_since_read(_runs_of(changes)):
                raise
            self._commit(changes, events)

    @retried
    def _commit(self, changes: Sequence[Change], events: Sequence[EventBatch] = ()) -> None:
        try:
            with TransactWrite(connection=_connection()) as tx:
                for change in changes:
                    item, actions, guard = write_of(change)
                    tx.update(item, actions=actions, condition=guard)
                for event in events:
                    tx.save(cast(Any, event))
        except PynamoDBException as error:
            rejected = _rejected(error)
            if rejected is None:
                raise
            raise rejected from error


def run_concurrently(calls: Sequence[Any], threads: int = 16) -> list[Any]:
    """Run zero-argument callables on a pool (I/O-bound fan-out); results in order."""
    if len(calls) <= 1:
        return [call() for call in calls]
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(lambda call: call(), calls))
