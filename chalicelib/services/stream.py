"""The stream handler: aggregation first, then every consumer of the same batch.

Aggregation (counts, statistics, the outbox, finishing) reports the records Lambda must
redeliver. Each consumer then sees the whole batch; consumers are idempotent (a batch may
be replayed) and a consumer that raises has the batch redelivered from its first record.
A consumer whose work is best effort (a WebSocket push) catches its own errors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from chalicelib.notify import fanout
from chalicelib.observability import logger
from chalicelib.services import aggregation, snapshot
from chalicelib.services.aggregation import Record

Consumer = Callable[[list[Record]], None]

#: consumers in the order they run; each feature adds its own here
CONSUMERS: tuple[Consumer, ...] = (
    snapshot.consume,  # monitoring: node counts by status
    fanout.consume,  # notifications: one queued delivery per (subscription, task change)
)


def handle(raw_records: Iterable[Mapping[str, Any]]) -> list[str]:
    """Returns the sequence numbers to report as failed (at most one)."""
    raw = list(raw_records)
    failed = aggregation.process_batch(raw)
    if not raw or not CONSUMERS:
        return failed
    records = [Record(r) for r in raw]
    for consume in CONSUMERS:
        try:
            consume(records)
        except Exception:
            logger.exception("stream consumer failed", extra={"consumer": consume.__qualname__})
            return [min(records, key=lambda r: r.seq).raw_seq]
    return failed
