"""Two-phase tasks on moto: plan → apply_pending (reserved by heartbeat) → confirm → apply on
the same runner; a lost reservation (lapse, plan-lost, lapsed apply) plans again and waits for
a new confirmation; discard; the confirmation window; statistics equal a recount throughout."""

from __future__ import annotations

from typing import Any

import pytest

from chalicelib.services import sweeper
from tests.harness import Fleet, assert_statistics_equal_recount
from tests.scenarios import RUNNER, iac
from tests.service_clock import Clock

LEASE = 60


@pytest.fixture
def later(monkeypatch: pytest.MonkeyPatch) -> Clock:
    return Clock(monkeypatch)


def planned(fleet: Fleet, body: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    """A two-phase task whose plan succeeded on RUNNER: the task waits in apply_pending."""
    if RUNNER not in fleet.node_tokens:
        fleet.register(RUNNER)
    answer = fleet.submit(body or iac())
    assert answer.status == 202, answer
    fleet.settle()
    (run,) = fleet.claim(RUNNER)
    assert (run["phase"], run["step"], run["steps"]) == ("plan", "plan", ["plan"])
    assert fleet.finish(RUNNER, run).status == 200
    fleet.settle()
    task_id = str(answer.body["task_id"])
    assert fleet.task(task_id)["status"] == "apply_pending"
    return task_id, run


def heartbeat(fleet: Fleet, run: dict[str, Any]) -> Any:
    return fleet.agent(RUNNER, f"/v1/runs/{run['run_id']}/heartbeat", {"attempt": run["attempt"]})


def act(fleet: Fleet, task_id: str, action: str) -> Any:
    return fleet.user("POST", f"/v1/tasks/{task_id}/{action}")


def names(fleet: Fleet, task_id: str) -> list[str]:
    return [e["message"].split(":")[0] for e in fleet.events(task_id) if e["message"].startswith("task.")]


def applied(fleet: Fleet, task_id: str) -> dict[str, Any]:
    """Confirm, let the runner claim and finish the apply; the task's final state."""
    assert act(fleet, task_id, "confirm").status == 202
    fleet.settle()
    (apply,) = fleet.claim(RUNNER)
    assert (apply["phase"], apply["step"], apply["steps"]) == ("apply", "apply", ["apply"])
    assert fleet.finish(RUNNER, apply).status == 200
    fleet.settle()
    return fleet.task(task_id)


class TestPlanConfirmApply:
    def test_plan_waits_in_apply_pending_reserved_to_its_runner(self, fleet):
        # GIVEN a planned task
        task_id, _run = planned(fleet)
        # THEN the run waits too, and an event says the plan is ready
        (node_run,) = fleet.runs(task_id).values()
        assert (node_run["status"], node_run["attempt"], node_run["phase"]) == ("apply_pending", 1, "plan")
        assert (node_run["reservation"]["runner"], node_run["reservation"]["confirmed"]) == (RUNNER, False)
        task = fleet.task(task_id)
        assert task["node_counts"]["apply_pending"] == 1
        assert task["concurrency_key"] == "prod"  # iac.plan_apply: the workspace
        assert "task.apply_pending" in names(fleet, task_id)
        # AND nothing is claimable until the plan is confirmed
        assert fleet.claim(RUNNER) == []
        assert_statistics_equal_recount()
        assert fleet.stats()["by_status"]["apply_pending"] == 1

    def test_confirm_hands_the_apply_to_the_same_runner_and_keeps_the_plans_start(self, fleet):
        task_id, _ = planned(fleet)
        started_at = fleet.runs(task_id)[RUNNER]["started_at"]
        # WHEN confirmed
        confirmed = act(fleet, task_id, "confirm")
        assert confirmed.status == 202
        assert confirmed.body["status"] == "running"
        fleet.settle()
        assert fleet.task(task_id)["status"] == "running"  # not back to apply_pending
        # THEN the runner claims the apply phase of the same attempt
        (apply,) = fleet.claim(RUNNER)
        assert (apply["phase"], apply["attempt"]) == ("apply", 1)
        assert apply["parameters"]["secret_variables"] == {"token": "s3cr3t"}
        assert fleet.runs(task_id)[RUNNER]["started_at"] == started_at
        assert fleet.finish(RUNNER, apply).status == 200
        fleet.settle()
        task = fleet.task(task_id)
        assert (task["status"], task["node_counts"]["succeeded"]) == ("completed", 1)
        assert names(fleet, task_id).count("task.confirmed") == 1
        assert_statistics_equal_recount()

    def test_heartbeats_keep_the_reservation_beyond_a_lease(self, fleet, later):
        task_id, run = planned(fleet)
        for _ in range(4):  # two leases' worth of heartbeats
            later.advance(LEASE / 2)
            answer = heartbeat(fleet, run)
            assert answer.status == 200, answer
            sweeper.sweep()
        assert fleet.task(task_id)["status"] == "apply_pending"
        assert applied(fleet, task_id)["status"] == "completed"

    def test_a_replayed_plan_completion_answers_the_same(self, fleet):
        task_id, run = planned(fleet)
        again = fleet.finish(RUNNER, run)
        assert again.status == 200, again
        fleet.settle()
        assert fleet.task(task_id)["node_counts"]["apply_pending"] == 1
        assert_statistics_equal_recount()

    def test_a_failed_plan_fails_the_task(self, fleet):
        fleet.register(RUNNER)
        task_id = fleet.submit(iac()).body["task_id"]
        fleet.settle()
        (run,) = fleet.claim(RUNNER)
        assert fleet.finish(RUNNER, run, "failed", "plan exited 1").status == 200
        fleet.settle()
        assert fleet.task(task_id)["status"] == "failed"
        assert_statistics_equal_recount()

    def test_two_phase_tasks_take_exactly_one_target(self, fleet):
        answer = fleet.submit({**iac(), "target_nodes": ["a", "b"]})
        assert answer.status == 400
        assert answer.body["error"]["details"][0]["path"] == "$.target_nodes"


class TestLostReservation:
    def test_a_lapsed_reservation_plans_again_and_waits_for_a_new_confirmation(self, fleet, later):
        task_id, run = planned(fleet)
        # WHEN the runner stops heartbeating for longer than a lease
        later.advance(LEASE + 1)
        report = sweeper.sweep()
        assert report.replanned == [task_id]
        # THEN the task went back to pending with attempt + 1 and started planning again
        fleet.settle()
        task = fleet.task(task_id)
        assert (task["status"], task["attempt"]) == ("running", 2)
        node_run = fleet.runs(task_id)[RUNNER]
        assert (node_run["status"], node_run["attempt"]) == ("pending", 2)
        assert "task.replan" in names(fleet, task_id)
        # AND the stale runner is refused, and no confirmation is possible until it planned again
        assert heartbeat(fleet, run).status == 409
        assert fleet.finish(RUNNER, run).status == 409
        assert act(fleet, task_id, "confirm").body["error"]["code"] == "invalid_transition"
        # WHEN it plans again
        (replan,) = fleet.claim(RUNNER)
        assert (replan["phase"], replan["attempt"]) == ("plan", 2)
        assert fleet.finish(RUNNER, replan).status == 200
        fleet.settle()
        assert fleet.task(task_id)["status"] == "apply_pending"
        # THEN a new confirmation applies it
        task = applied(fleet, task_id)
        assert (task["status"], task["node_counts"]["succeeded"], task["attempt"]) == ("completed", 1, 2)
        assert_statistics_equal_recount()
        assert fleet.stats()["node_runs"]["succeeded"] == 1  # a replan never counts a run twice

    def test_a_confirmation_after_the_lapse_is_refused_and_replans_at_once(self, fleet, later):
        task_id, _ = planned(fleet)
        later.advance(LEASE + 1)
        # WHEN confirmed after the reservation lapsed, before the sweeper noticed
        answer = act(fleet, task_id, "confirm")
        # THEN no apply: 409 conflict, and the task plans again
        assert answer.status == 409
        assert answer.body["error"]["reason"] == "plan_lost"
        fleet.settle()
        assert fleet.task(task_id)["attempt"] == 2
        (run,) = fleet.claim(RUNNER)
        assert run["phase"] == "plan"

    def test_plan_lost_from_the_runner_plans_again(self, fleet):
        task_id, run = planned(fleet)
        lost = fleet.agent(RUNNER, f"/v1/runs/{run['run_id']}/plan-lost", {"attempt": 1})
        assert lost.status == 202, lost
        fleet.settle()
        assert (fleet.task(task_id)["status"], fleet.task(task_id)["attempt"]) == ("running", 2)
        assert "task.replan" in names(fleet, task_id)
        # a repeated report is for a stale attempt now
        again = fleet.agent(RUNNER, f"/v1/runs/{run['run_id']}/plan-lost", {"attempt": 1})
        assert again.status == 409
        (replan,) = fleet.claim(RUNNER)
        assert fleet.finish(RUNNER, replan).status == 200
        fleet.settle()
        assert applied(fleet, task_id)["status"] == "completed"
        assert_statistics_equal_recount()

    def test_plan_lost_outside_apply_pending_is_an_invalid_transition(self, fleet):
        fleet.register(RUNNER)
        fleet.submit(iac())
        fleet.settle()
        (run,) = fleet.claim(RUNNER)
        answer = fleet.agent(RUNNER, f"/v1/runs/{run['run_id']}/plan-lost", {"attempt": 1})
        assert answer.status == 409
        assert answer.body["error"]["code"] == "invalid_transition"

    def test_a_confirmed_plan_whose_runner_vanished_is_never_applied(self, fleet, later):
        task_id, _ = planned(fleet)
        assert act(fleet, task_id, "confirm").status == 202
        fleet.settle()
        # WHEN the runner dies before it claims the apply and the reservation lapses
        later.advance(LEASE + 1)
        # THEN even that runner cannot claim the apply any more
        assert fleet.claim(RUNNER) == []
        report = sweeper.sweep()
        assert report.replanned == [task_id]
        fleet.settle()
        (run,) = fleet.claim(RUNNER)
        assert (run["phase"], run["attempt"]) == ("plan", 2)
        assert fleet.finish(RUNNER, run).status == 200
        fleet.settle()
        assert fleet.task(task_id)["status"] == "apply_pending"  # a new confirmation is needed
        assert_statistics_equal_recount()

    def test_a_lapsed_apply_lease_goes_back_to_plan_not_to_another_apply(self, fleet, later):
        task_id, _ = planned(fleet)
        assert act(fleet, task_id, "confirm").status == 202
        fleet.settle()
        (apply,) = fleet.claim(RUNNER)
        later.advance(LEASE + 1)
        assert sweeper.sweep().replanned == [task_id]
        fleet.settle()
        (run,) = fleet.claim(RUNNER)
        assert (run["phase"], run["attempt"]) == ("plan", 2)
        assert fleet.finish(RUNNER, apply).status == 409  # the lost apply attempt is stale
        assert_statistics_equal_recount()


class TestDiscard:
    def test_discard_releases_the_reservation(self, fleet):
        task_id, run = planned(fleet)
        answer = act(fleet, task_id, "discard")
        assert answer.status == 202
        assert answer.body["status"] == "discarded"
        assert answer.body["completed_at"] is not None
        fleet.settle()
        assert fleet.runs(task_id)[RUNNER]["status"] == "cancelled"
        assert heartbeat(fleet, run).status == 409
        assert act(fleet, task_id, "confirm").status == 409
        assert_statistics_equal_recount()
        assert fleet.stats()["by_status"]["discarded"] == 1

    def test_the_sweeper_discards_a_plan_not_confirmed_within_the_window(self, fleet, later, monkeypatch):
        monkeypatch.setenv("FLEETRUN_CONFIRMATION_WINDOW_SECONDS", "300")
        from chalicelib import config

        config.reset()
        task_id, run = planned(fleet)
        for _ in range(5):  # the runner holds the plan for 250 s
            later.advance(50)
            assert heartbeat(fleet, run).status == 200
        assert sweeper.sweep().discarded == []
        later.advance(55)
        assert heartbeat(fleet, run).status == 200
        assert sweeper.sweep().discarded == [task_id]
        fleet.settle()
        task = fleet.task(task_id)
        assert task["status"] == "discarded"
        assert "300 s" in task["error_message"]
        assert "task.discarded" in names(fleet, task_id)
        assert_statistics_equal_recount()

    def test_cancel_from_apply_pending(self, fleet):
        task_id, run = planned(fleet)
        assert act(fleet, task_id, "cancel").status == 202
        fleet.settle()
        assert fleet.task(task_id)["status"] == "cancelled"
        assert heartbeat(fleet, run).status == 409
        assert_statistics_equal_recount()


class TestCancelAndRetry:
    def test_a_plan_finishing_after_cancel_does_not_wait_for_confirmation(self, fleet):
        fleet.register(RUNNER)
        task_id = fleet.submit(iac()).body["task_id"]
        fleet.settle()
        (run,) = fleet.claim(RUNNER)
        assert act(fleet, task_id, "cancel").status == 202
        fleet.settle()
        # WHEN the plan still succeeds THEN the run ends cancelled, not apply_pending
        assert fleet.finish(RUNNER, run).status == 200
        fleet.settle()
        assert fleet.runs(task_id)[RUNNER]["status"] == "cancelled"
        assert fleet.task(task_id)["status"] == "cancelled"
        assert_statistics_equal_recount()

    def test_a_cancelled_confirmed_task_retried_plans_and_waits_again(self, fleet):
        task_id, _ = planned(fleet)
        assert act(fleet, task_id, "confirm").status == 202
        fleet.settle()
        assert act(fleet, task_id, "cancel").status == 202
        fleet.settle()
        assert fleet.task(task_id)["status"] == "cancelled"
        # WHEN retried THEN it plans again (never applies the old confirmation) and waits
        assert fleet.user("POST", f"/v1/tasks/{task_id}/retry", {"scope": "failed"}).status == 202
        fleet.settle()
        (run,) = fleet.claim(RUNNER)
        assert (run["phase"], run["attempt"]) == ("plan", 2)
        assert fleet.finish(RUNNER, run).status == 200
        fleet.settle()
        assert fleet.task(task_id)["status"] == "apply_pending"
        assert applied(fleet, task_id)["status"] == "completed"
        assert_statistics_equal_recount()


def test_a_two_phase_task_takes_no_further_nodes(fleet):
    task_id, _ = planned(fleet)
    answer = fleet.user("POST", f"/v1/tasks/{task_id}/confirm")
    assert answer.status == 202
    added = fleet.user("POST", f"/v1/tasks/{task_id}/dispatch", {"target_nodes": ["tf-b"]})
    assert added.status == 400
    assert added.body["error"]["code"] == "validation_error"
