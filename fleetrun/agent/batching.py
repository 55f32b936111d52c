"""One report call for the heartbeats and completions of all the runs an agent holds.

`BatchingAgentApi` is an `AgentApi` whose `heartbeat`, `hold` and `complete` do not call their own
routes: each run thread hands its item over and waits; the first to arrive gathers, for a short
window, what the other run threads hand over too, and sends everything in one
`POST /v1/agents/{node}/report` (API.md "Agents and nodes"). It also adds the heartbeat of every
other lease that is at least half way to its next heartbeat (`Piggyback`), so the heartbeats of
all the runs fall due together from then on and go out as one request.

Each item's answer comes back to its own thread as the single route's would: the lease's new
expiry and `cancel_requested`, or the same failure (`LeaseLost` for that item's 409/404,
`Unavailable` with its `retry_after` for its 503) — a stale attempt stops that run only. A failure
of the whole call (unreachable, 5xx, 401) is every item's failure. A service without the report
route (404/405 on it) is spoken to with the single routes from then on.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from fleetrun.agent.protocol import AgentApi, AgentCallFailed, ClaimedRun, HeartbeatAnswer, Rejected, parse_time
from fleetrun.client import ApiError

#: how long the first item waits for others before the report goes (a completion is this much later)
BATCH_WINDOW_SECONDS = 0.05
#: API.md: a report carries at most 50 heartbeats and 50 completions
MAX_ITEMS_PER_KIND = 50


class Piggyback(Protocol):
    """A lease that may ride along on another run's report (fleetrun/agent/lease.py)."""

    def piggyback(self) -> dict[str, Any] | None: ...

    def piggybacked(self, answer: HeartbeatAnswer | None, failure: AgentCallFailed | None) -> None: ...


@dataclass
class _Item:
    kind: str  # "heartbeats" or "completions"
    body: dict[str, Any]
    done: threading.Event = field(default_factory=threading.Event)
    answer: dict[str, Any] | None = None
    failure: AgentCallFailed | None = None


class BatchingAgentApi(AgentApi):
    #: the lease keeper sends its buffered events inside the heartbeat item
    carries_events = True

    def __init__(self, *args: Any, window: float = BATCH_WINDOW_SECONDS, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._window = window
        self._lock = threading.Lock()
        self._pending: list[_Item] = []
        self._sending = False
        self._riders: dict[str, Piggyback] = {}
        #: the service has no report route: single routes only
        self._single = False
        #: report calls made (tests and the bench read it)
        self.reports = 0

    # --- leases that may ride along -------------------------------------------------------
    def attach(self, run_id: str, rider: Piggyback) -> None:
        with self._lock:
            self._riders[run_id] = rider

    def detach(self, run_id: str) -> None:
        with self._lock:
            self._riders.pop(run_id, None)

    # --- the batched calls ---------------------------------------------------------------------
    def heartbeat(self, run: ClaimedRun, progress: int, step: str,
                  events: list[dict[str, Any]] | None = None) -> HeartbeatAnswer:
        body: dict[str, Any] = {"run_id": run.run_id, "attempt": run.attempt, "progress": progress, "step": step}
        if events:
            body["events"] = events
        return _heartbeat_answer(self._submit(_Item("heartbeats", body)))

    def hold(self, run_id: str, attempt: int) -> HeartbeatAnswer:
        return _heartbeat_answer(self._submit(_Item("heartbeats", {"run_id": run_id, "attempt": attempt})))

    def complete(self, run: ClaimedRun, status: str, error_message: str | None, output: str | None,
                 events: list[dict[str, Any]]) -> None:
        body: dict[str, Any] = {"run_id": run.run_id, "attempt": run.attempt, "status": status,
                                "error_message": error_message, "output": output}
        if events:
            body["events"] = events
        self._submit(_Item("completions", body))

    def _submit(self, item: _Item) -> dict[str, Any]:
        with self._lock:
            self._pending.append(item)
            leader = not self._sending
            self._sending = True
        if leader:
            time.sleep(self._window)
            self._send_all()
        item.done.wait()
        if item.failure is not None:
            raise item.failure
        assert item.answer is not None
        return item.answer

    def _send_all(self) -> None:
        """Send what is pending, one report at a time, until nothing is; then hand leadership back."""
        while True:
            with self._lock:
                batch = _take(self._pending)
                if not batch:
                    self._sending = False
                    return
                riders = {run_id: rider for run_id, rider in self._riders.items()
                          if run_id not in {item.body["run_id"] for item in batch}}
            try:
                self._send(batch, riders)
            except Exception as error:  # an agent bug: nobody may wait forever on an item
                for item in batch:
                    if not item.done.is_set():
                        item.failure = Rejected(ApiError(0, "agent_error", repr(error)))
                        item.done.set()

    def _send(self, batch: list[_Item], riders: dict[str, Piggyback]) -> None:
        rides = {run_id: ride for run_id, rider in riders.items() if (ride := rider.piggyback()) is not None}
        if self._single:
            self._send_singly(batch)
            for run_id in rides:
                riders[run_id].piggybacked(None, None)
            return
        heartbeats = [item.body for item in batch if item.kind == "heartbeats"] + list(rides.values())
        completions = [item.body for item in batch if item.kind == "completions"]
        sent = heartbeats[:MAX_ITEMS_PER_KIND]
        try:
            self.reports += 1
            answer = self._post(f"/v1/agents/{self.node}/report", {"heartbeats": sent, "completions": completions},
                                run_route=False) or {}
        except Rejected as rejected:
            if rejected.error.status in (404, 405) and rejected.error.code != "conflict":  # an older service
                self._single = True
                self._send(batch, riders)
                return
            self._fail(batch, rides, riders, rejected)
            return
        except AgentCallFailed as failure:
            self._fail(batch, rides, riders, failure)
            return
        answered = iter(answer.get("heartbeats") or [])
        for item in [item for item in batch if item.kind == "heartbeats"]:
            self._settle(item, next(answered, None))
        for run_id in rides:
            if len(heartbeats) > MAX_ITEMS_PER_KIND and run_id not in {h["run_id"] for h in sent}:
                riders[run_id].piggybacked(None, None)
                continue
            found = next(answered, None)
            outcome = self._outcome(found)
            if isinstance(outcome, AgentCallFailed):
                riders[run_id].piggybacked(None, outcome)
            else:
                riders[run_id].piggybacked(_heartbeat_answer(outcome), None)
        completed = iter(answer.get("completions") or [])
        for item in [item for item in batch if item.kind == "completions"]:
            self._settle(item, next(completed, None))

    def _settle(self, item: _Item, found: dict[str, Any] | None) -> None:
        outcome = self._outcome(found)
        if isinstance(outcome, AgentCallFailed):
            item.failure = outcome
        else:
            item.answer = outcome
        item.done.set()

    def _outcome(self, found: dict[str, Any] | None) -> dict[str, Any] | AgentCallFailed:
        """An item's answer, or the failure its single route's answer would have raised."""
        if found is None:
            return Rejected(ApiError(502, "bad_answer", "the report answered no result for this item"))
        status = int(found.get("status", 200))
        if status == 200:
            return found
        error = found.get("error") if isinstance(found.get("error"), dict) else {}
        assert isinstance(error, dict)
        api_error = ApiError(status, str(error.get("code", "error")), str(error.get("message", "")),
                             {"error": error})
        return self._failure(api_error, run_route=True)

    def _fail(self, batch: list[_Item], rides: dict[str, dict[str, Any]], riders: dict[str, Piggyback],
              failure: AgentCallFailed) -> None:
        for run_id in rides:  # a rider keeps its own schedule: its own heartbeat will retry
            riders[run_id].piggybacked(None, None)
        for item in batch:
            item.failure = failure
            item.done.set()

    def _send_singly(self, batch: list[_Item]) -> None:
        for item in batch:
            run_id, attempt = item.body["run_id"], item.body["attempt"]
            try:
                if item.kind == "completions":
                    self._post(f"/v1/runs/{run_id}/complete", {k: v for k, v in item.body.items() if k != "run_id"})
                    item.answer = {}
                else:
                    if item.body.get("events"):
                        self._post(f"/v1/runs/{run_id}/events", {"attempt": attempt, "events": item.body["events"]})
                    single = {k: v for k, v in item.body.items() if k not in ("run_id", "events")}
                    item.answer = self._post(f"/v1/runs/{run_id}/heartbeat", single) or {}
            except AgentCallFailed as failure:
                item.failure = failure
            item.done.set()


def _take(pending: list[_Item]) -> list[_Item]:
    """At most MAX_ITEMS_PER_KIND of each kind, oldest first; removed from `pending`."""
    taken: list[_Item] = []
    counts = {"heartbeats": 0, "completions": 0}
    for item in list(pending):
        if counts[item.kind] < MAX_ITEMS_PER_KIND:
            counts[item.kind] += 1
            taken.append(item)
            pending.remove(item)
    return taken


def _heartbeat_answer(answer: dict[str, Any]) -> HeartbeatAnswer:
    return HeartbeatAnswer(parse_time(answer["lease_expires_at"]), bool(answer.get("cancel_requested")))
