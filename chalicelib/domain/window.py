"""The concurrency window of a task: at most `max_concurrency` of its runs in flight.

Every run of a task attempt carries an ordinal: the dispatch numbers the runs it creates
(or, on a retry, the runs it resets) densely from 0, and a dispatch request that adds nodes
hands out ordinals from `ordinal_next` on. A run may be claimed while its ordinal is below

    released = max_concurrency + finished - finished_base

where `finished` is the number of the task's runs in a terminal status (the aggregated node
counts) and `finished_base` the number that were already finished when the attempt began
(a retry sets it from the counts it leaves behind; a new attempt that resets everything
sets it to 0). Each run that ends releases exactly one more ordinal, so claims need no
counter of their own and never write the task item: the window moves with the counts the
stream aggregates anyway.

One thing can stall it: a gap in the ordinals (a dispatch request that reserved ordinals and
crashed before creating the runs). Then nothing runs while runs wait above `released`;
`reopen_shift` says how far to lower `finished_base` so that the lowest waiting ordinal is
released, and the sweeper writes it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from chalicelib.domain import rules
from chalicelib.domain.statuses import RunStatus


def released(max_concurrency: int, counts: Mapping[str, int], finished_base: int) -> int:
    """The first ordinal that may not start yet."""
    return int(max_concurrency) + rules.finished_count(counts) - int(finished_base)


def may_start(ordinal: int, max_concurrency: int, counts: Mapping[str, int], finished_base: int) -> bool:
    return int(ordinal) < released(max_concurrency, counts, finished_base)


def base_for_new_attempt(counts_after_reset: Mapping[str, int]) -> int:
    """`finished_base` of an attempt that starts with these counts (runs it did not reset
    stay finished and must not widen its window)."""
    return rules.finished_count(counts_after_reset)


def reopen_shift(max_concurrency: int, counts: Mapping[str, int], finished_base: int,
                 waiting_ordinals: Iterable[int]) -> int:
    """How much to lower `finished_base` so a stalled window releases its lowest waiting run
    (0 when the window is not stalled: something runs, nothing waits, or it is released).

    Reads `waiting_ordinals` (every pending run of the attempt, as stored) only until one is
    released: a released run that waits (its node is not claiming) means no stall, so a look at a
    task whose nodes are away stops at the first such run instead of reading every waiting one.
    A stall is acted on only when the runs read are as many as the counts say: counts behind
    the runs (a claim or a timeout the stream has not counted yet) would release too many."""
    if counts.get(RunStatus.RUNNING) or not counts.get(RunStatus.PENDING):
        return 0
    first_closed = released(max_concurrency, counts, finished_base)
    lowest: int | None = None
    read = 0
    for ordinal in waiting_ordinals:
        if ordinal < first_closed:
            return 0
        lowest = ordinal if lowest is None else min(lowest, ordinal)
        read += 1
    if lowest is None or read != int(counts[RunStatus.PENDING]):
        return 0
    return lowest - first_closed + 1
