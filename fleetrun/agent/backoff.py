"""Exponential backoff with full jitter (AWS Architecture Blog, "Exponential Backoff And Jitter")."""

from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    """Delay before the next try after `failures` consecutive failures: uniform in [0, min(cap, base·2ⁿ)]."""

    def __init__(self, base: float = 0.5, cap: float = 30.0, rng: Callable[[], float] = random.random) -> None:
        self.base, self.cap, self._rng = base, cap, rng
        self.failures = 0

    def next_delay(self, retry_after: float | None = None) -> float:
        """The next pause; never shorter than `retry_after` (the service's `Retry-After`, capped
        at `cap`), which gets up to 20 % more so agents told the same wait do not return in step."""
        self.failures += 1
        ceiling = min(self.cap, self.base * 2.0 ** (self.failures - 1))
        delay = max(0.05, self._rng() * ceiling)
        if retry_after is not None and retry_after > 0:
            delay = max(delay, min(self.cap, retry_after) * (1 + 0.2 * self._rng()))
        return delay

    def reset(self) -> None:
        self.failures = 0


class IdlePoll:
    """The pause after each empty claim: `first`, doubling up to `cap`; work resets it."""

    def __init__(self, first: float, cap: float) -> None:
        self.first, self.cap = first, max(first, cap)
        self.empty = 0

    def next_delay(self) -> float:
        self.empty += 1
        return jittered(min(self.cap, self.first * 2.0 ** min(self.empty - 1, 30)))

    def reset(self) -> None:
        self.empty = 0


def jittered(seconds: float, spread: float = 0.2) -> float:
    """`seconds` ± `spread` (a fraction), so a fleet of idle agents does not poll in step."""
    return seconds * (1 - spread + 2 * spread * random.random())
