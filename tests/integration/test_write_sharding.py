"""A large task's runs and their events spread over several partition keys (store/run_partitions.py),
so that no key takes more than ~300 writes/s at 1,000 node runs/s (ARCHITECTURE.md, invariant 9);
a small task keeps the one partition `TASK#<id>` it always had. On the strict fidelity layer."""

from __future__ import annotations

import importlib.util
import sys
import threading
import zlib
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from chalicelib import config
from chalicelib.services import aggregation, recount, sweeper
from chalicelib.store import counters, events, run_partitions, runs, tasks
from chalicelib.store.models import EventItem, NodeRunItem, task_pk
from fleetrun.local import fidelity
from tests.harness import Fleet, assert_statistics_equal_recount
from tests.service_clock import Clock

#: more than RUNS_PER_PARTITION: 5 partitions of ~40 runs
NODES = [f"n{i:03d}" for i in range(200)]


def shell(nodes: list[str], **extra: Any) -> dict[str, Any]:
    return {"type": "shell", "target_nodes": nodes, "parameters": {"command": ["true"]}, **extra}


def run_partition_keys(task_id: str) -> Counter[str]:
    """Partition key -> runs of the task stored under it (a scan: the test's view of the table)."""
    found = NodeRunItem.scan(NodeRunItem.sk.startswith("RUN#") & (NodeRunItem.task_id == task_id))
    return Counter(item.pk for item in found)


def listed_nodes(fleet: Fleet, task_id: str, limit: int) -> list[str]:
    nodes: list[str] = []
    cursor: str | None = None
    while True:
        query = f"?limit={limit}" + (f"&cursor={cursor}" if cursor else "")
        answer = fleet.user("GET", f"/v1/tasks/{task_id}/nodes{query}")
        assert answer.status == 200, answer
        assert len(answer.body["items"]) <= limit
        nodes += [run["node"] for run in answer.body["items"]]
        cursor = answer.body["next_cursor"]
        if cursor is None:
            return nodes


def listed_events(fleet: Fleet, task_id: str, limit: int) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    after = ""
    while True:
        answer = fleet.user("GET", f"/v1/tasks/{task_id}/events?limit={limit}{after}")
        assert answer.status == 200, answer
        found += answer.body["items"]
        if answer.body["next_cursor"] is None:
            return found
        after = f"&after={answer.body['next_cursor']}"


class TestPartitionChoice:
    @pytest.mark.parametrize(("targets", "shards"), [
        (1, 1), (run_partitions.RUNS_PER_PARTITION, 1), (run_partitions.RUNS_PER_PARTITION + 1, 2),
        (200, 5), (1000, 21), (10_000, run_partitions.MAX_RUN_SHARDS),
    ])
    def test_a_task_gets_enough_partitions_for_its_targets(self, targets: int, shards: int):
        assert run_partitions.shards_for(targets) == shards

    def test_a_node_s_partition_is_a_stable_hash_of_its_id(self):
        # crc32, not Python's salted hash(): every process agrees
        assert run_partitions.shard_of("n001", 5) == zlib.crc32(b"n001") % 5
        assert run_partitions.run_pk("T1", "n001", 5) == f"TASK#T1#R{zlib.crc32(b'n001') % 5}"
        assert run_partitions.run_pk("T1", "n001", 1) == "TASK#T1"

    @pytest.mark.parametrize("pk", ["TASK#01JD", "TASK#01JD#R0", "TASK#01JD#R63"])
    def test_the_task_id_is_read_from_either_kind_of_partition_key(self, pk: str):
        assert run_partitions.task_id_of(pk) == "01JD"


def test_a_large_task_spreads_its_runs_and_node_events_over_its_run_partitions(fleet: Fleet):
    # GIVEN a task on 200 nodes
    task_id = fleet.started(shell(NODES, max_concurrency=200))

    # THEN its runs live in 5 partitions other than the task's, each holding about a fifth
    by_partition = run_partition_keys(task_id)
    assert set(by_partition) == {f"TASK#{task_id}#R{s}" for s in range(5)}
    assert sum(by_partition.values()) == len(NODES)
    assert max(by_partition.values()) <= run_partitions.RUNS_PER_PARTITION + 20
    # AND each run is where its node's hash says, found by (task, node)
    for node in NODES[:20]:
        run = runs.find(task_id, node)
        assert run is not None
        assert run.node == node

    # WHEN one node heartbeats, posts events and completes
    run = fleet.claim("n007")[0]
    beat = fleet.agent("n007", f"/v1/runs/{run['run_id']}/heartbeat", {"attempt": run["attempt"], "progress": 40})
    assert beat.status == 200, beat
    posted = fleet.agent("n007", f"/v1/runs/{run['run_id']}/events",
                         {"attempt": run["attempt"], "events": [{"type": "info", "message": "step one"}]})
    assert posted.status == 202, posted
    done = fleet.agent("n007", f"/v1/runs/{run['run_id']}/complete", {
        "attempt": run["attempt"], "status": "succeeded", "error_message": None,
        "events": [{"type": "success", "message": "all done"}]})
    assert done.status == 200, done
    fleet.settle()

    # THEN its events (posted, and moved from its completion by the stream) are in its run's partition,
    # the service's own in the task's
    in_run_partition = {e["message"] for e in stored_events(run_partitions.run_pk(task_id, "n007", 5))}
    assert {"step one", "all done"} <= in_run_partition
    own = {e["message"] for e in stored_events(task_pk(task_id))}
    assert any(message.startswith("task.created") for message in own)
    assert not own & {"step one", "all done"}
    assert runs.find(task_id, "n007").status == "succeeded"  # type: ignore[union-attr]
    # AND the listing shows them all
    assert {"step one", "all done"} <= {e["message"] for e in listed_events(fleet, task_id, 50)}


def stored_events(pk: str) -> list[dict[str, Any]]:
    return [e for item in EventItem.query(pk, EventItem.sk.startswith("EVT#")) for e in events.decode(item)]


def test_listing_a_sharded_task_s_runs_pages_every_node_exactly_once(fleet: Fleet):
    task_id = fleet.started(shell(NODES, max_concurrency=200))

    # WHEN its runs are listed 7 at a time (pages cross partition boundaries)
    nodes = listed_nodes(fleet, task_id, 7)

    # THEN every node appears exactly once
    assert Counter(nodes) == Counter(dict.fromkeys(NODES, 1))
    # AND one page as large as the task reads every partition and ends the listing
    whole = fleet.user("GET", f"/v1/tasks/{task_id}/nodes?limit=200").body
    assert len(whole["items"]) == len(NODES)
    assert whole["next_cursor"] is None


def test_a_sharded_task_s_events_list_oldest_first_across_its_partitions(fleet: Fleet):
    # GIVEN a sharded task whose nodes each post an event, in turns
    task_id = fleet.started(shell(NODES, max_concurrency=200))
    claimed = {node: fleet.claim(node)[0] for node in NODES[:30]}
    for node, run in claimed.items():
        answer = fleet.agent(node, f"/v1/runs/{run['run_id']}/events",
                             {"attempt": run["attempt"], "events": [{"type": "info", "message": f"hello {node}"}]})
        assert answer.status == 202, answer

    # WHEN the events are listed a few at a time
    listed = listed_events(fleet, task_id, 4)

    # THEN they come oldest first (ids ascending), each once, service events and node events merged
    ids = [event["event_id"] for event in listed]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    messages = [event["message"] for event in listed]
    assert [m for m in messages if m.startswith("hello ")] == [f"hello {node}" for node in claimed]
    assert listed[0]["message"].startswith("task.created")


class InFlightQueries:
    """The most DynamoDB queries under way at once (each held a moment at its start)."""

    def __init__(self) -> None:
        self.now = self.most = 0
        self.lock = threading.Lock()

    def before(self, **_: Any) -> None:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
        threading.Event().wait(0.02)

    def after(self, **_: Any) -> None:
        with self.lock:
            self.now -= 1


def test_a_page_of_a_sharded_task_s_events_reads_its_partitions_at_once(fleet: Fleet):
    # GIVEN a task of 6 event partitions (its own and 5 run partitions), each with events
    task_id = fleet.started(shell(NODES, max_concurrency=200))
    for node in NODES[::7]:
        run = fleet.claim(node)[0]
        assert fleet.agent(node, f"/v1/runs/{run['run_id']}/events", {
            "attempt": run["attempt"], "events": [{"type": "info", "message": node}]}).status == 202
    # WHEN its first page of events is read, the queries counted as they start and end
    queries = InFlightQueries()
    client = EventItem._get_connection().connection.client
    client.meta.events.register("before-call.dynamodb.Query", queries.before)
    client.meta.events.register("after-call.dynamodb.Query", queries.after)
    try:
        answer = fleet.user("GET", f"/v1/tasks/{task_id}/events?limit=5")
    finally:
        client.meta.events.unregister("before-call.dynamodb.Query", queries.before)
        client.meta.events.unregister("after-call.dynamodb.Query", queries.after)
    # THEN the partitions were read concurrently, and the page is the oldest events
    assert answer.status == 200, answer
    assert queries.most > 1
    ids = [event["event_id"] for event in listed_events(fleet, task_id, 100)]
    assert [event["event_id"] for event in answer.body["items"]] == ids[:5]


def test_a_sharded_task_completes_with_exact_counts_under_strict_fidelity(fleet: Fleet):
    # GIVEN a sharded task whose nodes all finish, some failing
    task_id = fleet.started(shell(NODES, max_concurrency=200, max_errors="100%"))
    fail = frozenset(NODES[::10])

    # WHEN every agent runs its work (the stream settles after each round)
    assert fleet.run_agents(NODES, fail=fail) == len(NODES)

    # THEN the counts the aggregator kept on the sharded records equal the runs
    task = fleet.task(task_id)
    assert task["status"] == "partial_failure"
    counts = {status: n for status, n in task["node_counts"].items() if n}
    assert counts == {"succeeded": len(NODES) - len(fail), "failed": len(fail)}
    assert counts == dict(Counter(run.status for run in runs.iter_runs(task_id)))
    assert_statistics_equal_recount()


def test_a_small_task_keeps_the_single_task_partition(fleet: Fleet):
    nodes = NODES[:run_partitions.RUNS_PER_PARTITION]
    task_id = fleet.started(shell(nodes))

    assert run_partition_keys(task_id) == Counter({task_pk(task_id): len(nodes)})
    assert Counter(listed_nodes(fleet, task_id, 10)) == Counter(dict.fromkeys(nodes, 1))
    run = fleet.claim(nodes[0])[0]
    assert fleet.finish(nodes[0], run).status == 200
    fleet.settle()
    assert fleet.task(task_id)["node_counts"]["succeeded"] == 1


def test_a_cursor_of_another_task_s_partition_is_a_validation_error():
    from chalicelib.errors import ValidationFailed

    with pytest.raises(ValidationFailed):
        runs._resume_partition(["TASK#A#R0", "TASK#A#R1"], {"pk": {"S": "TASK#B#R0"}, "sk": {"S": "RUN#x"}})
    assert runs._resume_partition(["TASK#A#R0", "TASK#A#R1"], {"pk": {"S": "TASK#A#R1"}, "sk": {"S": "RUN#"}}) == 1


def _load_bench() -> ModuleType:
    # bench/ is not a package: load the helper by path (as tests/unit/test_bench_pricing.py does)
    path = Path(__file__).resolve().parents[2] / "bench" / "scale_partitions.py"
    spec = importlib.util.spec_from_file_location("fleetrun_bench_scale_partitions", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_the_task_item_is_written_at_most_once_per_stream_batch_that_shows_its_runs(
        fleet: Fleet, monkeypatch: pytest.MonkeyPatch):
    # GIVEN a sharded task, and the aggregator's batches recorded
    batches: list[list[dict[str, Any]]] = []
    process_batch = aggregation.process_batch

    def recorded(raw: Any) -> list[str]:
        batch = list(raw)
        batches.append(batch)
        return process_batch(batch)

    monkeypatch.setattr(aggregation, "process_batch", recorded)
    task_id = fleet.started(shell(NODES, max_concurrency=200))
    task_item = _load_bench()._TaskItemWrites(fleet.provisioned.table_name, task_id)
    task_item.mark()
    batches.clear()

    # WHEN every node runs its work
    assert fleet.run_agents(NODES) == len(NODES)

    # THEN the task item took at most one counter write per batch holding its runs' records (its
    # ≤ 80 marker items fit one transaction), plus its own completion: the bound does not grow with
    # the node count, only with the stream's batches (stream shards x parallelization factor x batches/s)
    showing_runs = sum(1 for batch in batches if any(
        run_partitions.task_id_of(r["dynamodb"]["Keys"]["pk"]["S"]) == task_id
        and r["dynamodb"]["Keys"]["sk"]["S"].startswith("RUN#") for r in batch))
    assert fleet.task(task_id)["status"] == "completed"
    assert 0 < task_item.since_mark() <= showing_runs + 2


def test_the_partition_bench_measures_a_sharded_task_below_the_ceiling(fleet: Fleet):
    # GIVEN the bench's helper on 150 nodes in waves of 50 node runs (one modelled second each)
    rates = _load_bench().partition_rates(fleet, [f"p{i:03d}" for i in range(150)], runs_per_second=50)

    # THEN the task completed, its runs spread, and every key stayed far below 300 writes/s
    assert rates.completed
    assert rates.run_shards == run_partitions.shards_for(150)
    assert rates.waves == 3
    assert 0 < rates.peak_partition_writes_per_s < 300
    assert rates.task_item_writes_per_s >= 1


def test_the_partition_bench_measures_a_task_grown_by_a_dispatch_request(fleet: Fleet):
    # GIVEN the bench's helper on a task created on 10 nodes and grown to 150
    rates = _load_bench().partition_rates(fleet, [f"g{i:03d}" for i in range(150)], runs_per_second=50, grow_from=10)

    # THEN the runs made by the growth spread over its new partitions, under the ceiling
    assert rates.completed
    assert rates.grown_from == 10
    assert rates.run_shards == run_partitions.grown((1,), 150)[-1]
    assert 0 < rates.peak_partition_writes_per_s < 300


def test_a_sharded_task_s_lost_completion_is_repaired_by_a_recount_from_every_partition(
        aws: Any, monkeypatch: pytest.MonkeyPatch):
    # GIVEN a sharded task whose batch carrying n042's completion is lost (dead-lettered)
    fidelity.install(fidelity.current().with_rates(mode=fidelity.STRICT, replay_rate=0.0))
    fleet = Fleet(aws)
    task_id = fleet.started(shell(NODES, max_concurrency=200))
    fleet.stream.drop_next(lambda record: record["dynamodb"]["Keys"]["sk"]["S"] == "RUN#n042"
                           and record["dynamodb"].get("NewImage", {}).get("status", {}).get("S") == "succeeded")
    assert fleet.run_agents(NODES) == len(NODES)
    assert fleet.task(task_id)["node_counts"]["succeeded"] < len(NODES)

    # WHEN the task is recounted from its runs
    assert recount.repair(tasks.get(task_id))
    fleet.settle()

    # THEN it completes with exact counts, and its marks sit in its run partitions, none in the task's
    task = fleet.task(task_id)
    assert task["status"] == "completed"
    assert task["node_counts"]["succeeded"] == len(NODES)
    marks = counters.read_all_markers(task_id)
    assert sum(len(nodes) for nodes in marks.values()) == len(NODES)
    assert {counters.marker_pk(task_id, sk) for sk in marks} <= set(run_partitions.run_pks(task_id, 5))
    assert_statistics_equal_recount()


class TestAGrownTask:
    """A task grown by dispatch requests past what its partitions hold gets more partitions for
    the runs it makes from then on; the runs made before stay where they are and are found."""

    def test_the_partitions_grow_by_at_least_double_and_no_further_than_the_most(self):
        assert run_partitions.grown((1,), run_partitions.RUNS_PER_PARTITION) == (1,)
        assert run_partitions.grown((1,), run_partitions.RUNS_PER_PARTITION + 1) == (1, 2)
        assert run_partitions.grown((2,), 200) == (2, 5)
        assert run_partitions.grown((4,), 200) == (4, 8)  # at least double: at most 7 generations
        assert run_partitions.grown((21,), 1000) == (21,)
        assert run_partitions.grown((1, 40), 10_000) == (1, 40, run_partitions.MAX_RUN_SHARDS)
        assert run_partitions.grown((run_partitions.MAX_RUN_SHARDS,), 100_000) == (run_partitions.MAX_RUN_SHARDS,)

    def test_a_layout_names_every_partition_once_and_a_node_s_candidates_newest_first(self):
        layout = run_partitions.Layout("T", (1, 2, 4))
        assert layout.pks() == ["TASK#T", "TASK#T#R0", "TASK#T#R1", "TASK#T#R2", "TASK#T#R3"]
        assert layout.event_pks() == layout.pks()
        node = next(n for n in NODES if zlib.crc32(n.encode()) % 4 == 3)
        assert layout.candidates(node) == ["TASK#T#R3", f"TASK#T#R{zlib.crc32(node.encode()) % 2}", "TASK#T"]
        assert layout.new_pk(node) == "TASK#T#R3"
        # an earlier generation's partitions come first: a listing's cursor stays valid as it grows
        assert run_partitions.Layout("T", (2, 4)).pks()[:2] == run_partitions.Layout("T", (2,)).pks()

    def test_runs_added_by_dispatch_requests_spread_and_the_task_completes_exactly(self, fleet: Fleet):
        # GIVEN a task on 10 nodes: one partition, its own
        first, chunked, inline = NODES[:10], NODES[10:160], NODES[160:]
        task_id = fleet.started(shell(first, max_concurrency=200, max_errors=10))
        fleet.register(*chunked, *inline)

        # WHEN a dispatch request adds 150 nodes (made in chunks by the queue), then another 40 (inline)
        answer = fleet.user("POST", f"/v1/tasks/{task_id}/dispatch", {"target_nodes": chunked})
        assert (answer.status, answer.body["dispatch"]["state"]) == (202, "in_progress"), answer
        fleet.settle(rounds=500)
        answer = fleet.user("POST", f"/v1/tasks/{task_id}/dispatch", {"target_nodes": [first[0], *inline]})
        assert (answer.status, answer.body["dispatch"]["created_count"]) == (200, len(inline)), answer

        # THEN each growth took the task to more partitions, and its runs went where they were made
        layout = runs.run_layout(task_id)
        assert layout.history == (1, 4, 8)
        by_partition = run_partition_keys(task_id)
        assert by_partition[task_pk(task_id)] == len(first)
        assert set(by_partition) <= set(layout.pks())
        assert max(by_partition.values()) <= run_partitions.RUNS_PER_PARTITION
        for node in (*first[:3], *chunked[:3], *inline[:3]):
            assert runs.find(task_id, node).node == node  # type: ignore[union-attr]

        # WHEN every node runs, a few of each generation failing, and the task is retried
        failing = frozenset({first[1], chunked[1], inline[1]})
        assert fleet.run_agents(NODES, fail=failing) == len(NODES)
        assert fleet.task(task_id)["status"] == "partial_failure"
        retried = fleet.user("POST", f"/v1/tasks/{task_id}/retry", {"scope": "failed"})
        assert retried.status == 202, retried
        fleet.settle(rounds=500)
        assert fleet.run_agents(NODES) == len(failing)

        # THEN it completed with exact counts, one run per node, each listed once
        task = fleet.task(task_id)
        assert task["status"] == "completed"
        assert task["node_counts"]["succeeded"] == len(NODES)
        assert sum(run_partition_keys(task_id).values()) == len(NODES)
        assert sorted(listed_nodes(fleet, task_id, 9)) == sorted(NODES)
        assert {int(r.attempt) for r in runs.iter_runs(task_id) if r.node in failing} == {2}
        assert_statistics_equal_recount()
        assert recount.repair(tasks.get(task_id)) is False  # nothing to repair: the counters are exact

    def test_a_container_that_knew_the_task_before_it_grew_finds_its_new_runs(self, fleet: Fleet):
        # GIVEN a task on 10 nodes, grown by 100 more
        first, more = NODES[:10], NODES[10:110]
        task_id = fleet.started(shell(first, max_concurrency=200))
        fleet.register(*more)
        assert fleet.user("POST", f"/v1/tasks/{task_id}/dispatch", {"target_nodes": more}).status == 200
        fleet.settle()
        assert runs.run_layout(task_id).history == (1, 3)
        node = more[0]

        def stale() -> None:
            """This container as another one that read the task before it grew."""
            run_partitions.forget_all()
            run_partitions.remember(run_partitions.Layout(task_id, (1,)))

        # WHEN its agent claims, heartbeats, posts an event and completes, each call in such a container
        stale()
        run = fleet.claim(node)[0]
        stale()
        beat = fleet.agent(node, f"/v1/runs/{run['run_id']}/heartbeat", {"attempt": run["attempt"], "progress": 40})
        stale()
        posted = fleet.agent(node, f"/v1/runs/{run['run_id']}/events",
                             {"attempt": run["attempt"], "events": [{"type": "info", "message": "half way"}]})
        stale()
        done = fleet.finish(node, run)

        # THEN each was answered as usual, and the run is done where it was made
        assert (beat.status, posted.status, done.status) == (200, 202, 200), (beat, posted, done)
        fleet.settle()
        stale()
        found = runs.find(task_id, node)
        assert found is not None
        assert found.status == "succeeded"
        assert run_partition_keys(task_id)[run_partitions.run_pk(task_id, node, 3)] >= 1
        stale()
        assert "half way" in {e["message"] for e in listed_events(fleet, task_id, 50)}

    def test_a_sweeper_that_knew_the_task_before_it_grew_requeues_a_new_run_whose_lease_lapsed(
            self, fleet: Fleet, monkeypatch: pytest.MonkeyPatch):
        service_clock = Clock(monkeypatch)
        # GIVEN a task grown from 10 nodes to 110, and a run of the growth claimed, its agent then silent
        first, more = NODES[:10], NODES[10:110]
        task_id = fleet.started(shell(first, max_concurrency=200))
        fleet.register(*more)
        assert fleet.user("POST", f"/v1/tasks/{task_id}/dispatch", {"target_nodes": more}).status == 200
        assert len(fleet.claim(more[0])) == 1
        fleet.settle()  # (the claim's record watches its lease: services/lease_watch.py)
        assert runs.run_layout(task_id).pks() != [task_pk(task_id)]

        # WHEN its lease lapses and the sweeper, which read the task before it grew, sweeps
        run_partitions.forget_all()
        run_partitions.remember(run_partitions.Layout(task_id, (1,)))
        service_clock.advance(config.lease_seconds() + 1)
        report = sweeper.sweep()
        fleet.settle()

        # THEN the run is offered again
        assert report.requeued_runs == 1
        assert fleet.runs(task_id)[more[0]]["status"] == "pending"

