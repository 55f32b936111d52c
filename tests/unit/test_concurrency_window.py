"""The concurrency window's arithmetic (domain/window.py): which ordinals are released, and how
far a stalled window is reopened. No AWS."""

from __future__ import annotations

from collections.abc import Iterator

from chalicelib.domain import window

WAITING_ONLY = {"pending": 5, "running": 0, "succeeded": 0}


def test_each_finished_run_releases_one_more_ordinal() -> None:
    assert window.released(2, {"pending": 3}, 0) == 2
    assert window.released(2, {"pending": 2, "succeeded": 1}, 0) == 3
    assert window.released(2, {"pending": 2, "succeeded": 1}, 1) == 2  # finished before the attempt


def test_a_window_with_a_run_in_flight_is_not_stalled() -> None:
    assert window.reopen_shift(2, {"pending": 5, "running": 1}, 0, [7]) == 0


def test_a_gap_in_the_ordinals_is_closed_by_releasing_the_lowest_waiting_run_only() -> None:
    # GIVEN ordinals 0 and 1 never made (a crashed dispatch request), 2 in the window's place
    # WHEN the waiting ordinals are 4, 2 and 3 THEN the base moves so that 2 is released, not 3
    assert window.reopen_shift(2, {**WAITING_ONLY, "pending": 3}, 0, [4, 2, 3]) == 1
    assert window.released(2, WAITING_ONLY, 0 - 1) == 3


def test_a_released_run_that_waits_stops_the_read_of_the_others() -> None:
    # GIVEN waiting runs whose second read is released (its node is just not claiming)
    read: list[int] = []

    def ordinals() -> Iterator[int]:
        for ordinal in (5, 1, 9, 7):
            read.append(ordinal)
            yield ordinal

    # WHEN the shift is asked THEN it is none, and the runs after the released one were not read
    assert window.reopen_shift(2, WAITING_ONLY, 0, ordinals()) == 0
    assert read == [5, 1]


def test_counts_behind_the_runs_read_move_nothing() -> None:
    # GIVEN counts that say 5 runs wait, but 3 are read: 2 left pending (claimed, timed out)
    # and the stream has not counted it yet; their ordinals were the released ones
    # WHEN the shift is asked THEN none: with the counts caught up the window releases more anyway
    assert window.reopen_shift(2, WAITING_ONLY, 0, [4, 2, 3]) == 0


def test_nothing_waiting_needs_no_shift() -> None:
    assert window.reopen_shift(2, WAITING_ONLY, 0, []) == 0


def test_a_scan_in_groups_ends_where_one_scan_of_every_waiting_run_does() -> None:
    # GIVEN the waiting ordinals 4, 2 and 3 read in two groups (two jobs of a large task's look)
    counts = {**WAITING_ONLY, "pending": 3}
    first_closed = window.released(2, counts, 0)
    part = window.scan_waiting(first_closed, [4])
    assert part is not None
    whole = window.scan_waiting(first_closed, [2, 3], part)
    # THEN the scan carried over gives the shift one read of them all gives
    assert whole == window.Scan(lowest=2, read=3)
    assert window.shift_after(first_closed, counts, whole) == window.reopen_shift(2, counts, 0, [4, 2, 3]) == 1


def test_a_scan_whose_lowest_run_is_released_meanwhile_shifts_nothing() -> None:
    # GIVEN a scan that found 2 the lowest waiting ordinal, and a window that now releases up to 3
    # THEN no shift: a negative one would narrow the window
    assert window.shift_after(4, {"pending": 1}, window.Scan(lowest=2, read=1)) == 0
