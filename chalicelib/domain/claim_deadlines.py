"""When a node run nobody claims has waited too long (`claim_timeout_seconds`, API.md "Tasks").

A run's clock starts when it became claimable, and a run is claimable only while the
concurrency window (domain/window.py) admits its ordinal. Nothing records the moment one
ordinal was admitted, so the start is taken conservatively — never earlier than the truth,
so a run never times out early:

- `claimable_at` of the run: when it last entered `pending` (created, offered again after a
  lapsed lease, reset by a retry);
- `started_at` of the task: its runs wait for the dispatch to start it;
- for an ordinal outside the window the attempt began with (`ordinal >= max_concurrency`),
  `window_moved_at` of the task: the window admits such an ordinal only when it moves, and
  the latest move is no earlier than that one.

Runs the window does not admit now are not claimable, and are never timed out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from chalicelib.domain import window

DEFAULT_SECONDS: Final = 600
MIN_SECONDS: Final = 30
MAX_SECONDS: Final = 86_400


@dataclass(frozen=True)
class WindowState:
    """What the deadline of a task's runs depends on, as read from the task (times as epochs)."""

    max_concurrency: int
    counts: Mapping[str, int]
    finished_base: int
    timeout: float
    started_at: float
    window_moved_at: float | None = None


def admitted(ordinal: int, state: WindowState) -> bool:
    """Whether the window lets the run with this ordinal start now."""
    return window.may_start(ordinal, state.max_concurrency, state.counts, state.finished_base)


def claimable_since(ordinal: int, claimable_at: float | None, state: WindowState) -> float:
    """The earliest moment the run may be said to have been claimable (see the module text)."""
    since = max(claimable_at or 0.0, state.started_at)
    if int(ordinal) >= int(state.max_concurrency) and state.window_moved_at is not None:
        since = max(since, state.window_moved_at)
    return since


def deadline(ordinal: int, claimable_at: float | None, state: WindowState) -> float | None:
    """When the run times out unclaimed; None while the window does not admit it."""
    if not admitted(ordinal, state):
        return None
    return claimable_since(ordinal, claimable_at, state) + state.timeout


def next_check(deadlines: Iterable[float | None], now: float, timeout: float) -> float:
    """When the sweeper needs to look at the task's pending runs again: the earliest deadline
    still ahead, and no later than one timeout from now (a run admitted or offered again after
    `now` times out no sooner than that)."""
    ahead = [d for d in deadlines if d is not None and d > now]
    return min([*ahead, now + timeout])
