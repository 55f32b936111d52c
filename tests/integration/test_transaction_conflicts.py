"""DynamoDB cancels a transaction with TransactionConflict when another transaction touches
the same item at that moment; moto never does, so these tests inject it by patching the client's
API call (tests/faults.py)."""

from __future__ import annotations

from chalicelib.store import retrying
from tests.faults import fail_calls, transaction_conflict

BODY = {"type": "config.release", "target_nodes": ["t1"], "parameters": {"website_id": 1}}


def test_a_retry_that_meets_a_concurrent_transaction_is_retried_with_backoff_and_goes_through(fleet, monkeypatch):
    # GIVEN a finished, failed task
    fleet.register("t1")
    task_id = fleet.submit(BODY).body["task_id"]
    fleet.settle()
    fleet.run_agents(["t1"], fail=frozenset({"t1"}))
    assert fleet.task(task_id)["status"] == "failed"
    # WHEN the retry's transaction is cancelled once by a concurrent one
    seen = fail_calls(monkeypatch, "TransactWriteItems", transaction_conflict)
    answer = fleet.user("POST", f"/v1/tasks/{task_id}/retry", {"scope": "failed"})
    # THEN the service writes it again after a backoff and the retry goes through
    assert seen
    assert answer.status == 202, answer
    fleet.settle()
    assert fleet.task(task_id)["attempt"] == 2


def test_a_retry_whose_conflicts_outlast_the_backoff_answers_503_with_retry_after(fleet, monkeypatch):
    # GIVEN a finished, failed task
    fleet.register("t1")
    task_id = fleet.submit(BODY).body["task_id"]
    fleet.settle()
    fleet.run_agents(["t1"], fail=frozenset({"t1"}))
    # WHEN every attempt of the retry's transaction meets a concurrent one
    seen = fail_calls(monkeypatch, "TransactWriteItems", transaction_conflict, times=retrying.ATTEMPTS)
    answer = fleet.user("POST", f"/v1/tasks/{task_id}/retry", {"scope": "failed"})
    # THEN the client is told to come back (503 with Retry-After), and nothing changed
    assert len(seen) == retrying.ATTEMPTS
    assert answer.status == 503, answer
    assert answer.body["error"]["code"] == "service_unavailable"
    assert answer.headers["Retry-After"] == "1"
    assert fleet.task(task_id)["status"] == "failed"


def test_a_create_racing_the_same_idempotency_key_in_flight_answers_with_the_winners_task(fleet, monkeypatch):
    # GIVEN the winner's task already written under the key
    first = fleet.submit(BODY, key="race-1")
    assert first.status == 202
    # WHEN a second create with the same key meets the winner's transaction in flight
    from chalicelib.services import submit

    monkeypatch.setattr(submit, "_replay", _skip_first_replay(submit._replay))
    seen = fail_calls(monkeypatch, "TransactWriteItems", transaction_conflict)
    answer = fleet.submit(BODY, key="race-1")
    # THEN it answers with the winner's task, not an error
    assert seen
    assert answer.status == 200, answer
    assert answer.body["task_id"] == first.body["task_id"]
    fleet.settle()
    assert fleet.stats()["total_tasks"] == 1


def _skip_first_replay(replay):
    calls = []

    def wrapped(owner, key, fingerprint):
        calls.append(key)
        if len(calls) == 1:
            return None  # the pre-check ran before the winner committed
        return replay(owner, key, fingerprint)

    return wrapped
