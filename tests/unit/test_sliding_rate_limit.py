"""The sliding-window write limit (chalicelib/ratelimit.py) against an in-memory table.

`Table` keeps one window per user and replaces it only under the revision the writer read, as
the conditional PutItem does; several `RateLimiter`s on one table are Lambda containers, each
with the state it last saw. The moto tests (tests/integration/test_node_tokens_and_rate_limit.py)
run the same limiter on DynamoDB, with threads.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.errors import RateLimited
from chalicelib.ratelimit import WINDOW_SECONDS, RateLimiter, Window

#: the start of a minute (divisible by 60)
MINUTE = 1_800_000_000


@dataclass
class Table:
    windows: dict[str, Window] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)

    def read(self, user_id: str) -> Window:
        self.requests.append("GetItem")
        return self.windows.get(user_id, Window())

    def replace(self, user_id: str, window: Window, expected: str | None) -> bool:
        self.requests.append("PutItem")
        if self.windows.get(user_id, Window()).revision != expected:
            return False
        self.windows[user_id] = window
        return True


def refusal(limiter: RateLimiter, at: float, limit: int, user: str = "alice") -> int | None:
    """The Retry-After of a refused write, None when it is allowed."""
    try:
        limiter.check(user, limit, now=at)
    except RateLimited as refused:
        return refused.retry_after
    return None


def allowed(limiter: RateLimiter, at: float, limit: int, user: str = "alice") -> bool:
    return refusal(limiter, at, limit, user) is None


def most_in_any_window(times: list[float]) -> int:
    """The most of `times` inside one closed 60-second interval (it may start at any of them)."""
    return max((sum(1 for u in times if t <= u <= t + WINDOW_SECONDS) for t in times), default=0)


#: gaps between requests: bursts, steps and jumps across every window edge
GAPS = st.one_of(st.just(0.0), st.floats(0, 1.5), st.floats(58.5, 61.5), st.sampled_from([0.1, 59.8, 59.9, 60.0]))


@settings(max_examples=300, deadline=None)
@given(limit=st.integers(1, 5), requests=st.lists(st.tuples(GAPS, st.integers(0, 2)), max_size=40),
       offset=st.floats(0, 1, exclude_max=True))
def test_no_60_second_window_ever_holds_more_than_the_limit_whichever_container_answers(
        limit: int, requests: list[tuple[float, int]], offset: float) -> None:
    # GIVEN three containers on one table and a sequence of requests, each to one container
    table = Table()
    containers = [RateLimiter(table) for _ in range(3)]
    at = MINUTE + offset
    accepted: list[float] = []
    for gap, container in requests:
        at += gap
        # WHEN each request is checked
        before = copy.deepcopy(table.windows)
        retry_after = refusal(containers[container], at, limit)
        if retry_after is None:
            accepted.append(at)
            continue
        # THEN a refusal is due: the limit was reached within the seconds that count at `at`
        assert sum(1 for t in accepted if t >= math.floor(at) - WINDOW_SECONDS) >= limit
        # AND its Retry-After is exact: a retry that much later is allowed, a second earlier is not
        assert table.windows == before
        assert allowed(RateLimiter(copy.deepcopy(table)), at + retry_after, limit)
        assert not allowed(RateLimiter(copy.deepcopy(table)), at + retry_after - 1, limit)
    # THEN no 60-second window, open or closed, holds more than the limit
    assert most_in_any_window(accepted) <= limit


@pytest.mark.parametrize("step", [0.1, 0.25, 0.7, 1.0, 1.3])
def test_a_steady_stream_across_many_minute_boundaries_never_exceeds_the_limit(step: float) -> None:
    # GIVEN a client that writes every `step` seconds for five minutes, limit 10
    limiter = RateLimiter(Table())
    times = [MINUTE - 30 + i * step for i in range(int(300 / step))]
    # WHEN / THEN no window holds more than 10, and the limit is used (it does not refuse for nothing)
    accepted = [t for t in times if allowed(limiter, t, 10)]
    assert most_in_any_window(accepted) == 10


def test_the_boundary_attack_gets_only_the_limit_through() -> None:
    # GIVEN a limit of 600 and 600 writes at 0:59.9 of a minute
    limiter = RateLimiter(Table())
    assert all(allowed(limiter, MINUTE + 59.9, 600) for _ in range(600))
    # WHEN 600 more come at 1:00.1, in the next fixed minute
    # THEN every one is refused, until the first 600 no longer count (whole second 59 + 61)
    with pytest.raises(RateLimited) as refused:
        limiter.check("alice", 600, now=MINUTE + 60.1)
    assert refused.value.retry_after == 60
    assert not any(allowed(limiter, MINUTE + 60.1, 600) for _ in range(599))
    assert not allowed(limiter, MINUTE + 119.9, 600)
    assert allowed(limiter, MINUTE + 120.0, 600)


def test_a_container_that_saw_the_limit_reached_refuses_without_a_request() -> None:
    # GIVEN a container that made the user's three writes (limit 3)
    table = Table()
    container = RateLimiter(table)
    for _ in range(3):
        container.check("alice", 3, now=MINUTE)
    table.requests.clear()
    # WHEN the user writes again / THEN refused, with no request to the table
    with pytest.raises(RateLimited):
        container.check("alice", 3, now=MINUTE + 1)
    assert table.requests == []


@pytest.mark.parametrize(("warm_up", "expected"), [
    ("none", ["GetItem", "PutItem"]),  # the container never saw the user
    ("own write", ["PutItem"]),  # it made the user's last write
    ("another container wrote", ["PutItem", "GetItem", "PutItem"]),  # its state is stale
])
def test_requests_per_allowed_write(warm_up: str, expected: list[str]) -> None:
    # GIVEN a container in the state `warm_up` describes
    table = Table()
    container, other = RateLimiter(table), RateLimiter(table)
    if warm_up != "none":
        container.check("alice", 10, now=MINUTE)
    if warm_up == "another container wrote":
        other.check("alice", 10, now=MINUTE)
    table.requests.clear()
    # WHEN it allows a write / THEN it made these requests
    container.check("alice", 10, now=MINUTE + 1)
    assert table.requests == expected


def test_retry_after_counts_from_the_oldest_second_that_must_leave() -> None:
    # GIVEN writes at :10 (two) and :30 (one), limit 3
    window = Window(((MINUTE + 10, 2), (MINUTE + 30, 1)))
    # WHEN checked at :45.5 / THEN one more is allowed once second :10 stops counting, at :71
    assert window.allowed_from(3) == MINUTE + 71
    assert window.retry_after(MINUTE + 45.5, 3) == 26
    # AND with limit 1 second :30 must leave too
    assert window.allowed_from(1) == MINUTE + 91
