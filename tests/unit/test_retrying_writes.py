"""store/retrying.py: conflicts and throttles are retried with capped full-jitter backoff; a
failed condition is an answer and is never retried."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from chalicelib.errors import Busy, ConditionFailed
from chalicelib.store import retrying
from chalicelib.store.retrying import retry_writes


def client_error(code: str, reasons: list[str] | None = None) -> ClientError:
    response: dict = {"Error": {"Code": code, "Message": code}}
    if reasons is not None:
        response["CancellationReasons"] = [{"Code": reason} for reason in reasons]
    return ClientError(response, "TransactWriteItems")


class Flaky:
    def __init__(self, *errors: Exception) -> None:
        self.errors, self.calls = list(errors), 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "written"


RETRIED = [
    ConditionFailed("conflict", conflict=True),
    Busy("busy"),
    client_error("TransactionCanceledException", ["None", "TransactionConflict"]),
    client_error("ProvisionedThroughputExceededException"),
    client_error("ThrottlingException"),
    client_error("TransactionConflictException"),
]


@pytest.mark.parametrize("error", RETRIED, ids=lambda e: type(e).__name__ + str(getattr(e, "response", "")))
def test_a_conflict_or_a_throttle_is_retried_until_the_write_lands(error: Exception) -> None:
    write, pauses = Flaky(error, error), []
    assert retry_writes(write, sleep=pauses.append) == "written"
    assert write.calls == 3
    assert len(pauses) == 2


@pytest.mark.parametrize("error", [
    ConditionFailed(),
    client_error("ConditionalCheckFailedException"),
    client_error("TransactionCanceledException", ["ConditionalCheckFailed"]),
    ValueError("a bug"),
])
def test_a_failed_condition_or_a_bug_is_raised_at_once(error: Exception) -> None:
    write, pauses = Flaky(error), []
    with pytest.raises(type(error)):
        retry_writes(write, sleep=pauses.append)
    assert write.calls == 1
    assert pauses == []


def test_the_last_conflict_propagates_when_the_attempts_run_out() -> None:
    write, pauses = Flaky(*[Busy("busy")] * 10), []
    with pytest.raises(Busy):
        retry_writes(write, attempts=4, sleep=pauses.append)
    assert write.calls == 4
    assert len(pauses) == 3


def test_pauses_are_full_jitter_under_an_exponential_ceiling_with_a_cap() -> None:
    for failures in range(1, 12):
        ceiling = min(1.0, 0.02 * 2 ** (failures - 1))
        pauses = [retrying.delay(failures) for _ in range(200)]
        assert all(0 <= pause <= ceiling for pause in pauses)
    assert max(retrying.delay(30) for _ in range(200)) <= 1.0


def test_a_retried_method_keeps_its_name_and_retries() -> None:
    write = Flaky(ConditionFailed("conflict", conflict=True))

    @retrying.retried
    def save() -> str:
        return write()

    assert save() == "written"
    assert save.__name__ == "save"
