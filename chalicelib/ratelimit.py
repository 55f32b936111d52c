"""Per-user write rate limit: a fixed one-minute window counted in one conditional UpdateItem.

One `RateBucket` item per (user, minute); DynamoDB's TTL removes it two minutes after its
window ends. The condition makes the count exact under concurrent writers: no read first.
"""

from __future__ import annotations

import math

from pynamodb.exceptions import UpdateError

from chalicelib import clock, config
from chalicelib.errors import RateLimited
from chalicelib.store.models import RateBucket

WINDOW_SECONDS = 60
#: how long a bucket outlives its window before TTL may delete it
_TTL_GRACE_SECONDS = 120


def check_write(user_id: str, now: float | None = None) -> None:
    """Count one write request of `user_id` in the current minute.

    Raises RateLimited (with `retry_after`, seconds until the window ends, at least 1) when
    the user already made `FLEETRUN_RATE_LIMIT` writes in this window.
    """
    at = clock.now_epoch() if now is None else now
    window_start = int(at // WINDOW_SECONDS) * WINDOW_SECONDS
    window_end = window_start + WINDOW_SECONDS
    bucket = RateBucket(rate_pk(user_id), str(window_start))
    try:
        bucket.update(
            actions=[
                RateBucket.hits.add(1),
                RateBucket.expires_at.set(window_end + _TTL_GRACE_SECONDS),
            ],
            condition=RateBucket.hits.does_not_exist() | (RateBucket.hits < config.rate_limit_per_minute()),
        )
    except UpdateError as exc:
        if exc.cause_response_code != "ConditionalCheckFailedException":
            raise
        raise RateLimited(retry_after=max(1, math.ceil(window_end - at))) from None


def rate_pk(user_id: str) -> str:
    """The partition key of a user's rate buckets."""
    return f"RATE#{user_id}"
