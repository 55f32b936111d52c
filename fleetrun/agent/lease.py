"""Keeping a claimed run's lease: heartbeats, buffered events, cancellation and lease loss.

Heartbeats go every third of the lease (at least 1 s apart) and promptly when progress or
step changes, at most once a second. Events wait in a buffer and go out just before a
heartbeat, when a step ends, or with the completion. A failed call never blocks the run:
the next try is scheduled after a jittered backoff while the step keeps running.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from fleetrun.agent.backoff import Backoff
from fleetrun.agent.journal import Journal
from fleetrun.agent.protocol import (
    AgentApi,
    AgentCallFailed,
    ClaimedRun,
    HeartbeatAnswer,
    LeaseLost,
    Rejected,
    Revoked,
    Unavailable,
)
from fleetrun.agent.settings import MAX_EVENTS_PER_CALL

_MIN_INTERVAL = 1.0
#: the shortest pause before a failed heartbeat is tried again
_MIN_RETRY = 0.2
#: events kept while the API is unreachable; the oldest go first beyond this
_MAX_BUFFERED_EVENTS = 1000


class LeaseKeeper:
    def __init__(self, api: AgentApi, run: ClaimedRun, journal: Journal, tag: str,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._api, self._run, self._journal, self._tag, self._clock = api, run, journal, tag, clock
        self.progress = 0
        self.step = run.step
        self.cancel_requested = False
        self.lost = False
        self._events: list[dict[str, Any]] = []
        self._backoff = Backoff()
        self._interval = _interval_until(run.lease_expires_at)
        self._last_try = self._clock()
        self._not_before = self._last_try
        #: when the lease lapses, on `clock`; a failed heartbeat is retried before then
        self._lapses_at = self._last_try + (run.lease_expires_at - time.time())
        #: a heartbeat failed: try again as soon as its backoff allows, not a whole interval later
        self._retry_due = False
        self._reported = (self.progress, self.step)
        #: the heartbeat state is also changed by another run's thread when this lease rides along
        #: on its report (fleetrun/agent/batching.py)
        self._state = threading.Lock()
        #: the last heartbeat before this lease rode along, and what the ride reported
        self._ridden: tuple[float, tuple[int, str]] = (self._last_try, self._reported)
        #: the API batches: events go inside the heartbeat, and this lease may ride along on others'
        self._batched = bool(getattr(api, "carries_events", False))
        if self._batched:
            api.attach(run.run_id, self)  # type: ignore[attr-defined]

    def close(self) -> None:
        """The run is over: its lease no longer rides along on other runs' reports."""
        if self._batched:
            self._api.detach(self._run.run_id)  # type: ignore[attr-defined]

    @property
    def active(self) -> bool:
        return not (self.lost or self.cancel_requested)

    def set_progress(self, percent: int) -> None:
        self.progress = percent

    def set_step(self, step: str) -> None:
        self.step = step

    def add_event(self, type_: str, step: str, message: str, data: dict[str, Any] | None = None) -> None:
        event: dict[str, Any] = {"type": type_, "step": step, "message": message, "progress": self.progress}
        if data:
            event["data"] = data
        self._events.append(event)
        if len(self._events) > _MAX_BUFFERED_EVENTS:
            del self._events[0]

    def tick(self) -> None:
        """Heartbeat (and flush events first) when one is due. Called often by the run's monitor."""
        now = self._clock()
        if self.lost or now < self._not_before:
            return
        changed = (self.progress, self.step) != self._reported
        due = self._retry_due or now - self._last_try >= self._interval
        if due or (changed and now - self._last_try >= _MIN_INTERVAL):
            self._last_try = now
            self._call("heartbeat", self._heartbeat)

    def flush(self) -> None:
        """Send the buffered events now (best effort: on failure they wait for the next chance)."""
        if not self.lost and self._events and self._clock() >= self._not_before:
            self._call("events", self._send_events)

    def final_events(self) -> list[dict[str, Any]]:
        """What still waits to be sent, for the completion call (at most one call's worth)."""
        if len(self._events) > MAX_EVENTS_PER_CALL:
            self.flush()
        if len(self._events) > MAX_EVENTS_PER_CALL:
            dropped = len(self._events) - MAX_EVENTS_PER_CALL
            self._journal.run(self._tag, self.step, f"{dropped} events could not be delivered and were dropped")
            del self._events[:dropped]
        final, self._events = self._events, []
        return final

    def _heartbeat(self) -> None:
        reported = (self.progress, self.step)
        if self._batched:  # the events go inside the heartbeat: one item of one report
            batch = self._events[:MAX_EVENTS_PER_CALL]
            answer = self._api.heartbeat(self._run, self.progress, self.step, events=batch)  # type: ignore[call-arg]
            del self._events[: len(batch)]
        else:
            self._send_events()
            answer = self._api.heartbeat(self._run, self.progress, self.step)
        self._extended(answer, reported)

    def _extended(self, answer: HeartbeatAnswer, reported: tuple[int, str]) -> None:
        with self._state:
            self._reported = reported
            self._interval = _interval_until(answer.lease_expires_at)
            self._lapses_at = self._clock() + (answer.lease_expires_at - time.time())
        if answer.cancel_requested and not self.cancel_requested:
            self.cancel_requested = True
            self._journal.run(self._tag, self.step, "cancellation requested")

    def piggyback(self) -> dict[str, Any] | None:
        """This lease's heartbeat, to ride along on another run's report, when it is at least half
        way to its own (its next one then falls due with the other run's); None otherwise."""
        with self._state:
            now = self._clock()
            if self.lost or self._retry_due or now - self._last_try < self._interval / 2:
                return None
            self._ridden = (self._last_try, (self.progress, self.step))
            self._last_try = now
            return {"run_id": self._run.run_id, "attempt": self._run.attempt, "progress": self.progress,
                    "step": self.step}

    def piggybacked(self, answer: HeartbeatAnswer | None, failure: AgentCallFailed | None) -> None:
        """What the ridden heartbeat got: the lease extended, lost, or nothing learnt (its own
        heartbeat keeps its schedule)."""
        last_try, reported = self._ridden
        if answer is not None:
            self._extended(answer, reported)
        elif isinstance(failure, LeaseLost):
            self.lost = True
            self._journal.run(self._tag, self.step, f"lease lost ({failure}); stopping the step")
        else:  # not delivered: the lease keeps its own schedule, as if it had not ridden along
            with self._state:
                self._last_try = min(self._last_try, last_try)

    def _send_events(self) -> None:
        while self._events:
            batch = self._events[:MAX_EVENTS_PER_CALL]
            try:
                self._api.send_events(self._run, batch)
            except Rejected as error:  # sending the same batch again would be refused again
                self._journal.run(self._tag, self.step, f"{len(batch)} events refused ({error}); dropped")
            del self._events[: len(batch)]

    def _call(self, what: str, call: Callable[[], None]) -> None:
        try:
            call()
        except Unavailable as error:
            # honour Retry-After, but never later than a regular heartbeat nor past half of what is
            # left of the lease: a long backoff could lose a lease the API would extend
            now = self._clock()
            left = max(_MIN_RETRY, (self._lapses_at - now) / 2)
            delay = min(self._backoff.next_delay(error.retry_after), self._interval, left)
            self._not_before = now + delay
            if what == "heartbeat":
                self._retry_due = True
            self._journal.run(self._tag, self.step, f"{what} failed ({error}); next try in {delay:.1f} s")
            return
        except LeaseLost as error:
            self.lost = True
            self._journal.run(self._tag, self.step, f"lease lost ({error}); stopping the step")
            return
        except Revoked as error:  # nothing can be reported any more: the agent stops
            self.lost = True
            self._journal.run(self._tag, self.step, f"{what} refused ({error}); stopping the step")
            return
        except Rejected as error:  # a bug on one side: keep the step going, the lease decides
            delay = self._backoff.next_delay()
            self._not_before = self._clock() + delay
            self._journal.run(self._tag, self.step, f"{what} rejected ({error}); next try in {delay:.1f} s")
            return
        if what == "heartbeat":
            self._retry_due = False
        if self._backoff.failures:
            self._journal.run(self._tag, self.step, f"{what} delivered again after {self._backoff.failures} failures")
        self._backoff.reset()


def _interval_until(lease_expires_at: float) -> float:
    return max(_MIN_INTERVAL, (lease_expires_at - time.time()) / 3)
