"""Per-user write rate limit: never more than `FLEETRUN_RATE_LIMIT` allowed writes in any 60 s.

A fixed one-minute window lets twice the limit through across a minute boundary, and a token
bucket lets its capacity plus 60 s of refill through in one minute; so this is a sliding log.
Each user has one item holding the count of allowed writes per epoch second of the last 61
seconds (at most 61 small numbers: under 1 KB, one write unit). A write at time `t` in second
`s` is allowed when fewer than the limit were allowed in the seconds from `s - 60` on. Any
writes within 60 s of `t` were made in those seconds, so no 60-second window, open or closed,
holds more than the limit; the cost of counting whole seconds is that a write up to 1 s older
than 60 s may still count. Seconds after `s` count too, so writes stamped by a clock that runs
a little ahead are never missed.

Concurrent writers in other Lambda containers are serialised by DynamoDB: a write is a PutItem
conditioned on the item's `revision` as it was read (optimistic; on conflict, read and decide
again), so two writers can never both take the last place. The state each container last saw
is kept (`RateLimiter`): other writers can only have added writes to it, so a limit reached in
that state is reached in the table too, with the same seconds, and the refusal and its exact
`Retry-After` need no request at all. DynamoDB requests, with `FLEETRUN_RATE_LIMIT` writes
per 60 s:

- allowed write: 1 PutItem when the container saw the user's latest state (its own last write);
  1 GetItem + 1 PutItem when it never saw the user; 1 failed PutItem + 1 GetItem + 1 PutItem
  when another container wrote since (each further lost race adds a GetItem and a PutItem);
- refused write: none when the container saw the limit reached; otherwise what reaching that
  conclusion took (1 GetItem, after a failed PutItem when the container's state was stale).

`Retry-After` is exact: the whole seconds until one more write would be allowed (a retry after
that many seconds is allowed unless others wrote meanwhile; one second earlier is refused).

Contention: a user's writes in one process (the local runtime's threaded server) take turns, so
they never race. Across Lambda containers they race on the one item: a burst of N writes of one
user at one instant takes up to N rounds of read and write, and a write that loses `_ATTEMPTS`
races answers `409 conflict` (safe to retry). A count that never races (an atomic ADD per
second, then a Query of the last 60, undone when over the limit) would cost one write and one
read per allowed write whatever the burst; not built.
"""

from __future__ import annotations

import math
import random
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from threading import Lock
from typing import Any, Protocol

from pynamodb.exceptions import DoesNotExist, PutError

from chalicelib import clock, config
from chalicelib.errors import Busy, RateLimited
from chalicelib.store.key_parts import part
from chalicelib.store.models import RateBucket
from chalicelib.store.retrying import retried
from chalicelib.store.writes import is_condition_failure

WINDOW_SECONDS = 60
#: the sort key of a user's one rate item
_WINDOW_SK = "WINDOW"
#: how long an item outlives the last second it counts before TTL may delete it
_TTL_GRACE_SECONDS = 120
#: conditional writes one check makes before it gives up on a crowd of racing writers (409)
_ATTEMPTS = 10
#: users whose last seen state a container keeps (the oldest is forgotten first)
_KNOWN_USERS = 10_000


@dataclass(frozen=True)
class Window:
    """A user's allowed writes per epoch second, ascending, and the revision of the item they
    were read from (None: there is no item)."""

    counts: tuple[tuple[int, int], ...] = ()
    revision: str | None = None

    def counting_at(self, second: int) -> Window:
        """The seconds that count for a write in `second`: from `second - 60` on."""
        first = second - WINDOW_SECONDS
        return Window(tuple(c for c in self.counts if c[0] >= first), self.revision)

    @property
    def total(self) -> int:
        return sum(writes for _, writes in self.counts)

    def with_write(self, second: int) -> Window:
        """One more write in `second`, under a new revision."""
        counts = dict(self.counts)
        counts[second] = counts.get(second, 0) + 1
        return Window(tuple(sorted(counts.items())), secrets.token_hex(8))

    def allowed_from(self, limit: int) -> int:
        """The first second in which a write is allowed again, if no other is made meanwhile."""
        leaving = self.total - limit + 1  # writes that must stop counting first
        for second, writes in self.counts:
            leaving -= writes
            if leaving <= 0:
                return second + WINDOW_SECONDS + 1  # `second` counts up to `second + 60`
        return -1  # already allowed

    def retry_after(self, at: float, limit: int) -> int:
        return max(1, math.ceil(self.allowed_from(limit) - at))


class WindowStore(Protocol):
    def read(self, user_id: str) -> Window: ...

    def replace(self, user_id: str, window: Window, expected: str | None) -> bool:
        """Write `window` if the item's revision is still `expected`; False when it is not."""


class DynamoWindows:
    """The windows as `RateBucket` items (one per user)."""

    def read(self, user_id: str) -> Window:
        try:
            item = RateBucket.get(rate_pk(user_id), _WINDOW_SK, consistent_read=True)
        except DoesNotExist:
            return Window()
        seconds: list[Any] = list(item.seconds)  # NumberAttribute values: numbers once read
        counts: list[Any] = list(item.counts)
        return Window(tuple(zip(map(int, seconds), map(int, counts), strict=True)), item.revision)

    @retried
    def replace(self, user_id: str, window: Window, expected: str | None) -> bool:
        assert window.revision is not None
        item = RateBucket(rate_pk(user_id), _WINDOW_SK, seconds=[s for s, _ in window.counts],
                          counts=[c for _, c in window.counts], revision=window.revision,
                          expires_at=window.counts[-1][0] + WINDOW_SECONDS + 1 + _TTL_GRACE_SECONDS)
        condition = RateBucket.revision.does_not_exist() if expected is None else RateBucket.revision == expected
        try:
            item.save(condition=condition)
        except PutError as error:
            if is_condition_failure(error):
                return False
            raise
        return True


@dataclass
class RateLimiter:
    """One container's limiter: the store and the state it last saw of each user."""

    store: WindowStore = field(default_factory=DynamoWindows)
    _known: dict[str, Window] = field(default_factory=dict)
    _lock: Lock = field(default_factory=Lock)
    #: one lock per stripe of users: a user's writes in this process are counted one at a time
    _turns: tuple[Lock, ...] = field(default_factory=lambda: tuple(Lock() for _ in range(64)))

    def check(self, user_id: str, limit: int, now: float | None = None) -> None:
        """Count one write of `user_id`, or raise RateLimited (or Busy after `_ATTEMPTS` lost races).

        Writers of one user in this process take turns (a threaded server, the local runtime):
        each starts from the state the one before it wrote, so they never race each other."""
        with self._turns[hash(user_id) % len(self._turns)]:
            self._check(user_id, limit, now)

    def _check(self, user_id: str, limit: int, now: float | None) -> None:
        known = self._known.get(user_id)
        for attempt in range(_ATTEMPTS):
            at = clock.now_epoch() if now is None else now
            if known is None:
                known = self.store.read(user_id)
            window = known.counting_at(math.floor(at))
            if window.total >= limit:
                self._remember(user_id, known)
                raise RateLimited(retry_after=window.retry_after(at, limit))
            written = window.with_write(math.floor(at))
            if self.store.replace(user_id, written, expected=known.revision):
                self._remember(user_id, written)
                return
            known = None
            time.sleep(random.uniform(0, 0.002 * 2**attempt))  # racing writers spread out
        raise Busy(f"too many concurrent writes of {user_id} to count this one; retry")

    def forget(self, users: Iterable[str] | None = None) -> None:
        with self._lock:
            if users is None:
                self._known.clear()
            for user in users or ():
                self._known.pop(user, None)

    def _remember(self, user_id: str, window: Window) -> None:
        with self._lock:
            self._known.pop(user_id, None)  # re-inserted last: the dict's order is the age
            self._known[user_id] = window
            while len(self._known) > _KNOWN_USERS:
                del self._known[next(iter(self._known))]


_limiter = RateLimiter()


def check_write(user_id: str, now: float | None = None) -> None:
    """Count one write request of `user_id`.

    Raises RateLimited (with `retry_after`, the whole seconds until a write is allowed again)
    when `FLEETRUN_RATE_LIMIT` writes of the user were allowed in the last 60 s, and Busy when
    too many of the user's writes race to be counted at once.
    """
    _limiter.check(user_id, config.rate_limit_per_minute(), now)


def reset() -> None:
    """Forget every user's state this process saw (tests start each on a new table)."""
    _limiter.forget()


def rate_pk(user_id: str) -> str:
    """The partition key of a user's rate buckets (the `sub` escaped: `key_parts.part`)."""
    return f"RATE#{part(user_id)}"
