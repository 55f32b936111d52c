"""How a retry moves the node counts, decided in one place.

A retry is one write on the task: the new attempt, `pending`, and the node counts of the
runs it covers already moved to `pending` (so the task shows the retry at once, and the
finishing rules never see the old outcome of a run the retry covers). The dispatch job then
resets those runs one by one (`retry_failed` / `retry_all`), and each reset reaches the
stream aggregator as a run going from a terminal status back to `pending`. Counting that
change again would count the run twice, so the aggregator skips the count (not the
progress weight, which the retry write also moved) of exactly those records: a run written
by a retry action whose task attempt (`generation`) changed from a terminal status.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chalicelib.domain.run_transitions import RETRY_ACTIONS, RUN_TRANSITIONS, retry_action
from chalicelib.domain.statuses import RUN_STATUSES, RUN_TERMINAL, RunStatus


def counts_after_retry(counts: Mapping[str, int], scope: str) -> tuple[dict[str, int], int]:
    """The node counts right after a retry of `scope` (`failed` or `all`), and how many runs
    it moves back to `pending`."""
    reset = RUN_TRANSITIONS[retry_action(scope)].sources
    moved = sum(counts.get(s, 0) for s in reset)
    after = {s: (0 if s in reset else counts.get(s, 0)) for s in RUN_STATUSES}
    after[RunStatus.PENDING] += moved
    return after, moved


def counted_by_retry(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> bool:
    """Whether a run change (old and new image values) is a retry's reset, whose counts the
    retry's own task write already moved."""
    if not old or not new:
        return False
    return (
        new.get("last_action") in RETRY_ACTIONS
        and old.get("status") in RUN_TERMINAL
        and old.get("generation") != new.get("generation")
    )
