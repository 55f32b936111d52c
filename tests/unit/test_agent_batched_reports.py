"""The agent reports the heartbeats and completions of all its runs in shared report calls
(fleetrun/agent/batching.py), and a per-item 409 stops only the run it names."""

from __future__ import annotations

import contextlib
import functools
import io
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from fleetrun.agent.journal import Journal
from fleetrun.agent.loop import Agent
from fleetrun.agent.settings import AgentSettings
from tests.json_service import serving
from tests.waiting import wait_for


def _iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def _run(task: str, lease_seconds: float) -> dict[str, Any]:
    return {"run_id": f"{task}.n-1", "task_id": task, "node": "n-1", "type": "shell", "phase": "run", "step": "run",
            "steps": ["run"], "attempt": 1, "parameters": {},
            "lease_expires_at": _iso(datetime.now(UTC) + timedelta(seconds=lease_seconds))}


class _Service:
    """A fake service: the first claim hands out `runs`; a report answers every item 200, except
    heartbeats of the runs in `lost` (409 lease_lost)."""

    def __init__(self, runs: list[dict[str, Any]], lost: frozenset[str] = frozenset()) -> None:
        self.runs, self.lost = runs, lost
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.lock = threading.Lock()

    def answer(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self.lock:
            self.calls.append((path, body))
            if path.endswith("/claim"):
                runs, self.runs = self.runs, []
                return 200, {"runs": runs}
        if not path.endswith("/report"):
            return 404, {"error": {"code": "not_found", "message": "single routes are not used"}}
        lease = _iso(datetime.now(UTC) + timedelta(seconds=3))
        beats = [
            {"run_id": h["run_id"], "status": 409,
             "error": {"code": "conflict", "message": "lost", "reason": "lease_lost"}}
            if h["run_id"] in self.lost else
            {"run_id": h["run_id"], "status": 200, "lease_expires_at": lease, "cancel_requested": False}
            for h in body.get("heartbeats", [])
        ]
        done = [{"run_id": c["run_id"], "status": 200, "replayed": False} for c in body.get("completions", [])]
        return 200, {"heartbeats": beats, "completions": done}

    def reports(self) -> list[dict[str, Any]]:
        with self.lock:
            return [body for path, body in self.calls if path.endswith("/report")]


@pytest.fixture
def serve() -> Iterator[Any]:
    with contextlib.ExitStack() as servers:
        def start(service: _Service) -> str:
            return servers.enter_context(serving(functools.partial(service_answer, service)))
        yield start


def service_answer(service: _Service, path: str, body: Any) -> tuple[int, dict[str, str], Any]:
    status, answer = service.answer(path, body)
    return status, {}, answer


def _agent(tmp_path: Path, url: str, seconds: float) -> tuple[Agent, io.StringIO]:
    step = tmp_path / "steps" / "shell" / "run"
    step.parent.mkdir(parents=True)
    step.write_text(f"#!/bin/sh\nsleep {seconds}\n")
    step.chmod(0o755)
    log = io.StringIO()
    settings = AgentSettings(url, "n-1", "t", tmp_path / "steps", tmp_path / "work", slots=3, grace=5.0)
    return Agent(settings, Journal(log)), log


def _serve_until(agent: Agent, done: Any, within: float) -> None:
    thread = threading.Thread(target=agent.serve, daemon=True)
    thread.start()
    try:
        wait_for(done, within, "the condition", interval=0.05)
    finally:
        agent.shutdown.request("test over")
        thread.join(15)


def test_the_heartbeats_and_completions_of_several_runs_share_report_calls(tmp_path, serve):
    # GIVEN an agent with three runs under 3 s leases whose steps take 2.5 s (a heartbeat each second)
    service = _Service([_run("T1", 3), _run("T2", 3), _run("T3", 3)])
    agent, log = _agent(tmp_path, serve(service), 2.5)

    # WHEN it runs them
    def completed() -> bool:
        return sum(len(r.get("completions", [])) for r in service.reports()) >= 3

    _serve_until(agent, completed, within=20)

    # THEN it used no single run route, one claim for the three, and reports that each carried several runs
    reports = service.reports()
    paths = {path for path, _ in service.calls}
    assert paths == {"/v1/agents/n-1/claim", "/v1/agents/n-1/report"}, paths
    assert sum(1 for path, _ in service.calls if path.endswith("/claim")) >= 1
    beats = [len(r.get("heartbeats", [])) for r in reports]
    assert max(beats) == 3, beats  # every lease extended in one call
    assert max(len(r.get("completions", [])) for r in reports) >= 2, reports
    assert sum(beats) + sum(len(r.get("completions", [])) for r in reports) > len(reports)
    assert log.getvalue().count("run succeeded") == 3


def test_a_lease_lost_in_one_item_stops_only_that_run(tmp_path, serve):
    # GIVEN two runs, and a service that answers T2's heartbeats with 409 lease_lost
    service = _Service([_run("T1", 3), _run("T2", 3)], lost=frozenset({"T2.n-1"}))
    agent, log = _agent(tmp_path, serve(service), 2.5)

    # WHEN the agent runs them
    def t1_completed() -> bool:
        return any(c["run_id"] == "T1.n-1" for r in service.reports() for c in r.get("completions", []))

    _serve_until(agent, t1_completed, within=20)

    # THEN T1 completes and T2 is dropped without a completion
    completions = [c["run_id"] for r in service.reports() for c in r.get("completions", [])]
    assert completions == ["T1.n-1"], completions
    assert "lease lost" in log.getvalue()


class _OlderService(_Service):
    """A service without the report route: the single routes only."""

    def answer(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if path.endswith("/report"):
            with self.lock:
                self.calls.append((path, body))
            return 404, {"error": {"code": "not_found", "message": "no such route"}}
        if path.endswith("/heartbeat"):
            with self.lock:
                self.calls.append((path, body))
            return 200, {"lease_expires_at": _iso(datetime.now(UTC) + timedelta(seconds=3)), "cancel_requested": False}
        if path.endswith(("/complete", "/events")):
            with self.lock:
                self.calls.append((path, body))
            return 200, {"accepted": True}
        return super().answer(path, body)


def test_an_agent_falls_back_to_the_single_routes_on_a_service_without_reports(tmp_path, serve):
    # GIVEN a service that does not know the report route
    service = _OlderService([_run("T1", 3)])
    agent, log = _agent(tmp_path, serve(service), 1.5)

    # WHEN the agent runs a run
    def completed() -> bool:
        with service.lock:
            return any(path.endswith("/complete") for path, _ in service.calls)

    try:
        _serve_until(agent, completed, within=20)
    except AssertionError:
        raise AssertionError(log.getvalue() + repr(service.calls)) from None

    # THEN it asked for the report route once, then used the single routes
    with service.lock:
        paths = [path for path, _ in service.calls]
    assert paths.count("/v1/agents/n-1/report") == 1, paths
    assert "run succeeded" in log.getvalue()
