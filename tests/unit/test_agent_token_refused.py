"""An agent whose token the service refuses (401: rotated, or the node deregistered) stops at
once — from a claim, or from a heartbeat while a step runs — and exits non-zero with one clear
line. It never retries: nothing it sends would be accepted again."""

from __future__ import annotations

import io
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fleetrun.agent.journal import Journal
from fleetrun.agent.loop import Agent
from fleetrun.agent.settings import EXIT_TOKEN_REFUSED, AgentSettings
from fleetrun.client import ApiError

REFUSED = "node n-1: its token was revoked or rotated (401); register it again or give the agent the new token"


class _Service:
    """The agent's HTTP client: the answers of the claims in turn, then 401 for every call."""

    def __init__(self, *claims: dict[str, Any]) -> None:
        self.claims = list(claims)
        self.calls: list[str] = []

    def post(self, path: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:
        self.calls.append(path)
        if path.endswith("/claim") and self.claims:
            return self.claims.pop(0)
        raise ApiError(401, "unauthenticated", "the node token is not valid")


def _agent(tmp_path: Path, service: _Service) -> tuple[Agent, io.StringIO]:
    log = io.StringIO()
    settings = AgentSettings("http://127.0.0.1:9", "n-1", "t", tmp_path / "steps", tmp_path / "work", grace=30.0)
    agent = Agent(settings, Journal(log))
    agent.api._api = lambda: service  # type: ignore[method-assign]
    return agent, log


def _serve(agent: Agent, within: float) -> int:
    """`agent.serve()`, which must return within `within` seconds (else the test stops it and fails)."""
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(agent.serve()), daemon=True)
    thread.start()
    thread.join(within)
    if thread.is_alive():
        agent.shutdown.abort("the test gave up")
        thread.join(30)
        raise AssertionError(f"the agent was still serving after {within:g} s")
    return result[0]


def test_a_401_on_a_claim_stops_the_agent_at_once_with_one_clear_line_and_a_non_zero_exit(tmp_path):
    # GIVEN an agent whose token the service refuses
    service = _Service()
    agent, log = _agent(tmp_path, service)
    # WHEN it serves
    status = _serve(agent, within=5)
    # THEN it asked once, stopped without retrying, and says why on its last line
    assert status == EXIT_TOKEN_REFUSED != 0
    assert service.calls == ["/v1/agents/n-1/claim"]
    assert log.getvalue().splitlines()[-1].endswith(REFUSED)


def test_a_401_on_a_heartbeat_stops_the_running_step_and_the_agent(tmp_path):
    # GIVEN an agent running a step that would take 30 s, under a 3 s lease (heartbeats every second)
    step = tmp_path / "steps" / "shell" / "run"
    step.parent.mkdir(parents=True)
    step.write_text("#!/bin/sh\nexec sleep 30\n")
    step.chmod(0o755)
    lease = (datetime.now(UTC) + timedelta(seconds=3)).isoformat().replace("+00:00", "Z")
    run = {"run_id": "T1.n-1", "task_id": "T1", "node": "n-1", "type": "shell", "phase": "run", "step": "run",
           "steps": ["run"], "attempt": 1, "parameters": {}, "lease_expires_at": lease}
    service = _Service({"runs": [run]})
    agent, log = _agent(tmp_path, service)
    # WHEN its heartbeat is refused (the token was rotated while the step ran)
    status = _serve(agent, within=10)
    # THEN the step is stopped at once — no 30 s grace: nothing it does could be reported — and the agent exits
    assert status == EXIT_TOKEN_REFUSED
    assert service.calls[1] == "/v1/agents/n-1/report"  # the heartbeat (its events inside), in a report
    assert service.calls.count("/v1/agents/n-1/claim") == 1
    assert log.getvalue().splitlines()[-1].endswith(REFUSED)
