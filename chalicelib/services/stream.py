"""The stream handler: aggregation first, then every consumer of the same batch.

Aggregation (counts, statistics, the outbox, finishing) reports the records Lambda must
redeliver. Each consumer then sees the whole batch; consumers are idempotent (a batch may
be replayed) and a consumer that raises has the batch redelivered from its first record.
A consumer whose work is best effort (a WebSocket push) catches its own errors.

`EARLY_CONSUMERS` run before aggregation: best effort and never raising, they write nothing
aggregation reads, and a slow aggregation (a task's creation, a node finishing: a second or
more on a loaded machine) must not delay them: subscribers hear of a write once it is streamed.
A batch redelivered after an aggregation failure pushes again (clients keep the latest task
state and tell events apart by id).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from chalicelib.notify import fanout
from chalicelib.observability import logger
from chalicelib.services import aggregation, concurrency, reclaim, snapshot
from chalicelib.services.realtime import output_push, push, run_push
from chalicelib.store.stream_records import Record

Consumer = Callable[[list[Record]], None]

#: best-effort consumers that run before aggregation (see above); they must not raise
#: (run changes first: a client that stops at a task's terminal status has seen its runs end)
EARLY_CONSUMERS: tuple[Consumer, ...] = (run_push.push, push.push, output_push.push)
#: consumers in the order they run; each feature adds its own here
CONSUMERS: tuple[Consumer, ...] = (
    snapshot.consume,  # monitoring: node counts by status
    reclaim.consume,  # machine.reclaim tasks that settle move their node (services/reclaim.py)
    fanout.consume,  # notifications: one queued delivery per (subscription, task change)
    concurrency.release_on_terminal,  # concurrency keys: the next task starts when the holder settles
)


def handle(raw_records: Iterable[Mapping[str, Any]]) -> list[str]:
    """Returns the sequence numbers to report as failed (at most one)."""
    raw = list(raw_records)
    records = [Record(r) for r in raw]
    for consume in EARLY_CONSUMERS:
        consume(records)
    failed = aggregation.process_batch(raw)
    if not records:
        return failed
    for consume in CONSUMERS:
        try:
            consume(records)
        except Exception:
            logger.exception("stream consumer failed", extra={"consumer": consume.__qualname__})
            return [min(records, key=lambda r: r.seq).raw_seq]
    return failed
