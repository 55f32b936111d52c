"""The service rules of the task and run lifecycle on the in-memory repository (no AWS):
dispatch, the concurrency window, claims, leases, completion, retry, cancel, finishing and the
two-phase reservation. The same rules run on moto in tests/integration."""

from __future__ import annotations

import pytest

from chalicelib import clock
from chalicelib.domain.records import Task
from chalicelib.domain.statuses import RUN_STATUSES
from chalicelib.domain.writes import Change
from chalicelib.errors import Conflict, InvalidTransition, LeaseLost, NotFound
from chalicelib.services import agent, backfill, cancellation, claims, dispatch, finishing, lifecycle, sweeper, twophase
from chalicelib.store import backend, events, runs, tasks
from chalicelib.store.memory import MemoryBackend


def submit(task_type: str = "shell", nodes: tuple[str, ...] = ("n-1", "n-2", "n-3"), **values) -> str:
    now = clock.now_iso()
    task = Task(task_id=f"T{len(backend.current().tasks):04d}", type=task_type, owner="alice",  # type: ignore[attr-defined]
                status="pending", created_at=now, updated_at=now, max_concurrency=values.pop("max_concurrency", 10),
                **values)
    tasks.create(task, list(nodes), None, events.new_item(task.task_id, [{"name": "task.created"}]))
    return task.task_id


def set_counts(memory: MemoryBackend, task_id: str, **counts: int) -> None:
    """What the stream aggregator would have written (it is not part of these rules)."""
    values = {**dict.fromkeys(RUN_STATUSES, 0), **counts}
    memory.update(Change("task", (task_id,), "aggregate", None, {f"counts.{s}": n for s, n in values.items()}))


def recount(memory: MemoryBackend, task_id: str) -> None:
    """Counts equal to the runs, as the aggregator keeps them."""
    found: dict[str, int] = {}
    for run in runs.iter_runs(task_id):
        found[run.status] = found.get(run.status, 0) + 1
    set_counts(memory, task_id, **found)


def claim_all(node: str, max_runs: int = 10) -> list[dict]:
    return claims.claim(node, max_runs)


class TestDispatch:
    def test_dispatch_creates_one_run_per_node_and_starts_the_task(self, memory):
        task_id = submit()
        dispatch.run_dispatch_job(task_id, 1)
        task = tasks.get(task_id)
        assert (task.status, task.created_count, task.dispatched_attempt) == ("running", 3, 1)
        assert sorted((r.node, r.ordinal, r.status) for r in runs.iter_runs(task_id)) == [
            ("n-1", 0, "pending"), ("n-2", 1, "pending"), ("n-3", 2, "pending")]

    def test_a_duplicate_dispatch_job_changes_nothing(self, memory):
        task_id = submit()
        dispatch.run_dispatch_job(task_id, 1)
        writes = len(memory.log)
        dispatch.run_dispatch_job(task_id, 1)
        assert len(memory.log) == writes

    def test_backfill_creates_runs_only_for_nodes_without_one(self, memory):
        task_id = submit(nodes=("n-1",))
        dispatch.run_dispatch_job(task_id, 1)
        answer = backfill.dispatch_nodes(tasks.get(task_id), ["n-1", "n-2"])
        assert (answer["created_count"], answer["skipped_count"]) == (1, 1)
        assert runs.find(task_id, "n-2").ordinal == 1  # type: ignore[union-attr]
        assert tasks.get(task_id).target_count == 2


class TestClaims:
    def test_the_window_lets_max_concurrency_runs_start_and_one_more_per_finished_run(self, memory):
        # GIVEN three runs of one runner with max_concurrency 1
        task_id = submit(nodes=("n-1", "n-2", "n-3"), runner_node="r", max_concurrency=1)
        dispatch.run_dispatch_job(task_id, 1)
        # WHEN the runner asks for all of them: only ordinal 0 starts
        assert [c["node"] for c in claim_all("r")] == ["n-1"]
        assert claim_all("r") == []
        # WHEN that run has finished (the counts say so): the next ordinal starts
        agent.complete("r", f"{task_id}.n-1", 1, "succeeded", None, None)
        recount(memory, task_id)
        assert [c["node"] for c in claim_all("r")] == ["n-2"]

    def test_a_halted_task_starts_nothing(self, memory):
        task_id = submit()
        dispatch.run_dispatch_job(task_id, 1)
        tasks.update_quietly(tasks.get(task_id), "halt", clock.now_iso())
        assert claim_all("n-1") == []

    def test_a_claim_carries_the_steps_and_lease(self, memory):
        task_id = submit(nodes=("n-1",))
        dispatch.run_dispatch_job(task_id, 1)
        [claimed] = claim_all("n-1")
        assert (claimed["attempt"], claimed["phase"], claimed["step"]) == (1, "run", "run")
        run = runs.find(task_id, "n-1")
        assert run is not None
        assert (run.status, run.lease_owner, run.claim_pk) == ("running", "n-1", None)


    def test_a_claim_takes_the_best_priority_and_oldest_task_first(self, memory):
        # GIVEN a runner's runs in an older and a newer task at priority 5, and a newest one at 9
        older = submit(nodes=("a-1", "a-2", "a-3"), runner_node="r", priority=5)
        newer = submit(nodes=("b-1", "b-2"), runner_node="r", priority=5)
        urgent = submit(nodes=("c-1", "c-2"), runner_node="r", priority=9)
        for task_id in (older, newer, urgent):
            dispatch.run_dispatch_job(task_id, 1)
        # WHEN the runner claims THEN the urgent task's runs come first, then the older task's
        first = claims.claim("r", 3)
        assert {c["node"] for c in first[:2]} == {"c-1", "c-2"}
        assert first[2]["task_id"] == older
        assert {c["task_id"] for c in claims.claim("r", 2)} == {older}
        # AND the newer task's last
        assert {c["node"] for c in claims.claim("r", 5)} == {"b-1", "b-2"}

    def test_claimers_of_one_runner_spread_over_the_runs_of_a_task(self, memory):
        # GIVEN twenty runs of one runner, all inside the task's concurrency window
        nodes = tuple(f"n-{i:02d}" for i in range(20))
        dispatch.run_dispatch_job(submit(nodes=nodes, runner_node="r", max_concurrency=20), 1)
        claims.random.seed(7)
        # WHEN two claimers take five each
        first, second = ([c["node"] for c in claims.claim("r", 5)] for _ in range(2))
        # THEN neither took simply the next five in line (each would have raced the other for them)
        assert len(set(first) | set(second)) == 10
        assert first != ["n-00", "n-01", "n-02", "n-03", "n-04"]
        assert second != ["n-05", "n-06", "n-07", "n-08", "n-09"]

    def test_a_claim_that_loses_a_race_takes_another_run(self, memory, monkeypatch):
        # GIVEN runs of one runner, the first that this claim tries leased by another claimer first
        dispatch.run_dispatch_job(submit(nodes=("n-1", "n-2", "n-3"), runner_node="r"), 1)
        lease, lost = claims._lease, []

        def lose_the_first(task, candidate, runner):
            if not lost:
                lost.append(candidate.node)
                lease(task, candidate, "another-agent")
                return None
            return lease(task, candidate, runner)

        monkeypatch.setattr(claims, "_lease", lose_the_first)
        # WHEN the runner claims two THEN it got the two others
        assert sorted(c["node"] for c in claims.claim("r", 2)) == sorted({"n-1", "n-2", "n-3"} - set(lost))

    def test_a_claim_reads_only_the_tasks_of_the_runs_it_takes(self, memory, monkeypatch):
        # GIVEN ten one-node tasks of one runner
        for i in range(10):
            dispatch.run_dispatch_job(submit(nodes=(f"n-{i}",), runner_node="r"), 1)
        reads: list[str] = []
        find = claims.tasks.find
        monkeypatch.setattr(claims.tasks, "find", lambda task_id: reads.append(task_id) or find(task_id))
        # WHEN the runner claims one run THEN one task was read, not the whole page's
        assert len(claims.claim("r", 1)) == 1
        assert len(reads) == 1

    def test_an_empty_claim_during_a_dispatch_says_when_to_ask_again(self, memory, monkeypatch):
        # GIVEN a task whose runs are created but whose dispatch has not started it yet
        task_id = submit(nodes=("n-1", "n-2"), runner_node="r")
        monkeypatch.setattr(dispatch.tasks, "transition", lambda *args, **kwargs: None)
        dispatch.run_dispatch_job(task_id, 1)
        monkeypatch.undo()
        assert tasks.get(task_id).status == "pending"
        assert runs.find(task_id, "n-1") is not None
        # WHEN its runner claims THEN nothing is leased, and the answer says to ask again soon
        assert claims.answer("r", 2) == {"runs": [], "retry_after_seconds": claims.DISPATCH_IN_PROGRESS_RETRY_SECONDS}
        # AND once the task has started, the claim leases its runs with no such hint
        dispatch.run_dispatch_job(task_id, 1)
        answer = claims.answer("r", 2)
        assert sorted(c["node"] for c in answer["runs"]) == ["n-1", "n-2"]
        assert "retry_after_seconds" not in answer

    def test_an_empty_claim_with_nothing_being_dispatched_has_no_hint(self, memory):
        # GIVEN a runner with a task whose only run is already leased
        dispatch.run_dispatch_job(submit(nodes=("n-1",), runner_node="r"), 1)
        claims.claim("r", 1)
        # THEN an empty claim carries no hint: the agent's own idle pause applies
        assert claims.answer("r", 1) == {"runs": []}
        assert claims.answer("nobody", 1) == {"runs": []}

    def test_spreading_keeps_priorities_and_tasks_in_their_order(self):
        # GIVEN candidates of two priorities and, in the first, two tasks
        def candidate(priority: str, task: str, ordinal: int) -> runs.ClaimCandidate:
            return runs.ClaimCandidate(task, f"{task}-{ordinal}", f"{priority}#{task}#{ordinal:06d}")

        page = ([candidate("1", "A", i) for i in range(8)] + [candidate("1", "B", i) for i in range(8)]
                + [candidate("5", "C", i) for i in range(8)])
        spread = list(page)
        claims.random.seed(3)
        # WHEN they are spread
        claims._spread(spread)
        # THEN the runs of each task stay together, tasks and priorities in order, shuffled within
        assert [c.task_id for c in spread] == [c.task_id for c in page]
        assert [c.node for c in spread] != [c.node for c in page]
        assert sorted(c.node for c in spread) == sorted(c.node for c in page)


class TestCompletion:
    def test_a_task_s_secret_values_are_read_once_for_all_its_completions(self, memory, monkeypatch):
        # GIVEN three claimed runs of one task
        task_id = submit(nodes=("n-1", "n-2", "n-3"), runner_node="r")
        dispatch.run_dispatch_job(task_id, 1)
        claimed = claims.claim("r", 3)
        reads: list[str] = []
        read = agent.tasks.get

        def counted(task_id: str, **kwargs):
            reads.append(task_id)
            return read(task_id, **kwargs)

        monkeypatch.setattr(agent.tasks, "get", counted)
        # WHEN each completes with output to scrub
        for run in claimed:
            agent.complete("r", run["run_id"], 1, "succeeded", None, "output")
        # THEN the task (its sealed secrets) was read once, not once per completion
        assert reads == [task_id]


    def test_a_success_is_recorded_without_reading_the_run(self, memory, monkeypatch):
        # GIVEN two claimed runs of a one-phase task
        task_id = submit(nodes=("n-1", "n-2"), runner_node="r")
        dispatch.run_dispatch_job(task_id, 1)
        claimed = claims.claim("r", 2)
        reads: list[str] = []
        find = agent.runs.find
        monkeypatch.setattr(agent.runs, "find", lambda *key, **kw: reads.append(key[1]) or find(*key, **kw))
        # WHEN both succeed
        for run in claimed:
            assert agent.complete("r", run["run_id"], 1, "succeeded", None, None)["replayed"] is False
        # THEN the runs were written without being read first, and they succeeded
        assert reads == []
        assert {run.status for run in runs.iter_runs(task_id)} == {"succeeded"}

    def test_a_success_reported_by_another_node_is_not_found_and_changes_nothing(self, memory):
        # GIVEN a run leased by its runner
        task_id = submit(nodes=("n-1",), runner_node="r")
        dispatch.run_dispatch_job(task_id, 1)
        claims.claim("r", 1)
        # WHEN another node reports it succeeded THEN it is not found (as any run it does not hold)
        with pytest.raises(NotFound):
            agent.complete("intruder", f"{task_id}.n-1", 1, "succeeded", None, None)
        run = runs.find(task_id, "n-1")
        assert run is not None
        assert (run.status, run.lease_owner) == ("running", "r")
        # AND the runner's own report is then recorded
        assert agent.complete("r", f"{task_id}.n-1", 1, "succeeded", None, None)["replayed"] is False


class TestLeases:
    def _running(self) -> str:
        task_id = submit(nodes=("n-1",))
        dispatch.run_dispatch_job(task_id, 1)
        claim_all("n-1")
        return task_id

    def test_a_heartbeat_of_another_attempt_is_lease_lost(self, memory):
        task_id = self._running()
        assert agent.heartbeat("n-1", f"{task_id}.n-1", 1, 40, "run")["cancel_requested"] is False
        with pytest.raises(LeaseLost):
            agent.heartbeat("n-1", f"{task_id}.n-1", 2, 40, "run")

    def test_a_repeated_completion_is_answered_as_a_replay_and_a_stale_one_refused(self, memory):
        task_id = self._running()
        assert agent.complete("n-1", f"{task_id}.n-1", 1, "failed", "exit 1", "boom")["replayed"] is False
        assert agent.complete("n-1", f"{task_id}.n-1", 1, "failed", "exit 1", "boom")["replayed"] is True
        with pytest.raises(LeaseLost):
            agent.complete("n-1", f"{task_id}.n-1", 1, "succeeded", None, None)
        run = runs.find(task_id, "n-1")
        assert run is not None
        assert (run.status, run.error_message, run.output) == ("failed", "exit 1", "boom")

    def test_a_lapsed_lease_is_offered_again_then_times_out_on_the_last_attempt(self, memory):
        # GIVEN a running run whose lease lapsed (shell: 3 attempts)
        task_id = self._running()
        report = sweeper.SweepReport()
        later = clock.now_epoch() + 3600
        sweeper._expire_leases(tasks.get(task_id), later, report)
        run = runs.find(task_id, "n-1")
        assert run is not None
        assert (run.status, run.attempt, run.claim_pk) == ("pending", 2, "RUNNER#n-1")
        # WHEN it lapses on every attempt
        for _ in range(2):
            claim_all("n-1")
            sweeper._expire_leases(tasks.get(task_id), later + 3600, report)
        # THEN the last one times out with a reason
        run = runs.find(task_id, "n-1")
        assert run is not None
        assert (run.status, run.attempt) == ("timed_out", 3)
        assert "attempt 3 of 3" in (run.error_message or "")
        assert (report.requeued_runs, report.timed_out_runs) == (2, 1)


class TestFinishing:
    def test_a_task_whose_runs_all_succeeded_completes(self, memory):
        task_id = submit(nodes=("n-1", "n-2"))
        dispatch.run_dispatch_job(task_id, 1)
        set_counts(memory, task_id, succeeded=2)
        finishing.settle(tasks.get(task_id))
        task = tasks.get(task_id)
        assert (task.status, task.error_message, task.completed_at is not None) == ("completed", None, True)

    def test_failures_over_the_budget_halt_the_task_then_fail_it(self, memory):
        task_id = submit(nodes=("n-1", "n-2", "n-3"), max_errors="0")
        dispatch.run_dispatch_job(task_id, 1)
        set_counts(memory, task_id, failed=1, pending=2)
        finishing.settle(tasks.get(task_id))
        assert tasks.get(task_id).halted is True
        set_counts(memory, task_id, failed=1, cancelled=2)
        finishing.settle(tasks.get(task_id))
        assert tasks.get(task_id).status == "failed"

    def test_a_decision_from_stale_counts_is_not_written(self, memory):
        # GIVEN a task read before the aggregator moved its counts on
        task_id = submit(nodes=("n-1",))
        dispatch.run_dispatch_job(task_id, 1)
        set_counts(memory, task_id, succeeded=1)
        stale = tasks.get(task_id)
        memory.update(Change("task", (task_id,), "aggregate", None, {"counted_ver": 99}))
        # WHEN it settles from the stale read THEN nothing changes
        finishing.settle(stale)
        assert tasks.get(task_id).status == "running"


class TestRetryAndCancel:
    def _failed(self, memory: MemoryBackend) -> str:
        task_id = submit(nodes=("n-1", "n-2", "n-3"), max_errors="3")
        dispatch.run_dispatch_job(task_id, 1)
        for node, outcome in (("n-1", "succeeded"), ("n-2", "failed"), ("n-3", "failed")):
            claims.claim(node, 1)
            agent.complete(node, f"{task_id}.{node}", 1, outcome, None, None)
        recount(memory, task_id)
        finishing.settle(tasks.get(task_id))
        assert tasks.get(task_id).status == "partial_failure"
        return task_id

    def test_retry_of_failed_nodes_resets_only_them_with_dense_ordinals(self, memory):
        task_id = self._failed(memory)
        retried = lifecycle.retry(tasks.get(task_id), "failed", "alice")
        assert (retried.status, retried.attempt, retried.completed_at, retried.error_message) == (
            "pending", 2, None, None)
        assert (retried.counts["pending"], retried.counts["succeeded"], retried.finished_base) == (2, 1, 1)
        dispatch.run_dispatch_job(task_id, 2)
        reset = {r.node: (r.status, r.ordinal, r.attempt, r.generation) for r in runs.iter_runs(task_id)}
        assert reset == {"n-1": ("succeeded", 0, 1, 1), "n-2": ("pending", 0, 2, 2), "n-3": ("pending", 1, 2, 2)}
        assert tasks.get(task_id).created_count == 2

    def test_a_retry_decided_from_stale_counts_is_a_conflict(self, memory):
        task_id = self._failed(memory)
        stale = tasks.get(task_id)
        set_counts(memory, task_id, succeeded=2, failed=1)
        with pytest.raises(Conflict):
            lifecycle.retry(stale, "failed", "alice")

    def test_cancel_of_a_small_task_cancels_what_has_not_started_and_asks_the_running_to_stop_at_once(
            self, memory):
        # GIVEN a 2-node task, one of its runs claimed
        task_id = submit(nodes=("n-1", "n-2"))
        dispatch.run_dispatch_job(task_id, 1)
        claims.claim("n-1", 1)
        # WHEN it is cancelled THEN its cancel job is done in the request: the job that the
        # stream sends afterwards finds nothing left to do
        lifecycle.cancel(tasks.get(task_id), "alice")
        assert cancellation.cancel_runs(task_id, 1, include_running=True) == 0
        first, second = runs.find(task_id, "n-1"), runs.find(task_id, "n-2")
        assert first is not None
        assert (first.status, first.cancel_requested) == ("running", True)
        assert second is not None
        assert (second.status, second.claim_pk) == ("cancelled", None)
        with pytest.raises(InvalidTransition):
            lifecycle.cancel(tasks.get(task_id), "alice")

    def test_cancel_of_a_task_over_the_inline_limit_leaves_its_runs_to_the_cancel_job(self, memory):
        nodes = tuple(f"n-{i:03d}" for i in range(lifecycle.INLINE_CANCEL_LIMIT + 1))
        task_id = submit(nodes=nodes)
        dispatch.run_dispatch_job(task_id, 1)
        made = len(list(runs.iter_runs(task_id)))
        lifecycle.cancel(tasks.get(task_id), "alice")
        assert {r.status for r in runs.iter_runs(task_id)} == {"pending"}
        assert cancellation.cancel_runs(task_id, 1, include_running=True) == made


class TestTwoPhase:
    def _planned(self, memory: MemoryBackend) -> str:
        task_id = submit("iac.plan_apply", nodes=("n-1",))
        dispatch.run_dispatch_job(task_id, 1)
        [claimed] = claims.claim("n-1", 1)
        assert claimed["phase"] == "plan"
        agent.complete("n-1", f"{task_id}.n-1", 1, "succeeded", None, None)
        set_counts(memory, task_id, apply_pending=1)
        finishing.settle(tasks.get(task_id))
        assert tasks.get(task_id).status == "apply_pending"
        return task_id

    def test_a_confirmed_plan_is_applied_by_its_runner_only(self, memory):
        task_id = self._planned(memory)
        assert agent.heartbeat("n-1", f"{task_id}.n-1", 1, None, None)["reserved"] is True
        confirmed = lifecycle.confirm(tasks.get(task_id), "alice")
        assert (confirmed.status, confirmed.plan_confirmed) == ("running", True)
        [apply] = claims.claim("n-1", 1)
        assert apply["phase"] == "apply"
        run = runs.find(task_id, "n-1")
        assert run is not None
        assert run.reservation_expires_at is None
        assert run.started_at is not None

    def test_a_stale_settle_never_takes_a_confirmed_task_back_to_apply_pending(self, memory):
        # GIVEN a planned task, running again before it was seen waiting (a second stream batch's read)
        task_id = submit("iac.plan_apply", nodes=("n-1",))
        dispatch.run_dispatch_job(task_id, 1)
        claims.claim("n-1", 1)
        agent.complete("n-1", f"{task_id}.n-1", 1, "succeeded", None, None)
        set_counts(memory, task_id, apply_pending=1)
        stale = tasks.get(task_id)
        finishing.settle(tasks.get(task_id))
        # WHEN the plan is confirmed and the stale read settles the task (same counts, same attempt)
        lifecycle.confirm(tasks.get(task_id), "alice")
        assert twophase.await_confirmation(stale) is False
        # THEN the task stays confirmed and running: the apply's end finishes it
        task = tasks.get(task_id)
        assert (task.status, task.plan_confirmed) == ("running", True)

    def test_a_lapsed_reservation_plans_again_and_a_late_confirm_is_refused(self, memory):
        task_id = self._planned(memory)
        assert twophase.sweep_task(tasks.get(task_id), clock.now_epoch() + 3600) == "replanned"
        task = tasks.get(task_id)
        assert (task.status, task.attempt, task.retry_scope) == ("pending", 2, "replan")
        run = runs.find(task_id, "n-1")
        assert run is not None
        assert (run.status, run.attempt, run.phase, run.reservation_owner) == (
            "pending", 2, "plan", None)
        with pytest.raises(InvalidTransition):
            lifecycle.confirm(tasks.get(task_id), "alice")

    def test_discard_cancels_the_planned_run_and_releases_the_reservation(self, memory):
        task_id = self._planned(memory)
        discarded = lifecycle.discard(tasks.get(task_id), "alice")
        assert discarded.status == "discarded"
        run = runs.find(task_id, "n-1")
        assert run is not None
        assert (run.status, run.reservation_expires_at) == ("cancelled", None)
        with pytest.raises(LeaseLost):
            agent.heartbeat("n-1", f"{task_id}.n-1", 1, None, None)
