"""Stopping an agent: no more claims at once; running steps get a grace period, then are killed."""

from __future__ import annotations

import threading
import time

from fleetrun.agent.settings import FINAL_REPORT_SECONDS


class Shutdown:
    def __init__(self, grace: float) -> None:
        self.grace = grace
        self.reason = ""
        self._requested = threading.Event()
        self._deadline: float | None = None

    @property
    def requested(self) -> bool:
        return self._requested.is_set()

    def request(self, reason: str) -> None:
        """First call: start the grace period. A second call (another Ctrl-C) ends it at once."""
        now = time.monotonic()
        if self.requested:
            self._deadline = now
            return
        self.reason = reason
        self._deadline = now + self.grace
        self._requested.set()

    def abort(self, reason: str) -> None:
        """Stop now, without a grace period: what the steps do can no longer be reported."""
        if not self.requested:
            self.reason = reason
            self._requested.set()
        self._deadline = time.monotonic()

    def grace_over(self) -> bool:
        return self._deadline is not None and time.monotonic() >= self._deadline

    def may_keep_reporting(self, until: float) -> bool:
        """Whether a completion retry at monotonic time `until` is still worth it."""
        return self._deadline is None or until < self._deadline + FINAL_REPORT_SECONDS

    def wait(self, seconds: float) -> bool:
        """Sleep up to `seconds`; True as soon as a stop is requested."""
        return self._requested.wait(seconds)
