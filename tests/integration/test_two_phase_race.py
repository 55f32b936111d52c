"""Confirm racing the lapse of the plan reservation, 100 times with jitter, on moto.

Each repetition starts, around the moment the reservation of a planned task lapses, a user
who confirms and then lets the runner claim the apply, the sweeper, and the runner's own
heartbeat, each after a random delay. Whatever the interleaving: there is never an apply
claim that started after the last expiry the service granted, never both an apply claim and
a replan of the same attempt, and a plan that was not applied is always planned again.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest

from chalicelib import clock
from chalicelib.errors import FleetrunError
from chalicelib.services import agent, claims, lifecycle, twophase
from chalicelib.store import runs, tasks
from tests.harness import Fleet, assert_statistics_equal_recount
from tests.scenarios import RUNNER, iac
from tests.service_clock import Clock

REPETITIONS = int(os.environ.get("RACE_REPETITIONS", "100"))
BATCH = 50
#: the service's clock starts this far around the expiry (a moto call takes 0.05-0.2 s here)
EARLY, LATE = 0.6, 0.2
#: each party waits up to this long before it acts
JITTER = 0.06
#: in this share of the repetitions the runner is alive and heartbeats during the race
RUNNER_ALIVE = 0.3


@dataclass
class Race:
    task_id: str
    expires: float
    granted: list[float] = field(default_factory=list)
    confirmed: bool = False
    apply_claims: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    replanned: bool = False


def planned_batch(fleet: Fleet, count: int) -> list[str]:
    ids = []
    for i in range(count):
        answer = fleet.submit(iac(workspace=f"race-{i}-{random.randrange(1 << 30)}"))
        assert answer.status == 202, answer
        ids.append(answer.body["task_id"])
    fleet.settle()
    waiting = set(ids)
    while waiting:
        claimed = fleet.claim(RUNNER, 50)
        assert claimed, "every plan should be claimable"
        for run in claimed:
            assert fleet.finish(RUNNER, run).status == 200
            waiting.discard(run["task_id"])
    fleet.settle()
    assert {fleet.task(i)["status"] for i in ids} == {"apply_pending"}
    return ids


def _after(delay: float) -> None:
    time.sleep(delay)


def race_once(task_id: str, later: Clock) -> Race:
    run = runs.find(task_id, RUNNER)
    assert run is not None
    assert run.reservation_expires_at is not None
    race = Race(task_id, float(run.reservation_expires_at))
    # the service's clock now reads the reservation's expiry, give or take the jitter
    later.offset = race.expires - time.time() + random.uniform(-EARLY, LATE)
    alive = random.random() < RUNNER_ALIVE
    start = threading.Barrier(3)

    def user() -> None:
        start.wait()
        _after(random.uniform(0, JITTER))
        try:
            twophase.confirm(tasks.get(task_id), "alice")
            race.confirmed = True
        except FleetrunError:
            return
        for _ in range(3):
            began = clock.now_epoch()
            for claimed in claims.claim(RUNNER, 1):
                if claimed["task_id"] == task_id and claimed["phase"] == "apply":
                    race.apply_claims.append((began, claimed))

    def sweeper() -> None:
        start.wait()
        _after(random.uniform(0, JITTER))
        race.replanned = twophase.sweep_task(tasks.get(task_id), clock.now_epoch()) == "replanned"

    def runner() -> None:
        start.wait()
        if not alive:
            return
        _after(random.uniform(0, JITTER))
        try:
            answer = agent.heartbeat(RUNNER, runs.run_id(task_id, RUNNER), 1, None, None)
        except FleetrunError:
            return
        race.granted.append(clock.parse_rfc3339(answer["lease_expires_at"]))

    threads = [threading.Thread(target=f) for f in (user, sweeper, runner)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return race


def judge(race: Race, later: Clock) -> str:
    """Check the invariants of one repetition; returns its outcome."""
    assert len(race.apply_claims) <= 1, race
    if race.apply_claims:
        began, claimed = race.apply_claims[0]
        # an apply claim started only while a reservation the service granted was live
        assert began < max([race.expires, *race.granted]), race
        assert (race.confirmed, race.replanned, claimed["attempt"]) == (True, False, 1), race
        task = tasks.get(race.task_id)
        assert (task.status, int(task.attempt)) == ("running", 1), race
        return "applied"
    # not applied: once the reservation has certainly lapsed, the task plans again
    twophase.sweep_task(tasks.get(race.task_id), later.now() + 3600)
    run = runs.find(race.task_id, RUNNER)
    task = tasks.get(race.task_id)
    assert run is not None, race
    assert (run.status, int(run.attempt), run.phase) == ("pending", 2, "plan"), race
    assert (task.status, int(task.attempt)) == ("pending", 2), race
    lifecycle.cancel(task, "test")  # out of the way of the next repetitions' claims
    return "confirmed, then replanned" if race.confirmed else "replanned"


@pytest.fixture
def later(monkeypatch: pytest.MonkeyPatch) -> Clock:
    return Clock(monkeypatch)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_confirm_racing_the_lapse_never_applies_without_a_live_reservation(fleet, later):
    fleet.register(RUNNER)
    outcomes: Counter[str] = Counter()
    for first in range(0, REPETITIONS, BATCH):
        later.offset = 0.0
        for task_id in planned_batch(fleet, min(BATCH, REPETITIONS - first)):
            outcomes[judge(race_once(task_id, later), later)] += 1
    print(f"outcomes of {REPETITIONS} races: {dict(outcomes)}")
    assert sum(outcomes.values()) == REPETITIONS
    # the jitter puts both sides of the race in play
    assert outcomes["applied"]
    assert (outcomes["replanned"] + outcomes["confirmed, then replanned"])
    later.offset = 0.0
    fleet.settle()
    assert_statistics_equal_recount()
