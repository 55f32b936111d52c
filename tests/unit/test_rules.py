"""Pure rules: the error budget (`max_errors`), how a finished task ends, and progress."""

from __future__ import annotations

import pytest

from chalicelib.domain.rules import (
    allowed_errors,
    empty_counts,
    error_budget_exceeded,
    error_count,
    final_status,
    finished_count,
    in_flight,
    progress,
    run_progress_weight,
)
from chalicelib.domain.statuses import RUN_STATUSES


def counts(**given: int) -> dict[str, int]:
    return {**empty_counts(), **given}


class TestAllowedErrors:
    @pytest.mark.parametrize(("max_errors", "total", "expected"), [(0, 10, 0), (3, 10, 3), (50, 2, 50)])
    def test_an_integer_is_a_count(self, max_errors, total, expected):
        assert allowed_errors(max_errors, total) == expected

    def test_an_integer_stored_as_text_is_a_count(self):
        # submit stores max_errors as a string ("0", "3" or "10%")
        assert allowed_errors("3", 10) == 3
        assert allowed_errors("0", 10) == 0

    @pytest.mark.parametrize(
        ("max_errors", "total", "expected"),
        [
            ("10%", 25, 2),  # 2.5 floored
            ("10%", 9, 0),  # 0.9 floored
            ("10%", 10, 1),
            ("0%", 25, 0),
            ("100%", 25, 25),
            ("50%", 3, 1),
            ("33%", 100, 33),
            ("10%", 0, 0),
        ],
    )
    def test_a_percentage_of_the_nodes_is_floored(self, max_errors, total, expected):
        assert allowed_errors(max_errors, total) == expected


class TestErrorBudget:
    def test_failed_and_timed_out_count_as_errors_but_cancelled_does_not(self):
        assert error_count(counts(failed=2, timed_out=1, cancelled=5, succeeded=3)) == 3

    def test_reaching_the_budget_is_not_exceeding_it(self):
        assert error_budget_exceeded(counts(failed=2), 2, 10) is False

    def test_one_more_than_the_budget_exceeds_it(self):
        assert error_budget_exceeded(counts(failed=2, timed_out=1), 2, 10) is True

    def test_zero_budget_is_exceeded_by_the_first_failure(self):
        assert error_budget_exceeded(counts(), 0, 10) is False
        assert error_budget_exceeded(counts(failed=1), 0, 10) is True
        assert error_budget_exceeded(counts(timed_out=1), "0", 10) is True

    def test_cancelled_runs_do_not_spend_the_budget(self):
        assert error_budget_exceeded(counts(cancelled=9), 0, 10) is False

    def test_percentage_budget(self):
        # 10% of 25 nodes = 2 tolerated
        assert error_budget_exceeded(counts(failed=2), "10%", 25) is False
        assert error_budget_exceeded(counts(failed=3), "10%", 25) is True

    def test_hundred_percent_tolerates_every_node(self):
        assert error_budget_exceeded(counts(failed=25), "100%", 25) is False


class TestFinalStatus:
    def test_all_succeeded_is_completed_without_message(self):
        assert final_status(counts(succeeded=3), budget_exceeded=False) == ("completed", None)

    def test_some_failed_some_succeeded_is_partial_failure_with_a_message(self):
        status, message = final_status(counts(succeeded=2, failed=1), budget_exceeded=False)
        assert status == "partial_failure"
        assert message == "1 of 3 node(s) did not succeed"

    def test_timed_out_and_cancelled_nodes_also_make_a_partial_failure(self):
        status, message = final_status(counts(succeeded=1, timed_out=1, cancelled=1), budget_exceeded=False)
        assert status == "partial_failure"
        assert message == "2 of 3 node(s) did not succeed"

    def test_none_succeeded_is_failed(self):
        status, message = final_status(counts(failed=2, timed_out=1), budget_exceeded=False)
        assert status == "failed"
        assert message == "all 3 node(s) failed"

    def test_budget_exceeded_is_failed_even_with_successes(self):
        status, message = final_status(counts(succeeded=8, failed=2), budget_exceeded=True)
        assert status == "failed"
        assert message is not None
        assert "2 node(s) failed" in message
        assert "max_errors" in message

    def test_in_flight_runs_are_not_counted_as_finished(self):
        # only finished runs decide; pending/running ones are not "did not succeed"
        status, message = final_status(counts(succeeded=2, pending=1, running=1), budget_exceeded=False)
        assert (status, message) == ("completed", None)


class TestCounting:
    def test_empty_counts_has_every_run_status_at_zero(self):
        assert empty_counts() == dict.fromkeys(RUN_STATUSES, 0)

    def test_finished_are_the_terminal_runs(self):
        assert finished_count(counts(succeeded=1, failed=2, timed_out=3, cancelled=4, running=5, pending=6)) == 10

    def test_in_flight_are_pending_running_and_apply_pending(self):
        assert in_flight(counts(pending=1, running=2, apply_pending=3, succeeded=9)) == 6

    def test_missing_statuses_count_as_zero(self):
        assert finished_count({}) == 0
        assert error_count({"failed": 1}) == 1
        assert in_flight({}) == 0


class TestProgress:
    @pytest.mark.parametrize(
        ("progress_sum", "total", "expected"),
        [(0, 4, 0), (200, 4, 50), (399, 4, 99), (400, 4, 100), (150, 2, 75), (100, 3, 33)],
    )
    def test_is_the_floored_mean(self, progress_sum, total, expected):
        assert progress(progress_sum, total) == expected

    def test_is_clamped_to_0_100(self):
        assert progress(1000, 2) == 100
        assert progress(-50, 2) == 0

    @pytest.mark.parametrize("total", [0, -1])
    def test_no_nodes_is_zero(self, total):
        assert progress(500, total) == 0


class TestRunProgressWeight:
    @pytest.mark.parametrize("status", ["succeeded", "failed", "timed_out", "cancelled"])
    def test_finished_runs_count_as_100(self, status):
        assert run_progress_weight(status, 0) == 100
        assert run_progress_weight(status, 40) == 100

    @pytest.mark.parametrize(("reported", "expected"), [(0, 0), (40, 40), (99, 99), (100, 99), (250, 99), (-5, 0)])
    def test_a_running_run_counts_its_progress_below_100(self, reported, expected):
        assert run_progress_weight("running", reported) == expected

    def test_a_pending_run_counts_zero(self):
        assert run_progress_weight("pending", 70) == 0
