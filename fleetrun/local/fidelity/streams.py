"""DynamoDB Streams as AWS delivers them, not as moto does.

moto keeps one stream shard and the plain `StreamPump` hands its records to the handler in
global write order, one batch at a time. Real DynamoDB Streams keep order per item only: the
records of one task (its META item, its runs, its events) land on different shards, which
Lambda processes concurrently, in batches of any size, sometimes twice (a timed-out invocation
is retried whole), and a batch that was dead-lettered is never seen again. A consumer that is
exact only under moto's order is wrong on AWS (ARCHITECTURE.md, invariant 8).

`ShardedStreamPump` reads moto's shard(s) like `StreamPump` (iterators, positions, parents
before children, `on_advance`), spreads each page over `Fidelity.shards` virtual shards by a
hash of the item key, and delivers the virtual shards concurrently, each in its own order, cut
into batches of random size, replaying some, with `drop_next` to lose one. moto's shard position
moves only once every virtual shard has finished the page, so a runtime killed mid-page delivers
the page again: at least once, never lost (invariant 10).

Batch sizes and replays are drawn from one generator per virtual shard
(`Fidelity.rng("stream", <function>, "<index>")`), so for a seed they do not depend on how threads interleave.
"""

from __future__ import annotations

import contextvars
import json
import logging
import random
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fleetrun.local.fidelity import Fidelity, current
from fleetrun.local.pump_base import Handler, Pump, Record, failed_item_ids
from fleetrun.local.stream_pump import StreamPump, _Shard

logger = logging.getLogger("fleetrun.local.pumps")

#: the most records one `GetRecords` call returns
GET_RECORDS_LIMIT = 1000

RecordMatch = Callable[[Record], bool]


def _sequence_number(record: Record) -> str:
    return str(record["dynamodb"]["SequenceNumber"])


@dataclass
class _Outcome:
    delivered: int
    succeeded: bool


class _Lane(Pump):
    """One virtual shard's Lambda: its invocations one at a time, apart from the other shards'
    (`Pump._invoke` keeps one worker per pump), with the pump's handler and timeout, and its own
    generator of choices."""

    def __init__(self, pump: ShardedStreamPump, index: int) -> None:
        self.pump, self.index = pump, index
        self.function_name, self.region = pump.function_name, pump.region
        self.rng = pump.fidelity.rng("stream", pump.function_name, str(index))

    @property
    def handler(self) -> Handler:
        return self.pump.handler

    @handler.setter
    def handler(self, handler: Handler) -> None:
        self.pump.handler = handler

    @property
    def timeout_seconds(self) -> float:
        return self.pump.timeout_seconds

    @timeout_seconds.setter
    def timeout_seconds(self, seconds: float) -> None:
        self.pump.timeout_seconds = seconds

    def poll_once(self) -> int:
        return 0


class ShardedStreamPump(StreamPump):
    """A `StreamPump` that delivers like DynamoDB Streams on AWS: per item in order, otherwise
    concurrently and interleaved, in random batches of 1..min(`fidelity.max_batch`, `batch_size`),
    a successful batch replayed whole with probability `fidelity.replay_rate`.

    Failure rules per virtual shard, as Lambda's: reported `batchItemFailures` retry the batch from
    its first failed record, an exception retries it whole; after `max_retries` retries the rest of
    the batch goes to `on_give_up` and is skipped. `drop_next(match)` loses the next batch holding a
    record `match` accepts (the batch a dead-letter queue took): it is never delivered, and its
    records are added to `dropped`.
    """

    def __init__(self, streams_client: Any, stream_arn: str, handler: Handler, *,
                 fidelity: Fidelity | None = None, **options: Any) -> None:
        """`options` are StreamPump's (batch_size, max_retries, positions, on_advance, ...)."""
        super().__init__(streams_client, stream_arn, handler, **options)
        self.fidelity = fidelity if fidelity is not None else current()
        self.shard_count = max(1, self.fidelity.shards)
        self.largest_batch = max(1, min(self.fidelity.max_batch, self.batch_size))
        self._lanes = [_Lane(self, index) for index in range(self.shard_count)]
        self._drops: list[RecordMatch] = []
        self._lock = threading.Lock()
        #: records of the batches `drop_next` took, never delivered
        self.dropped: list[Record] = []

    def virtual_shard_of(self, record: Record) -> int:
        """The virtual shard an item's records go to: a hash of its key, salted by the seed."""
        keys = json.dumps(record["dynamodb"].get("Keys", {}), sort_keys=True)
        return zlib.crc32(f"{self.fidelity.seed}/{keys}".encode()) % self.shard_count

    def drop_next(self, match: RecordMatch | None = None) -> None:
        """Lose the next batch (of any virtual shard) holding a record `match` accepts (any batch
        when None). Calls add up: each one drops one batch."""
        with self._lock:
            self._drops.append(match or (lambda record: True))

    def _poll_shard(self, shard: _Shard) -> int:
        page = self._read_page(shard, GET_RECORDS_LIMIT)
        if page is None:
            return 0
        records, next_iterator = page
        delivered = self._deliver_page(records)
        self._advance(shard, _sequence_number(records[-1]), next_iterator)
        return delivered

    def _deliver_page(self, records: list[Record]) -> int:
        lanes: dict[int, list[Record]] = {}
        for record in records:
            lanes.setdefault(self.virtual_shard_of(record), []).append(record)
        logger.debug("%s: page of %d record(s) over shards %s", self.function_name, len(records),
                     {index: len(lane) for index, lane in sorted(lanes.items())})
        delivered: dict[int, int] = {}
        errors: list[BaseException] = []

        def deliver(index: int, lane: list[Record]) -> None:
            try:
                delivered[index] = self._deliver_lane(index, lane)
            except BaseException as error:  # raised again by the polling thread
                errors.append(error)

        threads = [
            threading.Thread(target=contextvars.copy_context().run, args=(deliver, index, lane),
                             name=f"{self.function_name}-shard-{index}", daemon=True)
            for index, lane in sorted(lanes.items())
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        return sum(delivered.values())

    def _deliver_lane(self, index: int, records: list[Record]) -> int:
        lane = self._lanes[index]
        delivered, start = 0, 0
        while start < len(records):
            size, replay = self._draw(lane.rng)
            batch = records[start : start + size]
            start += len(batch)
            if self._take_drop(batch):
                logger.debug("%s: shard %d dropped a batch of %d record(s)", self.function_name, index, len(batch))
                continue
            logger.debug("%s: shard %d batch of %d record(s)", self.function_name, index, len(batch))
            outcome = self._deliver_batch(lane, batch)
            delivered += outcome.delivered
            if replay and outcome.succeeded:
                logger.debug("%s: shard %d replays its batch of %d record(s)", self.function_name, index, len(batch))
                delivered += self._deliver_batch(lane, batch).delivered
        return delivered

    def _draw(self, rng: random.Random) -> tuple[int, bool]:
        size = rng.randint(1, self.largest_batch)
        return size, rng.random() < self.fidelity.replay_rate

    def _take_drop(self, batch: list[Record]) -> bool:
        with self._lock:
            for position, match in enumerate(self._drops):
                if any(match(record) for record in batch):
                    del self._drops[position]
                    self.dropped.extend(batch)
                    return True
        return False

    def _deliver_batch(self, lane: _Lane, batch: list[Record]) -> _Outcome:
        delivered, attempts, failing_at = 0, 0, ""
        while True:
            sequence_numbers = [_sequence_number(r) for r in batch]
            ok, response = lane._invoke(batch)
            delivered += len(batch)
            failed = failed_item_ids(response, sequence_numbers) if ok else None
            if failed == set():
                return _Outcome(delivered, succeeded=True)
            first_failed = 0 if failed is None else min(sequence_numbers.index(s) for s in failed)
            attempts = attempts + 1 if failing_at == sequence_numbers[first_failed] else 1
            failing_at, batch = sequence_numbers[first_failed], batch[first_failed:]
            if attempts > self.max_retries:
                self._give_up(batch)
                return _Outcome(delivered, succeeded=False)
