"""An agent told `503 service_unavailable` (or 429) waits what `Retry-After` asks (capped, with
jitter) and tries again: a heartbeat is retried before the lease would lapse, a completion is
retried until delivered — the run is never abandoned."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from fleetrun.agent.backoff import Backoff
from fleetrun.agent.execution import RunExecution
from fleetrun.agent.journal import Journal
from fleetrun.agent.lease import LeaseKeeper
from fleetrun.agent.loop import Agent
from fleetrun.agent.protocol import MAX_RETRY_AFTER_SECONDS, AgentApi, ClaimedRun, HeartbeatAnswer, Unavailable
from fleetrun.agent.settings import AgentSettings
from tests.json_service import serving


def _iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def _wire_run(lease_seconds: float) -> dict[str, Any]:
    return {"run_id": "T1.n-1", "task_id": "T1", "node": "n-1", "type": "shell", "phase": "run", "step": "run",
            "steps": ["run"], "attempt": 1, "parameters": {},
            "lease_expires_at": _iso(datetime.now(UTC) + timedelta(seconds=lease_seconds))}


class _Busy503:
    """A fake service over HTTP: the first `busy` calls of each route answer 503 with `Retry-After`."""

    def __init__(self, busy: int, retry_after: str = "1") -> None:
        self.busy, self.retry_after = busy, retry_after
        self.calls: list[str] = []
        self.answered: dict[str, int] = {}

    def answer(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, str], dict[str, Any]]:
        self.calls.append(path)
        seen = self.answered[path] = self.answered.get(path, 0) + 1
        if seen <= self.busy:
            body = {"error": {"code": "service_unavailable", "message": "busy", "retry_after": 1}}
            return 503, {"Retry-After": self.retry_after}, body
        if path.endswith("/claim"):
            return 200, {}, {"runs": []}
        if path.endswith("/report"):  # the batched route: every item answered 200
            lease = _iso(datetime.now(UTC) + timedelta(seconds=30))
            return 200, {}, {
                "heartbeats": [{"run_id": h["run_id"], "status": 200, "lease_expires_at": lease,
                                "cancel_requested": False} for h in body.get("heartbeats", [])],
                "completions": [{"run_id": c["run_id"], "status": 200, "replayed": False}
                                for c in body.get("completions", [])],
            }
        return 200, {}, {"run_id": "T1.n-1", "status": "succeeded"}


@pytest.fixture
def served() -> Iterator[tuple[str, _Busy503]]:
    service = _Busy503(busy=2, retry_after="1")
    with serving(service.answer) as url:
        yield url, service


def test_a_503_reads_as_unavailable_with_the_retry_after_the_service_asked_for(served):
    # GIVEN a service that answers 503 with Retry-After: 1
    url, _ = served
    api = AgentApi(url, "n-1", "t")
    run = ClaimedRun.from_wire(_wire_run(30))
    # WHEN the agent completes a run THEN it learns to come back in a second
    with pytest.raises(Unavailable) as raised:
        api.complete(run, "succeeded", None, None, [])
    assert raised.value.retry_after == 1.0


def test_a_retry_after_is_honoured_with_jitter_and_capped():
    delays = [Backoff(base=0.01, cap=30.0).next_delay(retry_after=2.0) for _ in range(50)]
    assert all(2.0 <= delay <= 2.4 for delay in delays)
    assert len(set(delays)) > 1  # jittered: agents told the same wait do not return in step
    assert Backoff(cap=30.0).next_delay(retry_after=3600.0) <= 30.0 * 1.2
    assert MAX_RETRY_AFTER_SECONDS <= 30.0


class _FlakyHeartbeats:
    """An agent API whose first `busy` heartbeats answer 503 asking for a long wait."""

    def __init__(self, busy: int, lease_seconds: float, clock: list[float]) -> None:
        self.busy, self.lease_seconds, self.clock = busy, lease_seconds, clock
        self.tries: list[float] = []
        self.delivered: list[float] = []

    def heartbeat(self, run: ClaimedRun, progress: int, step: str) -> HeartbeatAnswer:
        self.tries.append(self.clock[0])
        if len(self.tries) <= self.busy:
            raise Unavailable("API answered 503 service_unavailable", retry_after=MAX_RETRY_AFTER_SECONDS)
        self.delivered.append(self.clock[0])
        return HeartbeatAnswer(time.time() + self.lease_seconds, False)

    def send_events(self, run: ClaimedRun, events: list[dict[str, Any]]) -> None:
        return


def test_heartbeats_refused_with_503_are_retried_before_the_lease_lapses():
    # GIVEN a run under a 30 s lease, and a service whose first four heartbeats answer 503
    # asking for 30 s (as long as the whole lease)
    clock = [0.0]
    api = _FlakyHeartbeats(busy=4, lease_seconds=30.0, clock=clock)
    keeper = LeaseKeeper(api, ClaimedRun.from_wire(_wire_run(30)), Journal(io.StringIO()), "T1.n-1",  # type: ignore[arg-type]
                         clock=lambda: clock[0])
    # WHEN the run's monitor ticks for the length of the lease
    while clock[0] < 29.5 and not api.delivered:
        clock[0] += 0.05
        keeper.tick()
    # THEN every refused heartbeat was tried again soon enough for one to land within the lease
    assert len(api.tries) == 5, api.tries
    assert api.delivered
    assert api.delivered[0] < 29.5
    assert not keeper.lost


def test_a_completion_answered_503_is_retried_until_delivered(tmp_path: Path, served):
    # GIVEN an agent with a one-second step, and a service that answers 503 (Retry-After: 1)
    # to the first two calls of each route
    url, service = served
    step = tmp_path / "steps" / "shell" / "run"
    step.parent.mkdir(parents=True)
    step.write_text("#!/bin/sh\nexit 0\n")
    step.chmod(0o755)
    settings = AgentSettings(url, "n-1", "t", tmp_path / "steps", tmp_path / "work", grace=30.0)
    log = io.StringIO()
    agent = Agent(settings, Journal(log))
    execution = RunExecution(ClaimedRun.from_wire(_wire_run(30)), agent.api, settings, agent.shutdown, agent.journal)
    # WHEN the run is executed and reported
    thread = threading.Thread(target=execution.execute, daemon=True)
    thread.start()
    thread.join(20)
    # THEN the completion was sent three times (in the agent's report calls): refused twice, then delivered
    assert not thread.is_alive()
    reports = [path for path in service.calls if path.endswith("/report")]
    assert len(reports) == 3, service.calls
    assert "run succeeded" in log.getvalue()
