"""The runs of a task attempt: created for the first attempt, reset for a retry (with
backfill of what is missing), one per (task, node), numbered for the concurrency window.

The work comes in parts (a dispatch chunk: services/dispatch.py): each part is a slice of the
task's target chunks and numbers its runs from the ordinal the part before it ended at.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from chalicelib.domain import dispatch_progress as progress
from chalicelib.domain.records import NodeRun, Task
from chalicelib.domain.run_transitions import RUN_TRANSITIONS, retry_action
from chalicelib.store import runs, target_chunks
from chalicelib.store.runs import NewRun, RunTemplate


def template(task: Task, dispatch_id: str, now: str) -> RunTemplate:
    return RunTemplate(
        task_id=task.task_id, type=task.type, owner=task.owner, priority=int(task.priority),
        runner_node=task.runner_node, generation=int(task.attempt), dispatch_id=dispatch_id, now=now,
    )


def prepare_part(task: Task, dispatch_id: str, nodes: list[str], first_ordinal: int,
                 now: str) -> tuple[list[str], list[str], int]:
    """Create (attempt 1, or nodes a dispatch request added) or reset (a retry) the runs of
    `nodes`, numbered from `first_ordinal`. Returns (created, skipped, how many ordinals it used).

    Idempotent: a resumed or duplicate part creates only what is missing, numbers the same way
    and reports the same figures."""
    runs_of = template(task, dispatch_id, now)
    if int(task.attempt) == 1 or dispatch_id != progress.attempt_dispatch_id(task.task_id, int(task.attempt)):
        created, skipped = runs.create_missing(runs_of, [NewRun(n, first_ordinal + i) for i, n in enumerate(nodes)])
        return created, skipped, len(nodes)
    return _reset_for_retry(task, runs_of, nodes, first_ordinal)


def prepare_attempt_part(task: Task, part: int, now: str) -> tuple[list[str], int]:
    """Part `part` of the task's current attempt, its ordinals from `part` x DISPATCH_CHUNK_SIZE.
    Only for a retry cancelled before its dispatch started (services/cancellation.py), which
    must reset its runs to cancel them, a part per job: runs that will never run need unique
    ordinals, not dense ones. Returns (the part's nodes, how many parts the attempt has)."""
    size = progress.DISPATCH_CHUNK_SIZE
    nodes = target_chunks.nodes_of_part(task.task_id, 0, part, size)
    prepare_part(task, progress.attempt_dispatch_id(task.task_id, int(task.attempt)), nodes, part * size, now)
    return nodes, chunks_for(int(task.target_count), int(task.target_chunks))


def chunks_for(node_count: int, target_chunk_count: int | None = None) -> int:
    """Dispatch chunks of a dispatch of `node_count` nodes stored in `target_chunk_count` target
    chunks (default: as many as they fill). Chunks run target chunk by target chunk, so when a
    growth left a chunk partial in the middle, each target chunk counts whole (some chunks empty)."""
    size, per = progress.DISPATCH_CHUNK_SIZE, target_chunks.parts_per_chunk(progress.DISPATCH_CHUNK_SIZE)
    full, rest = divmod(node_count, target_chunks.TARGET_CHUNK_SIZE)
    if target_chunk_count is not None and target_chunk_count != full + (1 if rest else 0):
        return target_chunk_count * per
    return full * per + -(-rest // size)


def _reset_for_retry(task: Task, runs_of: RunTemplate, nodes: list[str],
                     first_ordinal: int) -> tuple[list[str], list[str], int]:
    """Reset the runs of `nodes` a retry covers to `pending` with dense ordinals; backfill the
    missing ones after them.

    The selection and numbering depend only on stored state, so a resumed part numbers the
    same way: runs this attempt already reset carry `reset_gen == attempt`.
    """
    attempt = int(task.attempt)
    action = retry_action(task.retry_scope or "failed")
    resettable = RUN_TRANSITIONS[action].sources
    found = runs.run_concurrently([partial(runs.find, task.task_id, node) for node in nodes])
    missing: list[str] = []
    created: list[str] = []
    skipped: list[str] = []
    calls: list[Callable[[], Any]] = []
    ordinal = first_ordinal
    for node, run in zip(nodes, found, strict=True):
        if run is None or (int(run.generation) == attempt and run.reset_gen is None
                           and run.dispatch_id == runs_of.dispatch_id):
            missing.append(node)  # (or backfilled by an earlier try of this part: numbered again below)
        elif run.reset_gen is not None and int(run.reset_gen) == attempt:
            created.append(node)
            ordinal += 1
        elif int(run.generation) < attempt and run.status in resettable:
            calls.append(partial(_reset_run, run, action, attempt, ordinal, runs_of.now))
            created.append(node)
            ordinal += 1
        else:
            skipped.append(node)
    runs.run_concurrently(calls)
    backfilled, _ = runs.create_missing(runs_of, [NewRun(n, ordinal + i) for i, n in enumerate(missing)])
    return created + backfilled, skipped, ordinal + len(missing) - first_ordinal


def _reset_run(run: NodeRun, action: str, attempt: int, ordinal: int, now: str) -> None:
    runs.transition(run, action, now, generation=attempt, ordinal=ordinal)
