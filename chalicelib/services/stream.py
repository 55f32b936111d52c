"""The two stream consumers: one counts, the other tells people. Neither waits on the other.

Each is its own Lambda function with its own event source mapping on the table's stream
(DynamoDB Streams serves at most two readers per shard: this is both), so each has its own
retries and a failure of one never holds back the other's shard.

`handle` (stream_aggregator) is the critical path: aggregation (counts, statistics, the outbox,
finishing), then each of `CONSUMERS` (concurrency-key release, machine reclaim, monitoring
snapshot). A failure reports the batch failed and Lambda redelivers it; every step is
idempotent under replay, and each consumer runs isolated (one that raises does not stop the
others). No push and no notification runs here (invariant 7).

`notify` (stream_notifier) pushes to WebSocket subscribers — best effort, each push isolated and
never failing the batch: subscribers catch up through the REST API — then queues notification
deliveries, whose failure has the batch redelivered (to this consumer only): deliveries carry
ids derived from the records, and an id queued once is not queued again (notify/fanout.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from chalicelib.notify import fanout
from chalicelib.observability import count, logger
from chalicelib.services import aggregation, concurrency, expiry, lease_watch, reclaim, snapshot
from chalicelib.services.realtime import output_push, push, run_push
from chalicelib.store.stream_records import Record

Consumer = Callable[[list[Record]], None]

#: work that must not be lost, in the order it runs; each feature adds its own here
CONSUMERS: tuple[Consumer, ...] = (
    concurrency.release_on_terminal,  # concurrency keys: the next task starts when the holder settles
    reclaim.consume,  # machine.reclaim tasks that settle move their node (services/reclaim.py)
    snapshot.consume,  # monitoring: node counts by status
    expiry.consume,  # an expired task's target chunks (services/expiry.py)
    lease_watch.consume,  # the sweeper's watch on the leases that start (services/lease_watch.py)
)
#: WebSocket pushes, best effort, in this order (a client that stops at a task's terminal status
#: has seen its runs end); each catches its own errors (realtime/sender.py stream_consumer)
PUSHES: tuple[Consumer, ...] = (run_push.push, push.push, output_push.push)
#: notifications: one queued delivery per (subscription, task change); redelivered on failure
NOTIFICATIONS: tuple[Consumer, ...] = (fanout.consume,)


def handle(raw_records: Iterable[Mapping[str, Any]]) -> list[str]:
    """The counting consumer. Returns the sequence numbers to report as failed (at most one)."""
    raw = list(raw_records)
    failed = aggregation.process_batch(raw)
    records = [Record(r) for r in raw]
    if records and not _run_all(CONSUMERS, records):
        failed = [_first(records)]
    return failed


def notify(raw_records: Iterable[Mapping[str, Any]]) -> list[str]:
    """The telling consumer. Returns the sequence numbers to report as failed (at most one)."""
    records = [Record(r) for r in raw_records]
    if not records:
        return []
    _run_all(PUSHES, records)  # best effort: never fails the batch
    return [] if _run_all(NOTIFICATIONS, records) else [_first(records)]


def _first(records: list[Record]) -> str:
    return min(records, key=lambda r: r.seq).raw_seq


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
