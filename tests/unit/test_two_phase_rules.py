"""The pure parts of two-phase tasks and concurrency keys: phases and steps of a type, the
default key, the progress a planned run contributes, and the agent's plan reservations
(against a fake API: persisted, heartbeated, reported lost, dropped when refused)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from chalicelib.domain.rules import run_progress_weight
from chalicelib.domain.run_transitions import RUN_TRANSITIONS
from chalicelib.domain.task_transitions import TASK_TRANSITIONS
from chalicelib.domain.task_types import get_task_type
from chalicelib.services.concurrency import default_key
from fleetrun.agent.journal import Journal
from fleetrun.agent.protocol import HeartbeatAnswer, LeaseLost, Unavailable
from fleetrun.agent.reservations import Reservations


class TestTwoPhaseTypes:
    def test_plan_apply_has_a_plan_phase_and_an_apply_phase(self):
        kind = get_task_type("iac.plan_apply")
        assert kind.first_phase == "plan"
        assert (kind.steps_of("plan"), kind.steps_of("apply")) == (("plan",), ("apply",))

    def test_one_phase_types_run(self):
        kind = get_task_type("shell")
        assert (kind.first_phase, kind.steps_of("run")) == ("run", ("run",))

    @pytest.mark.parametrize(("action", "sources", "target"), [
        ("await_confirmation", {"running"}, "apply_pending"),
        ("confirm", {"apply_pending"}, "running"),
        ("discard", {"apply_pending"}, "discarded"),
        ("replan", {"apply_pending", "running"}, "pending"),
    ])
    def test_task_transitions_of_the_two_phases(self, action, sources, target):
        transition = TASK_TRANSITIONS[action]
        assert (transition.sources, transition.target) == (frozenset(sources), target)

    @pytest.mark.parametrize(("action", "sources", "target"), [
        ("await_confirmation", {"running"}, "apply_pending"),
        ("claim_apply", {"apply_pending"}, "running"),
        ("replan_lapsed", {"apply_pending"}, "pending"),
        ("replan_lost", {"apply_pending"}, "pending"),
        ("replan_apply_lapsed", {"running"}, "pending"),
        ("cancel", {"pending", "apply_pending"}, "cancelled"),
    ])
    def test_run_transitions_of_the_two_phases(self, action, sources, target):
        transition = RUN_TRANSITIONS[action]
        assert (transition.sources, transition.target) == (frozenset(sources), target)

    def test_a_planned_run_counts_its_progress_like_a_running_one(self):
        assert run_progress_weight("apply_pending", 50) == 50
        assert run_progress_weight("apply_pending", 100) == 99


class TestDefaultConcurrencyKey:
    def test_plan_apply_defaults_to_its_workspace(self):
        assert default_key(get_task_type("iac.plan_apply"), {"workspace": "prod"}, None) == "prod"

    def test_a_given_key_wins(self):
        assert default_key(get_task_type("iac.plan_apply"), {"workspace": "prod"}, "shared") == "shared"

    def test_other_types_have_none_unless_given(self):
        assert default_key(get_task_type("shell"), {"command": ["true"]}, None) is None
        assert default_key(get_task_type("shell"), {"command": ["true"]}, "k") == "k"


class FakeApi:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, int]] = []
        self.refuse = False
        self.down = False

    def hold(self, run_id: str, attempt: int) -> HeartbeatAnswer:
        self.calls.append(("hold", run_id, attempt))
        if self.down:
            raise Unavailable("down")
        if self.refuse:
            raise LeaseLost("409 conflict")
        return HeartbeatAnswer(lease_expires_at=9e9, cancel_requested=False)

    def plan_lost(self, run_id: str, attempt: int) -> None:
        self.calls.append(("plan_lost", run_id, attempt))


@pytest.fixture
def plan_dir(tmp_path: Path) -> Path:
    path = tmp_path / "runs" / "T1" / "tf-a"
    path.mkdir(parents=True)
    (path / "plan.json").write_text("{}")
    return path


def book(api: Any, tmp_path: Path) -> Reservations:
    return Reservations(api, tmp_path / "reservations", Journal(io.StringIO()))


class TestReservations:
    def test_a_held_plan_is_heartbeated_with_its_attempt_and_persisted_without_parameters(self, tmp_path, plan_dir):
        api = FakeApi()
        held = book(api, tmp_path)
        held.hold("T1.tf-a", "T1", "tf-a", 2, plan_dir)
        held.tick()
        assert api.calls == [("hold", "T1.tf-a", 2)]
        record = json.loads((tmp_path / "reservations" / "T1.tf-a.json").read_text())
        assert record == {"run_id": "T1.tf-a", "task_id": "T1", "node": "tf-a", "attempt": 2,
                          "work_dir": str(plan_dir)}
        held.tick()  # not due again before a third of the lease
        assert len(api.calls) == 1

    def test_a_restarted_agent_holds_its_plans_again(self, tmp_path, plan_dir):
        book(FakeApi(), tmp_path).hold("T1.tf-a", "T1", "tf-a", 1, plan_dir)
        api = FakeApi()
        restarted = book(api, tmp_path)
        assert restarted.load() == 1
        restarted.tick()
        assert api.calls == [("hold", "T1.tf-a", 1)]

    def test_a_plan_whose_directory_is_gone_is_reported_lost(self, tmp_path, plan_dir):
        api = FakeApi()
        held = book(api, tmp_path)
        held.hold("T1.tf-a", "T1", "tf-a", 1, plan_dir)
        for path in plan_dir.iterdir():
            path.unlink()
        held.tick()
        assert api.calls == [("plan_lost", "T1.tf-a", 1)]
        assert held.held() == []
        assert not (tmp_path / "reservations" / "T1.tf-a.json").exists()

    def test_a_refused_heartbeat_drops_the_stale_plan(self, tmp_path, plan_dir):
        api = FakeApi()
        api.refuse = True
        held = book(api, tmp_path)
        held.hold("T1.tf-a", "T1", "tf-a", 1, plan_dir)
        held.tick()
        assert held.held() == []
        assert not plan_dir.exists()  # nothing can ever apply a plan the service no longer holds

    def test_an_unreachable_api_keeps_the_plan(self, tmp_path, plan_dir):
        api = FakeApi()
        api.down = True
        held = book(api, tmp_path)
        held.hold("T1.tf-a", "T1", "tf-a", 1, plan_dir)
        held.tick()
        assert held.held() == ["T1.tf-a"]
        assert plan_dir.exists()

    def test_the_apply_claim_takes_the_plan_over(self, tmp_path, plan_dir):
        api = FakeApi()
        held = book(api, tmp_path)
        held.hold("T1.tf-a", "T1", "tf-a", 1, plan_dir)
        assert held.take("T1.tf-a") is True
        assert held.take("T1.tf-a") is False
        held.tick()
        assert api.calls == []
        assert plan_dir.exists()
