"""A dispatch in chunks: how big a chunk is, and where a task's dispatch stands.

A dispatch (of a task attempt, or of the nodes a dispatch request added) creates its runs
in chunks, one dispatch job per chunk; each job records its chunk on the task item
(`dispatched_through`, `dispatch_progress_at`: the `dispatch_chunk` transition) and sends
the next. A task attempt starts after its first chunk, so agents claim while the rest is
created (the window hands out ordinals in creation order).
"""

from __future__ import annotations

from typing import Any, Final

#: no Lambda invocation creates (or resets) more runs than this (invariant 9)
RUNS_PER_INVOCATION: Final = 1000
#: runs one dispatch job creates: an invocation takes a batch of up to five jobs from the dispatch
#: queue (resources.DISPATCH_QUEUE.batch_size; a unit test keeps the product within the bound)
DISPATCH_CHUNK_SIZE = RUNS_PER_INVOCATION // 5
#: new nodes `POST /v1/tasks/{id}/dispatch` creates inside the request; more go to the queue (202)
INLINE_DISPATCH_LIMIT: Final = 100

#: the dispatch's state as the API shows it (`dispatch.state`)
DONE: Final = "done"
IN_PROGRESS: Final = "in_progress"
#: the current attempt's dispatch has not begun (waiting for its job or its concurrency key)
PENDING: Final = "pending"
STATES: Final = (PENDING, IN_PROGRESS, DONE)


def attempt_dispatch_id(task_id: str, attempt: int) -> str:
    """The dispatch id of a task attempt's own dispatch (its runs carry it)."""
    return f"{task_id}:{attempt}"


def started(task: Any) -> bool:
    """The current attempt's `start` is written (its first chunk exists)."""
    return int(task.dispatched_attempt) == int(task.attempt)


def in_progress(task: Any) -> bool:
    """Runs of the task are still being created: the attempt's dispatch has not started, or a
    chunked dispatch has chunks left."""
    return not started(task) or int(task.dispatched_through or 0) < int(task.dispatch_chunks or 0)


def state(task: Any) -> str:
    if not started(task):
        return PENDING
    return IN_PROGRESS if in_progress(task) else DONE
