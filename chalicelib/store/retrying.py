"""Retrying a write that lost to a transaction conflict or a throttle: jittered, capped backoff.

DynamoDB cancels transactions that touch an item another transaction is writing
(`TransactionConflict`) and throttles any request; both resolve on a retry a moment later.
A failed condition is an answer (409 or a no-op), never retried here. When the attempts run
out the last error propagates: the API answers it `503 service_unavailable` with `Retry-After`.
Full jitter: AWS Architecture Blog, "Exponential Backoff And Jitter".
"""

from __future__ import annotations

import functools
import random
import time
from collections.abc import Callable
from typing import Any, Final, TypeVar

from chalicelib.errors import Busy, ConditionFailed
from chalicelib.observability import logger
from chalicelib.store.writes import is_retry_later, is_transaction_conflict

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

ATTEMPTS: Final = 5
BASE_SECONDS: Final = 0.02
CAP_SECONDS: Final = 1.0


def is_conflict_or_throttle(error: Exception) -> bool:
    """True for what a retry a moment later resolves: a transaction conflict (raw, as
    `ConditionFailed(conflict=True)` or as `Busy`) or DynamoDB throttling."""
    if isinstance(error, ConditionFailed):
        return error.conflict
    if isinstance(error, Busy):
        return True
    return is_transaction_conflict(error) or is_retry_later(error)


def delay(failures: int, *, base: float = BASE_SECONDS, cap: float = CAP_SECONDS) -> float:
    """Full jitter: uniform in [0, min(cap, base·2ⁿ)] after `failures` failed attempts (n = failures - 1)."""
    return random.uniform(0, min(cap, base * 2.0 ** max(0, failures - 1)))


def retry_writes(fn: Callable[[], T], *, attempts: int = ATTEMPTS, base: float = BASE_SECONDS,
                 cap: float = CAP_SECONDS, retry_on: Callable[[Exception], bool] = is_conflict_or_throttle,
                 sleep: Callable[[float], None] = time.sleep) -> T:
    """Call `fn` until it returns, retrying (at most `attempts` calls in all) while it raises an
    error `retry_on` accepts. Raises the last error when the attempts run out, and at once any
    error `retry_on` refuses (a failed condition is an answer, not a reason to retry)."""
    failures = 0
    while True:
        try:
            return fn()
        except Exception as error:
            failures += 1
            if failures >= attempts or not retry_on(error):
                raise
            pause = delay(failures, base=base, cap=cap)
            logger.warning("write lost to a conflict or throttle; retrying",
                           extra={"attempt": failures, "of": attempts, "error": type(error).__name__,
                                  "delay_seconds": round(pause, 3)})
            sleep(pause)


def retried(write: F) -> F:
    """`write` (one DynamoDB request or transaction, all or nothing) under `retry_writes`: a
    conflict or a throttle means nothing was written, so sending the same request again is safe."""
    @functools.wraps(write)
    def call(*args: Any, **kwargs: Any) -> Any:
        return retry_writes(lambda: write(*args, **kwargs))
    return call  # type: ignore[return-value]
