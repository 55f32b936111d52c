"""Which DynamoDB failures the API answers `503 service_unavailable` (API.md, Errors)."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError
from pynamodb.exceptions import PutError

from chalicelib.store.writes import is_retry_later


def _client_error(code: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "injected"}}, "PutItem")


@pytest.mark.parametrize("code", ["ProvisionedThroughputExceededException", "ThrottlingException",
                                  "RequestLimitExceeded", "TransactionConflictException"])
def test_throttles_and_transaction_conflicts_are_retried_later(code: str) -> None:
    assert is_retry_later(_client_error(code))
    assert is_retry_later(PutError("wrapped by PynamoDB", cause=_client_error(code)))


def test_a_failure_raised_from_a_throttle_is_one_too() -> None:
    error = RuntimeError("while saving")
    error.__cause__ = _client_error("ThrottlingException")
    assert is_retry_later(error)


@pytest.mark.parametrize("error", [
    _client_error("ConditionalCheckFailedException"), _client_error("ValidationException"), RuntimeError("boom"),
])
def test_other_failures_are_not(error: Exception) -> None:
    assert not is_retry_later(error)
