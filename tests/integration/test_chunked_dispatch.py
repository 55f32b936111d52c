"""A dispatch in chunks (services/dispatch.py): no invocation creates more than a chunk, a crash
between or inside chunks resumes where it was without reading earlier chunks again, duplicate
chunk messages are harmless, the sweeper leaves a progressing dispatch alone, and
`POST /v1/tasks/{id}/dispatch` of more than 100 new nodes answers 202 and finishes in the queue.

The chunk size is patched small (`CHUNK`) so a few hundred nodes make many chunks."""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

import pytest

from chalicelib import clock, config
from chalicelib.domain import dispatch_progress
from chalicelib.services import attempts, cancellation, dispatch, jobs
from chalicelib.store import run_partitions, runs, tasks
from tests.harness import Fleet, assert_statistics_equal_recount

CHUNK = 10


def shell(nodes: list[str], **extra: Any) -> dict[str, Any]:
    return {"type": "shell", "target_nodes": nodes, "parameters": {"command": ["true"]}, "max_concurrency": 1000,
            **extra}


def names(count: int, prefix: str = "d") -> list[str]:
    return [f"{prefix}{i:03d}" for i in range(count)]


class Recorder:
    """The nodes each dispatch-queue invocation passed to `create_missing` (what it wrote or read)."""

    def __init__(self) -> None:
        self.invocations: list[list[str]] = []
        self.created: list[int] = []

    def touched(self) -> Counter[str]:
        return Counter(node for nodes in self.invocations for node in nodes)


@pytest.fixture
def recorder(fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> Recorder:
    monkeypatch.setattr(dispatch_progress, "DISPATCH_CHUNK_SIZE", CHUNK)
    found = Recorder()
    handler, create_missing = fleet.queue.handler, runs.create_missing

    def invocation(*args: Any, **kwargs: Any) -> Any:
        found.invocations.append([])
        found.created.append(0)
        return handler(*args, **kwargs)

    def counted(template: Any, new: Any) -> tuple[list[str], list[str]]:
        if found.invocations:
            found.invocations[-1].extend(run.node for run in new)
        created, skipped = create_missing(template, new)
        if found.created:
            found.created[-1] += len(created)
        return created, skipped

    monkeypatch.setattr(fleet.queue, "handler", invocation)
    monkeypatch.setattr(runs, "create_missing", counted)
    return found


def submitted(fleet: Fleet, nodes: list[str]) -> str:
    fleet.register(*nodes)
    answer = fleet.submit(shell(nodes))
    assert answer.status == 202, answer
    return str(answer.body["task_id"])


def assert_one_run_each(task_id: str, nodes: list[str]) -> None:
    made = list(runs.iter_runs(task_id))
    assert sorted(r.node for r in made) == sorted(nodes)
    ordinals = sorted(int(r.ordinal) for r in made)
    assert ordinals == list(range(len(nodes)))  # dense: the concurrency window never stalls on a gap


class TestChunks:
    def test_no_invocation_creates_more_than_a_chunk_per_job(self, fleet: Fleet, recorder: Recorder) -> None:
        # GIVEN a task of 120 nodes, chunks of 10
        nodes = names(120)
        task_id = submitted(fleet, nodes)

        # WHEN the stream and the dispatch queue settle
        fleet.settle(rounds=500)

        # THEN every node has one run, the counts are final, and no invocation made more than its
        # batch of chunk jobs (batch size x chunk)
        task = fleet.task(task_id)
        assert task["status"] == "running"
        assert task["dispatch"] == {"triggered": True, "state": "done", "target_node_count": 120,
                                    "created_count": 120, "skipped_count": 0}
        assert_one_run_each(task_id, nodes)
        assert max(recorder.created) <= CHUNK * 5
        assert sum(recorder.created) == 120
        assert int(tasks.get(task_id).dispatch_chunks) == 12

    def test_the_task_starts_after_its_first_chunk(self, fleet: Fleet, recorder: Recorder) -> None:
        # GIVEN a task of 40 nodes
        task_id = submitted(fleet, names(40))

        # WHEN only the stream and one dispatch job ran
        fleet.stream.drain()
        fleet.queue.poll_once()  # the queue may hold the first job only

        # THEN the task runs with its first chunk made, the rest in progress
        task = fleet.task(task_id)
        assert task["status"] == "running"
        assert task["dispatch"]["state"] == "in_progress"
        assert len(list(runs.iter_runs(task_id))) in range(CHUNK, 5 * CHUNK + 1)
        fleet.settle(rounds=500)
        assert fleet.task(task_id)["dispatch"]["state"] == "done"


class TestCrash:
    def test_a_crash_before_the_next_chunk_is_sent_resumes_without_rereading(
            self, fleet: Fleet, recorder: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
        # GIVEN the send of chunk 4 fails once (chunk 3 is recorded: the job raises, SQS redelivers it)
        nodes = names(100)
        enqueue = jobs.enqueue
        failed: list[int] = []

        def flaky(kind: str, task_id: str, **fields: Any) -> None:
            if fields.get("chunk") == 4 and not failed:
                failed.append(4)
                raise RuntimeError("lambda died before sending the next chunk")
            enqueue(kind, task_id, **fields)

        monkeypatch.setattr(jobs, "enqueue", flaky)
        task_id = submitted(fleet, nodes)

        # WHEN everything settles
        fleet.settle(rounds=500)

        # THEN the dispatch resumed at chunk 4: each node went through create_missing exactly
        # once (no earlier chunk read again) and every node has one run
        assert failed == [4]
        assert set(recorder.touched().values()) == {1}
        assert_one_run_each(task_id, nodes)
        assert fleet.task(task_id)["dispatch"]["created_count"] == 100

    def test_a_crash_inside_a_chunk_redoes_only_that_chunk(
            self, fleet: Fleet, recorder: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
        # GIVEN the job of chunk 5 dies after making its runs, before recording them
        nodes = names(100)
        transition = tasks.transition
        died: list[int] = []

        def dying(task: Any, action: str, now: str, **inputs: Any) -> Any:
            if action == "dispatch_chunk" and inputs.get("chunk") == 5 and not died:
                died.append(5)
                raise RuntimeError("lambda died inside chunk 5")
            return transition(task, action, now, **inputs)

        monkeypatch.setattr(tasks, "transition", dying)
        task_id = submitted(fleet, nodes)

        # WHEN everything settles
        fleet.settle(rounds=500)

        # THEN only chunk 5's nodes went through create_missing twice; no duplicate runs
        twice = {node for node, seen in recorder.touched().items() if seen > 1}
        assert died == [5]
        assert twice == set(nodes[50:60])
        assert_one_run_each(task_id, nodes)
        task = fleet.task(task_id)
        assert (task["dispatch"]["created_count"], task["dispatch"]["skipped_count"]) == (100, 0)

    def test_duplicate_and_late_chunk_messages_change_nothing(self, fleet: Fleet, recorder: Recorder) -> None:
        # GIVEN a finished dispatch of 60 nodes
        nodes = names(60)
        task_id = submitted(fleet, nodes)
        fleet.settle(rounds=500)
        before = fleet.task(task_id)
        stored = tasks.get(task_id)

        # WHEN every chunk message, the first job and one of another dispatch arrive again
        for chunk in range(int(stored.dispatch_chunks)):
            jobs.enqueue(jobs.DISPATCH, task_id, attempt=1, chunk=chunk, dispatch_id=stored.dispatch_id)
        jobs.enqueue(jobs.DISPATCH, task_id, attempt=1)
        jobs.enqueue(jobs.DISPATCH, task_id, attempt=1, chunk=2, dispatch_id=f"{task_id}:route:old")
        recorder.invocations.clear()
        fleet.settle(rounds=500)

        # THEN no run was made or read again and the figures stayed
        assert recorder.touched() == Counter()
        assert fleet.task(task_id)["dispatch"] == before["dispatch"]
        assert_one_run_each(task_id, nodes)

    def test_a_duplicate_chunk_racing_the_original_makes_no_duplicates(self, fleet: Fleet, recorder: Recorder) -> None:
        # GIVEN a dispatch whose every chunk message is sent twice
        enqueue = jobs.enqueue

        def twice(kind: str, task_id: str, **fields: Any) -> None:
            enqueue(kind, task_id, **fields)
            enqueue(kind, task_id, **fields)

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(jobs, "enqueue", twice)
            nodes = names(50)
            task_id = submitted(fleet, nodes)
            fleet.settle(rounds=1000)

        # THEN one run per node and exact figures
        assert_one_run_each(task_id, nodes)
        task = fleet.task(task_id)
        assert (task["dispatch"]["state"], task["dispatch"]["created_count"]) == ("done", 50)


class TestSweeper:
    def test_the_sweeper_leaves_a_progressing_dispatch_alone_and_resends_a_stalled_one(
            self, fleet: Fleet, recorder: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
        # GIVEN a dispatch whose continuation after chunk 1 is lost
        nodes = names(50)
        enqueue = jobs.enqueue
        monkeypatch.setattr(jobs, "enqueue", lambda kind, task_id, **f: None if f.get("chunk") == 2
                            else enqueue(kind, task_id, **f))
        task_id = submitted(fleet, nodes)
        fleet.settle(rounds=500)
        monkeypatch.setattr(jobs, "enqueue", enqueue)
        task = tasks.get(task_id)
        assert (int(task.dispatched_through), task.dispatch_progress_at is not None) == (2, True)
        progressed = clock.parse_rfc3339(task.dispatch_progress_at or "")
        grace = config.undispatched_grace_seconds()

        # WHEN the sweeper looks within the grace period after the last chunk landed, even long after
        # the task's creation: nothing is re-sent
        assert not dispatch.resend_if_stalled(task, progressed + grace - 1)

        # WHEN it looks after the grace period: the continuation is re-sent from chunk 2
        assert dispatch.resend_if_stalled(task, progressed + grace + 1)
        fleet.settle(rounds=500)

        # THEN the dispatch finishes without touching a node twice
        assert fleet.task(task_id)["dispatch"]["state"] == "done"
        assert set(recorder.touched().values()) == {1}
        assert_one_run_each(task_id, nodes)
        assert not dispatch.resend_if_stalled(tasks.get(task_id), time.time() + 10 * grace)


class TestRetry:
    def test_a_retry_resets_its_runs_in_chunks_with_dense_ordinals(self, fleet: Fleet, recorder: Recorder) -> None:
        # GIVEN 30 nodes of which 25 failed
        nodes = names(30)
        task_id = submitted(fleet, nodes)
        fleet.settle(rounds=500)
        fleet.run_agents(nodes, fail=frozenset(nodes[5:]))
        assert fleet.task(task_id)["status"] in ("failed", "partial_failure")

        # WHEN the failed ones are retried
        answer = fleet.user("POST", f"/v1/tasks/{task_id}/retry", {"scope": "failed"})
        assert answer.status == 202, answer
        fleet.settle(rounds=500)

        # THEN attempt 2 reset exactly the 25 with ordinals 0..24, in chunks, and completes
        task = tasks.get(task_id)
        assert (int(task.attempt), int(task.created_count), int(task.skipped_count)) == (2, 25, 5)
        assert int(task.dispatch_chunks) == 3
        reset = sorted(int(r.ordinal) for r in runs.iter_runs(task_id) if int(r.generation) == 2)
        assert reset == list(range(25))
        fleet.run_agents(nodes)
        assert fleet.task(task_id)["status"] == "completed"
        assert_statistics_equal_recount()


class TestCancel:
    def test_a_task_cancelled_between_chunks_gets_no_more_runs_and_ends_cancelled(
            self, fleet: Fleet, recorder: Recorder) -> None:
        # GIVEN a task of 100 nodes whose first chunk job ran
        task_id = submitted(fleet, names(100))
        fleet.stream.drain()
        while not list(runs.iter_runs(task_id)):
            fleet.queue.poll_once()

        # WHEN it is cancelled and everything settles
        answer = fleet.user("POST", f"/v1/tasks/{task_id}/cancel")
        assert answer.status == 202, answer
        fleet.settle(rounds=500)

        # THEN it ends cancelled, every run made is cancelled, the dispatch is done
        task = fleet.task(task_id)
        assert task["status"] == "cancelled"
        assert task["dispatch"]["state"] == "done"
        made = list(runs.iter_runs(task_id))
        assert {r.status for r in made} == {"cancelled"}
        assert len(made) < 100
        assert_statistics_equal_recount()

    def test_a_retry_cancelled_between_chunks_still_ends_cancelled(self, fleet: Fleet, recorder: Recorder) -> None:
        # GIVEN a failed task of 40 nodes retried, its retry's first chunk done
        nodes = names(40)
        task_id = submitted(fleet, nodes)
        fleet.settle(rounds=500)
        fleet.run_agents(nodes, fail=frozenset(nodes))
        assert fleet.user("POST", f"/v1/tasks/{task_id}/retry", {"scope": "failed"}).status == 202
        fleet.stream.drain()
        while int(tasks.get(task_id).dispatched_attempt) < 2:
            fleet.queue.poll_once()
            fleet.stream.drain()

        # WHEN it is cancelled and everything settles
        assert fleet.user("POST", f"/v1/tasks/{task_id}/cancel").status == 202
        fleet.settle(rounds=500)

        # THEN every run of attempt 2 was reset, then cancelled; the counts equal a recount
        assert fleet.task(task_id)["status"] == "cancelled"
        assert {(int(r.generation), r.status) for r in runs.iter_runs(task_id)} == {(2, "cancelled")}
        assert_statistics_equal_recount()

    def test_a_retry_cancelled_before_its_dispatch_resets_and_cancels_one_part_per_job(
            self, fleet: Fleet, recorder: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
        # GIVEN a failed task of 40 nodes (four dispatch parts) retried, its retry not dispatched yet
        nodes = names(40)
        task_id = submitted(fleet, nodes)
        fleet.settle(rounds=500)
        fleet.run_agents(nodes, fail=frozenset(nodes))
        assert fleet.user("POST", f"/v1/tasks/{task_id}/retry", {"scope": "failed"}).status == 202
        reset_by_job: list[list[str]] = []  # the nodes each cancel job reset, job by job
        cancel_runs, prepare_part = cancellation.cancel_runs, attempts.prepare_part

        def job(*args: Any, **kwargs: Any) -> int:
            reset_by_job.append([])
            return cancel_runs(*args, **kwargs)

        def prepared(task: Any, dispatch_id: str, part: list[str], *rest: Any) -> Any:
            if reset_by_job:
                reset_by_job[-1].extend(part)
            return prepare_part(task, dispatch_id, part, *rest)

        monkeypatch.setattr(cancellation, "cancel_runs", job)
        monkeypatch.setattr(attempts, "prepare_part", prepared)

        # WHEN it is cancelled at once and everything settles
        assert fleet.user("POST", f"/v1/tasks/{task_id}/cancel").status == 202
        fleet.settle(rounds=500)

        # THEN no job reset more than a part, the parts covered every node, and every run of
        # attempt 2 ended cancelled with counts equal to a recount
        assert tasks.get(task_id).dispatched_attempt == 1
        assert max(len(part) for part in reset_by_job) == CHUNK
        assert sorted(set().union(*reset_by_job)) == nodes
        assert fleet.task(task_id)["status"] == "cancelled"
        assert {(int(r.generation), r.status) for r in runs.iter_runs(task_id)} == {(2, "cancelled")}
        assert_statistics_equal_recount()


class TestCancelInGroups:
    """A cancel job goes through about jobs.RUNS_PER_JOB runs: a group of the task's run partitions,
    then the next group in a job of its own (services/cancellation.py)."""

    @pytest.fixture
    def groups(self, fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> list[tuple[range | None, int]]:
        """(partitions, runs changed) of every cancel_each call; 10 runs a partition, 50 a job."""
        monkeypatch.setattr(run_partitions, "RUNS_PER_PARTITION", 10)
        monkeypatch.setattr(jobs, "RUNS_PER_JOB", 50)
        seen: list[tuple[range | None, int]] = []
        cancel_each = cancellation.cancel_each

        def recorded(task: Any, *, include_running: bool, partitions: range | None = None) -> int:
            changed = cancel_each(task, include_running=include_running, partitions=partitions)
            seen.append((partitions, changed))
            return changed

        monkeypatch.setattr(cancellation, "cancel_each", recorded)
        return seen

    def test_each_job_cancels_one_group_of_partitions_and_hands_on_the_next(
            self, fleet: Fleet, groups: list[tuple[range | None, int]]) -> None:
        # GIVEN a task of 200 nodes over 20 run partitions, every run made and none claimed
        task_id = submitted(fleet, names(200))
        fleet.settle(rounds=500)
        assert runs.run_shards(task_id) == 20
        # WHEN it is cancelled and everything settles
        assert fleet.user("POST", f"/v1/tasks/{task_id}/cancel").status == 202
        fleet.settle(rounds=500)
        # THEN jobs of five partitions (about 50 runs) each, in four groups, cancelled every run once
        # (the stream's outbox sends the first job again when its count lost a conflict: harmless)
        assert sorted({(g.start, g.stop) for g, _ in groups if g is not None}) == [(0, 5), (5, 10), (10, 15), (15, 20)]
        assert sum(changed for _, changed in groups) == 200
        assert fleet.task(task_id)["status"] == "cancelled"
        assert {r.status for r in runs.iter_runs(task_id)} == {"cancelled"}
        assert_statistics_equal_recount()

    def test_a_job_delivered_again_after_sending_the_next_changes_nothing_twice(
            self, fleet: Fleet, groups: list[tuple[range | None, int]], monkeypatch: pytest.MonkeyPatch) -> None:
        # GIVEN a cancel whose second job is delivered twice (a crash after it sent the third)
        task_id = submitted(fleet, names(200))
        fleet.settle(rounds=500)
        enqueue = jobs.enqueue

        def twice(kind: str, task_id: str, **fields: Any) -> None:
            enqueue(kind, task_id, **fields)
            if fields.get("partition") == 5:
                enqueue(kind, task_id, **fields)

        monkeypatch.setattr(jobs, "enqueue", twice)
        # WHEN it is cancelled and everything settles
        assert fleet.user("POST", f"/v1/tasks/{task_id}/cancel").status == 202
        fleet.settle(rounds=500)
        # THEN the groups from the second on ran twice (or more: the stream's outbox sends the first
        # job again when its count lost a conflict), and each run was cancelled once
        starts = Counter(g.start for g, _ in groups if g is not None)
        assert set(starts) == {0, 5, 10, 15}
        assert min(starts[5], starts[10], starts[15]) >= 2 * starts[0]
        assert sum(changed for _, changed in groups) == 200
        assert fleet.task(task_id)["status"] == "cancelled"
        assert_statistics_equal_recount()


class TestDispatchRoute:
    def test_more_than_100_new_nodes_answer_202_and_finish_in_the_queue(self, fleet: Fleet, recorder: Recorder) -> None:
        # GIVEN a running task of 2 nodes and 150 more registered nodes
        first = names(2, "r")
        task_id = submitted(fleet, first)
        fleet.settle()
        more = names(150, "m")
        fleet.register(*more)

        # WHEN they are dispatched
        answer = fleet.user("POST", f"/v1/tasks/{task_id}/dispatch", {"target_nodes": [first[0], *more]})

        # THEN 202 in_progress, the request made no run of the new nodes
        assert answer.status == 202, answer
        assert answer.body["dispatch"]["state"] == "in_progress"
        assert answer.body["dispatch"]["triggered"] is True
        assert answer.body["task"]["dispatch"]["state"] == "in_progress"
        assert len(list(runs.iter_runs(task_id))) == 2
        # (a second request meanwhile is told to wait)
        busy = fleet.user("POST", f"/v1/tasks/{task_id}/dispatch", {"target_nodes": ["m000"]})
        assert busy.status == 409, busy

        # WHEN the queue drains: the counts are final once the state is done
        fleet.settle(rounds=500)
        task = fleet.task(task_id)
        assert task["dispatch"] == {"triggered": True, "state": "done", "target_node_count": 152,
                                    "created_count": 152, "skipped_count": 0}
        assert_one_run_each(task_id, first + more)
        assert max(recorder.created) <= 5 * CHUNK

    def test_a_selector_dispatch_reaching_more_than_100_new_nodes_finishes_in_the_queue(
            self, fleet: Fleet, recorder: Recorder) -> None:
        # GIVEN a completed release on two labelled nodes, then 120 more nodes with its label
        labels = {"pool": "edge"}
        for node in names(2, "e"):
            answer = fleet.call("POST", "/v1/nodes", {"node_id": node, "labels": labels}, bearer=fleet.admin)
            assert answer.status == 201, answer
        task_id = str(fleet.submit({"type": "shell", "parameters": {"command": ["true"]},
                                    "target_selector": {"labels": labels}}).body["task_id"])
        fleet.settle()
        for node in names(120, "f"):
            answer = fleet.call("POST", "/v1/nodes", {"node_id": node, "labels": labels}, bearer=fleet.admin)
            assert answer.status == 201, answer

        # WHEN the task is dispatched by its selector
        answer = fleet.user("POST", f"/v1/tasks/{task_id}/dispatch", {"selector": True})

        # THEN 202 in progress, and once the queue drained every node has one run
        assert answer.status == 202, answer
        assert (answer.body["dispatch"]["state"], answer.body["dispatch"]["skipped_count"]) == ("in_progress", 2)
        fleet.settle(rounds=500)
        task = fleet.task(task_id)
        assert (task["dispatch"]["state"], task["dispatch"]["created_count"]) == ("done", 122)
        assert_one_run_each(task_id, names(2, "e") + names(120, "f"))

    def test_up_to_100_new_nodes_are_made_inline_with_200_done(self, fleet: Fleet) -> None:
        first = names(2, "r")
        task_id = submitted(fleet, first)
        fleet.settle()
        more = names(100, "m")
        fleet.register(*more)

        answer = fleet.user("POST", f"/v1/tasks/{task_id}/dispatch", {"target_nodes": more})

        assert answer.status == 200, answer
        assert answer.body["dispatch"] == {"triggered": True, "state": "done", "target_node_count": 100,
                                           "created_count": 100, "skipped_count": 0}
        assert len(list(runs.iter_runs(task_id))) == 102


def test_the_chunk_job_message_carries_the_continuation(fleet: Fleet, recorder: Recorder) -> None:
    """The continuation names task, attempt, chunk and dispatch id (what a resumed job needs)."""
    sent: list[dict[str, Any]] = []
    enqueue = jobs.enqueue

    def spy(kind: str, task_id: str, **fields: Any) -> None:
        sent.append(json.loads(json.dumps({"job": kind, "task_id": task_id, **fields})))
        enqueue(kind, task_id, **fields)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(jobs, "enqueue", spy)
        task_id = submitted(fleet, names(25))
        fleet.settle(rounds=500)
    chunks = [m for m in sent if m["job"] == jobs.DISPATCH]
    assert [m["chunk"] for m in chunks] == [1, 2]
    assert {m["dispatch_id"] for m in chunks} == {f"{task_id}:1"}
    assert {m["attempt"] for m in chunks} == {1}
