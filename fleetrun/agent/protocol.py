"""The agent routes of API.md as typed calls, with failures sorted into what the caller does next.

- `Unavailable`: the API could not be reached or answered 5xx/429 — retry with backoff.
- `LeaseLost`: 409 (or 404: the run is no longer ours) on a run route — stop and drop the run.
- `Revoked`: 401 on any route — the node's token was rotated or the node deregistered: nothing
  this agent sends will be accepted again, so the agent stops (`on_revoked` tells it at once,
  whichever thread made the call).
- `Rejected`: any other 4xx — retrying the same request cannot help.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import requests

from fleetrun.agent.settings import REQUEST_TIMEOUT_SECONDS
from fleetrun.client import Api, ApiError


class AgentCallFailed(Exception):
    """Base of the agent's API failures."""


class Unavailable(AgentCallFailed):
    """Transient: network error, timeout, 5xx or 429; `retry_after`: the seconds the service
    asked to wait (`Retry-After`, at most `MAX_RETRY_AFTER_SECONDS`), when it said."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


#: a `Retry-After` longer than this is read as this: a lease must not lapse waiting
MAX_RETRY_AFTER_SECONDS = 30.0


class LeaseLost(AgentCallFailed):
    """The run is no longer leased to this agent for this attempt."""


class Revoked(AgentCallFailed):
    """401: the service no longer accepts this node's token."""


class OutputGap(AgentCallFailed):
    """409 on the output route: the attempt's stored output continues at `expected_offset`."""

    def __init__(self, message: str, expected_offset: int) -> None:
        super().__init__(message)
        self.expected_offset = expected_offset


class Rejected(AgentCallFailed):
    """The API refused the request for a reason a retry cannot fix."""

    def __init__(self, error: ApiError) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass(frozen=True)
class ClaimedRun:
    run_id: str
    task_id: str
    #: the node the run is for (differs from the agent's node when it is a delegate runner)
    node: str
    type: str
    phase: str
    step: str
    steps: tuple[str, ...]
    attempt: int
    parameters: dict[str, Any]
    lease_expires_at: float
    #: every secret value of the parameters: scrubbed from live output before it is chunked
    secret_values: tuple[str, ...] = ()
    #: how long all the run's steps may take together (the type's `run_timeout_seconds`), if limited
    run_timeout_seconds: float | None = None

    @classmethod
    def from_wire(cls, body: dict[str, Any]) -> ClaimedRun:
        return cls(
            run_id=str(body["run_id"]), task_id=str(body["task_id"]), node=str(body["node"]),
            type=str(body["type"]), phase=str(body.get("phase") or "run"), step=str(body["step"]),
            steps=tuple(str(s) for s in body.get("steps") or [body["step"]]), attempt=int(body["attempt"]),
            parameters=dict(body.get("parameters") or {}), lease_expires_at=parse_time(body["lease_expires_at"]),
            secret_values=tuple(str(value) for value in body.get("secret_values") or ()),
            run_timeout_seconds=_positive(body.get("run_timeout_seconds")),
        )

    def remaining_steps(self) -> list[str]:
        """The steps to run, in order, starting from the one the run was claimed at."""
        if self.step in self.steps:
            return list(self.steps[self.steps.index(self.step):])
        return [self.step]


@dataclass(frozen=True)
class ClaimAnswer:
    runs: list[ClaimedRun]
    #: set by the service on an empty answer while runs of this node are being dispatched
    retry_after: float | None = None


@dataclass(frozen=True)
class HeartbeatAnswer:
    lease_expires_at: float
    cancel_requested: bool


def parse_time(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


class AgentApi:
    """One agent's calls. Each thread gets its own HTTP session (sessions are not thread-safe)."""

    def __init__(self, base_url: str, node: str, token: str, timeout: float = REQUEST_TIMEOUT_SECONDS,
                 on_revoked: Callable[[], None] | None = None) -> None:
        self.base_url, self.node, self._token, self._timeout = base_url, node, token, timeout
        self._on_revoked = on_revoked
        self._local = threading.local()

    def claim(self, max_runs: int) -> ClaimAnswer:
        answer = self._post(f"/v1/agents/{self.node}/claim", {"max": max_runs}, run_route=False) or {}
        retry_after = answer.get("retry_after_seconds")
        return ClaimAnswer([ClaimedRun.from_wire(run) for run in answer.get("runs", [])],
                           float(retry_after) if retry_after is not None else None)

    def heartbeat(self, run: ClaimedRun, progress: int, step: str) -> HeartbeatAnswer:
        body = {"attempt": run.attempt, "progress": progress, "step": step}
        answer = self._post(f"/v1/runs/{run.run_id}/heartbeat", body) or {}
        return HeartbeatAnswer(parse_time(answer["lease_expires_at"]), bool(answer.get("cancel_requested")))

    def hold(self, run_id: str, attempt: int) -> HeartbeatAnswer:
        """Heartbeat the plan reservation of an `apply_pending` run (no step runs meanwhile)."""
        answer = self._post(f"/v1/runs/{run_id}/heartbeat", {"attempt": attempt}) or {}
        return HeartbeatAnswer(parse_time(answer["lease_expires_at"]), bool(answer.get("cancel_requested")))

    def plan_lost(self, run_id: str, attempt: int) -> None:
        """Tell the service this agent no longer has the plan context of the run."""
        self._post(f"/v1/runs/{run_id}/plan-lost", {"attempt": attempt})

    def send_events(self, run: ClaimedRun, events: list[dict[str, Any]]) -> None:
        self._post(f"/v1/runs/{run.run_id}/events", {"attempt": run.attempt, "events": events})

    def complete(self, run: ClaimedRun, status: str, error_message: str | None, output: str | None,
                 events: list[dict[str, Any]]) -> None:
        body: dict[str, Any] = {"attempt": run.attempt, "status": status, "error_message": error_message,
                                "output": output}
        if events:
            body["events"] = events
        self._post(f"/v1/runs/{run.run_id}/complete", body)

    def send_output(self, run: ClaimedRun, offset: int, data: str) -> int:
        """Append live output at `offset`; returns where the next chunk starts. Raises OutputGap,
        besides the failures of every run route."""
        body = {"attempt": run.attempt, "offset": offset, "data": data}
        try:
            answer = self._api().post(f"/v1/runs/{run.run_id}/output", body) or {}
        except ApiError as error:
            detail = error.body.get("error", {})
            if error.status == 409 and detail.get("reason") == "output_gap":
                raise OutputGap(str(error), int(detail["expected_offset"])) from error
            raise self._failure(error, run_route=True) from error
        except requests.RequestException as error:
            raise Unavailable(f"API unreachable: {type(error).__name__}") from error
        return int(answer.get("next_offset", offset + len(data.encode())))

    def _post(self, path: str, body: dict[str, Any], *, run_route: bool = True) -> Any:
        try:
            return self._api().post(path, body)
        except requests.RequestException as error:
            raise Unavailable(f"API unreachable: {type(error).__name__}") from error
        except ApiError as error:
            raise self._failure(error, run_route=run_route) from error

    def _failure(self, error: ApiError, *, run_route: bool) -> AgentCallFailed:
        """What an error answer means to the agent (see the module's docstring)."""
        if error.status >= 500 or error.status == 429:
            return Unavailable(f"API answered {error.status} {error.code}", retry_after_of(error))
        if error.status == 401:
            if self._on_revoked is not None:
                self._on_revoked()
            return Revoked(f"{error.status} {error.code}: {error.message}")
        if run_route and error.status in (404, 409):
            return LeaseLost(f"{error.status} {error.code}: {error.message}")
        return Rejected(error)

    def _api(self) -> Api:
        api: Api | None = getattr(self._local, "api", None)
        if api is None:
            api = Api(self.base_url, self._token, timeout=self._timeout)
            self._local.api = api
        return api


def _positive(value: Any) -> float | None:
    """A positive number of seconds from the wire, else None (no limit)."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    return None


def retry_after_of(error: ApiError) -> float | None:
    """The wait an error answer asks for: its `Retry-After` header (seconds), else the error
    body's `retry_after`; capped at `MAX_RETRY_AFTER_SECONDS`."""
    headers = {name.lower(): value for name, value in getattr(error, "headers", {}).items()}
    found = error.body.get("error")
    detail: dict[str, Any] = found if isinstance(found, dict) else {}
    for value in (headers.get("retry-after"), detail.get("retry_after")):
        try:
            seconds = float(value) if value is not None else None
        except (TypeError, ValueError):
            seconds = None
        if seconds is not None and seconds >= 0:
            return min(seconds, MAX_RETRY_AFTER_SECONDS)
    return None
