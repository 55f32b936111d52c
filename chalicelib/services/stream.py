"""The stream handler: two paths over the same batch, and only one of them can fail it.

The critical path — aggregation (counts, statistics, the outbox, finishing), then each of
`CONSUMERS` (monitoring snapshot, machine reclaim, concurrency-key release) — is work that
must not be lost: a failure reports the batch failed and Lambda redelivers it. Every step is
idempotent under replay, and each consumer runs isolated: one that raises does not stop the
others, the batch is simply redelivered for all of them.

The best-effort path — `BEST_EFFORT_CONSUMERS`: WebSocket pushes and notification fan-out —
runs in parallel on its own thread (invariant 7: a push or notification failure never fails or
delays the task, its counters or its concurrency key). Its consumers run in order (run changes
before the task's: a client that stops at a task's terminal status has seen its runs end), each
isolated; a failure is logged and counted, never reported to Lambda (a batch that failed forever
would hold back every later record of its shard). The handler waits for this path at most
`BEST_EFFORT_WAIT_SECONDS` after the critical path is done, then returns.

A batch redelivered after a critical failure pushes and notifies again (clients keep the latest
task state and tell events apart by id; notification deliveries have deterministic ids).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Final

from chalicelib.notify import fanout
from chalicelib.observability import count, logger
from chalicelib.services import aggregation, concurrency, reclaim, snapshot
from chalicelib.services.realtime import output_push, push, run_push
from chalicelib.store.stream_records import Record

Consumer = Callable[[list[Record]], None]

#: work that must not be lost, in the order it runs; each feature adds its own here
CONSUMERS: tuple[Consumer, ...] = (
    concurrency.release_on_terminal,  # concurrency keys: the next task starts when the holder settles
    reclaim.consume,  # machine.reclaim tasks that settle move their node (services/reclaim.py)
    snapshot.consume,  # monitoring: node counts by status
)
#: best effort, off the critical path (see above)
BEST_EFFORT_CONSUMERS: tuple[Consumer, ...] = (
    run_push.push, push.push, output_push.push,  # WebSocket pushes (they catch their own errors)
    fanout.consume,  # notifications: one queued delivery per (subscription, task change)
)
#: how long a handler waits for the best-effort path once the critical path is done
BEST_EFFORT_WAIT_SECONDS: Final = 10.0


def handle(raw_records: Iterable[Mapping[str, Any]]) -> list[str]:
    """Returns the sequence numbers to report as failed (at most one)."""
    raw = list(raw_records)
    records = [Record(r) for r in raw]
    if not records:
        return aggregation.process_batch(raw)
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="best-effort")
    best_effort = pool.submit(_run_all, BEST_EFFORT_CONSUMERS, records)
    try:
        failed = aggregation.process_batch(raw)
        if not _run_all(CONSUMERS, records):
            failed = [min(records, key=lambda r: r.seq).raw_seq]
    finally:
        _wait(best_effort)
        pool.shutdown(wait=False)
    return failed


def _run_all(consumers: Iterable[Consumer], records: list[Record]) -> bool:
    """Run every consumer on the batch, each isolated; False when any raised."""
    ok = True
    for consume in consumers:
        try:
            consume(records)
        except Exception:
            name = getattr(consume, "__qualname__", repr(consume))
            logger.exception("stream consumer failed", extra={"consumer": name})
            count("StreamConsumerFailed", consumer=name)
            ok = False
    return ok


def _wait(best_effort: Any) -> None:
    try:
        best_effort.result(timeout=BEST_EFFORT_WAIT_SECONDS)
    except FutureTimeout:
        logger.warning("best-effort stream consumers still running; not waiting for them")
