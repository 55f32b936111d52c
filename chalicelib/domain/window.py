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
from dataclasses import dataclass

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
    scan = scan_waiting(first_closed, waiting_ordinals)
    return 0 if scan is None else shift_after(first_closed, counts, scan)


@dataclass(frozen=True)
class Scan:
    """What a look has read so far of the waiting runs of a window that may be stalled (a large
    task's runs are read one group of run partitions per job: services/run_looks.py)."""

    lowest: int | None = None
    read: int = 0


def scan_waiting(first_closed: int, ordinals: Iterable[int], so_far: Scan = Scan()) -> Scan | None:
    """`so_far` with `ordinals` read too; None as soon as one of them is released (no stall)."""
    lowest, read = so_far.lowest, so_far.read
    for ordinal in ordinals:
        if ordinal < first_closed:
            return None
        lowest = ordinal if lowest is None else min(lowest, ordinal)
        read += 1
    return Scan(lowest, read)


def shift_after(first_closed: int, counts: Mapping[str, int], scan: Scan) -> int:
    """The shift that releases the lowest waiting run once every waiting run was read (0 when
    fewer were read than the counts say: see `reopen_shift`)."""
    if scan.lowest is None or scan.read != int(counts[RunStatus.PENDING]):
        return 0
    return max(0, scan.lowest - first_closed + 1)
