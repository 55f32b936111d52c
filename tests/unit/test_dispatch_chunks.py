"""The rules of a dispatch in chunks (domain/dispatch_progress.py, the `dispatch_chunk` row of
the task transition table, services/attempts.chunks_for): no AWS."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from chalicelib.domain import dispatch_progress as progress
from chalicelib.domain.task_transitions import TaskInputs, task_change
from chalicelib.domain.writes import Add
from chalicelib.resources import DISPATCH_QUEUE
from chalicelib.services.attempts import chunks_for


def task(**fields: Any) -> SimpleNamespace:
    base = {"task_id": "t1", "attempt": 1, "counted_ver": 0, "target_count": 0, "target_chunks": 0,
            "ordinal_next": 0, "progress_sum": 0, "counts": {}, "waiting_for_task_id": None,
            "dispatched_attempt": 1, "dispatched_through": 0, "dispatch_chunks": 0}
    return SimpleNamespace(**{**base, **fields})


def test_an_invocation_of_the_dispatch_queue_never_creates_more_than_the_bound() -> None:
    assert progress.DISPATCH_CHUNK_SIZE * DISPATCH_QUEUE.batch_size <= progress.RUNS_PER_INVOCATION == 1000


@pytest.mark.parametrize(("nodes", "target_chunks", "expected"), [
    (0, 0, 0), (3, 1, 1), (200, 1, 1), (201, 1, 2), (10_000, 10, 50), (10_000, None, 50),
    # a growth left chunk 0 partial: each target chunk counts whole
    (1500, 3, 15),
])
def test_chunks_of_a_dispatch(nodes: int, target_chunks: int | None, expected: int) -> None:
    assert chunks_for(nodes, target_chunks) == expected


@pytest.mark.parametrize(("stored", "state"), [
    ({"dispatched_attempt": 0}, progress.PENDING),
    ({"attempt": 2, "dispatched_attempt": 1, "dispatched_through": 5, "dispatch_chunks": 5}, progress.PENDING),
    ({"dispatched_through": 1, "dispatch_chunks": 3}, progress.IN_PROGRESS),
    ({"dispatched_through": 3, "dispatch_chunks": 3}, progress.DONE),
    ({"dispatched_through": 0, "dispatch_chunks": 0}, progress.DONE),  # a task from before chunks
])
def test_the_state_of_a_dispatch(stored: dict[str, Any], state: str) -> None:
    assert progress.state(task(**stored)) == state


def test_a_chunk_records_its_progress_once() -> None:
    # GIVEN a running task whose dispatch did chunk 0 and 1
    stored = {"status": "running", "attempt": 1, "dispatch_id": "t1:1", "dispatched_through": 2,
              "created_count": 20}
    given = TaskInputs(now="2026-12-06T18:00:00.000Z", dispatch_id="t1:1", chunk=2, created_count=10,
                       ordinal_next=30)

    # WHEN chunk 2 is recorded
    change = task_change("dispatch_chunk", task(dispatched_through=2), given)

    # THEN it holds once, adds its figures and stamps its progress; a duplicate or another dispatch does not hold
    assert change.holds(stored)
    after = change.applied_to(stored)
    assert (after["dispatched_through"], after["created_count"], after["ordinal_next"]) == (3, 30, 30)
    assert after["dispatch_progress_at"] == given.now
    assert after["status"] == "running"
    assert change.fields["created_count"] == Add(10)
    assert not change.holds(after)
    assert not change.holds({**stored, "dispatch_id": "t1:route:x"})
    assert not change.holds({**stored, "status": "completed"})
    assert change.holds({**stored, "status": "cancelling"})  # a cancelled retry still resets its runs
