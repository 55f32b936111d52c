"""Deliver DynamoDB stream records to a Lambda handler as Lambda's stream event source mapping does."""

from __future__ import annotations

import base64
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from chalicelib.resources import STREAM_BATCH_SIZE
from fleetrun.local.pump_base import Handler, Pump, Record, failed_item_ids

logger = logging.getLogger("fleetrun.local.pumps")


def _wire_values(value: Any) -> Any:
    """Attribute values as Lambda sends them: botocore decodes B/BS to bytes, Lambda keeps base64."""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, dict):
        return {k: _wire_values(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_wire_values(v) for v in value]
    return value


def lambda_stream_record(record: Mapping[str, Any], stream_arn: str) -> Record:
    """One `GetRecords` record as a record of Lambda's DynamoDB event."""
    dynamodb: dict[str, Any] = _wire_values(dict(record["dynamodb"]))
    created = dynamodb.get("ApproximateCreationDateTime")
    if isinstance(created, datetime):  # botocore parses the epoch; Lambda sends whole seconds
        created = created if created.tzinfo else created.replace(tzinfo=UTC)
        dynamodb["ApproximateCreationDateTime"] = int(created.timestamp())
    return {**record, "dynamodb": dynamodb, "eventSourceARN": stream_arn}


@dataclass
class _Shard:
    shard_id: str
    parent_id: str | None
    #: where to (re)open an iterator when `iterator` is None: (ShardIteratorType, SequenceNumber)
    position: tuple[str, str | None]
    iterator: str | None = None
    failing_at: str | None = None
    attempts: int = 0
    finished: bool = False


class StreamPump(Pump):
    """Deliver a DynamoDB stream's records per shard, in order, retrying a failed batch.

    A batch that raises is retried from its first record, one that reports failures from the first
    failed record; after `max_retries` retries its remaining records go to `on_give_up` (default:
    logged) and are skipped, like records that expire on Lambda. Children shards wait for their parent.
    """

    def __init__(
        self,
        streams_client: Any,
        stream_arn: str,
        handler: Handler,
        *,
        batch_size: int = STREAM_BATCH_SIZE,
        max_retries: int = 3,
        on_give_up: Callable[[list[Record]], None] | None = None,
        starting_position: str = "TRIM_HORIZON",
        function_name: str = "fleetrun-stream-consumer",
        timeout_seconds: float = 60.0,
        positions: Mapping[str, Sequence[str | None]] | None = None,
        on_advance: Callable[[dict[str, list[str | None]]], None] | None = None,
        describe_seconds: float = 0.0,
    ) -> None:
        self.client, self.stream_arn, self.handler = streams_client, stream_arn, handler
        self.batch_size, self.max_retries, self.on_give_up = batch_size, max_retries, on_give_up
        self.starting_position = starting_position  # of the shards found by the first DescribeStream
        self.function_name, self.timeout_seconds = function_name, timeout_seconds
        self.region: str = streams_client.meta.region_name
        self._shards: dict[str, _Shard] = {}
        #: where a previous run of this pump stopped, by shard (`on_advance` reported them)
        self._resume = {shard: (str(kind), sequence) for shard, (kind, sequence) in (positions or {}).items()}
        self.on_advance = on_advance
        #: the shard list is read again after this long, or at once when a shard has ended
        self.describe_seconds = describe_seconds
        self._described_at = -math.inf
        self._finished_seen = 0  # shards known to have ended at the last DescribeStream

    def poll_once(self) -> int:
        """Read every ready shard once and deliver what it has; the number of records delivered."""
        finished = sum(shard.finished for shard in self._shards.values())
        if time.monotonic() - self._described_at >= self.describe_seconds or finished != self._finished_seen:
            self._describe()
        delivered = 0
        for shard in list(self._shards.values()):
            parent = self._shards.get(shard.parent_id or "")
            if not shard.finished and (parent is None or parent.finished):
                delivered += self._poll_shard(shard)
        return delivered

    def _describe(self) -> None:
        start = self.starting_position if math.isinf(self._described_at) else "TRIM_HORIZON"
        request: dict[str, Any] = {"StreamArn": self.stream_arn}
        while True:
            description = self.client.describe_stream(**request)["StreamDescription"]
            for shard in description["Shards"]:
                if shard["ShardId"] not in self._shards:
                    position = self._resume.get(shard["ShardId"], (start, None))
                    self._shards[shard["ShardId"]] = _Shard(shard["ShardId"], shard.get("ParentShardId"), position)
            if not description.get("LastEvaluatedShardId"):
                break
            request["ExclusiveStartShardId"] = description["LastEvaluatedShardId"]
        self._described_at = time.monotonic()
        self._finished_seen = sum(shard.finished for shard in self._shards.values())

    def _read_page(self, shard: _Shard, limit: int) -> tuple[list[Record], str | None] | None:
        """The records (as Lambda sends them) of one `GetRecords` page of `shard` from its iterator
        (opened from `position` when None) and the next iterator; None when there was nothing to
        deliver (an empty page moves the iterator on, or ends the shard)."""
        if shard.iterator is None:
            kind, sequence_number = shard.position
            request = {"StreamArn": self.stream_arn, "ShardId": shard.shard_id, "ShardIteratorType": kind}
            if sequence_number is not None:
                request["SequenceNumber"] = sequence_number
            shard.iterator = self.client.get_shard_iterator(**request)["ShardIterator"]
        try:
            page: dict[str, Any] = self.client.get_records(ShardIterator=shard.iterator, Limit=limit)
        except self.client.exceptions.ExpiredIteratorException:
            shard.iterator = None  # reopened from `position` next round
            return None
        next_iterator: str | None = page.get("NextShardIterator")
        records = [lambda_stream_record(r, self.stream_arn) for r in page["Records"]]
        if not records:
            shard.iterator, shard.finished = next_iterator, next_iterator is None
            return None
        return records, next_iterator

    def _poll_shard(self, shard: _Shard) -> int:
        page = self._read_page(shard, self.batch_size)
        if page is None:
            return 0
        records, next_iterator = page
        sequence_numbers = [r["dynamodb"]["SequenceNumber"] for r in records]
        ok, response = self._invoke(records)
        failed = failed_item_ids(response, sequence_numbers) if ok else None
        if failed == set():
            self._advance(shard, sequence_numbers[-1], next_iterator)
            return len(records)
        first_failed = 0 if failed is None else min(sequence_numbers.index(s) for s in failed)
        sequence_number = sequence_numbers[first_failed]
        shard.attempts = shard.attempts + 1 if shard.failing_at == sequence_number else 1
        shard.failing_at = sequence_number
        if shard.attempts <= self.max_retries:
            shard.iterator, shard.position = None, ("AT_SEQUENCE_NUMBER", sequence_number)
        else:
            self._give_up(records[first_failed:])
            self._advance(shard, sequence_numbers[-1], next_iterator)
        return len(records)

    def _advance(self, shard: _Shard, last_sequence_number: str, next_iterator: str | None) -> None:
        shard.iterator, shard.position = next_iterator, ("AFTER_SEQUENCE_NUMBER", last_sequence_number)
        shard.failing_at, shard.attempts, shard.finished = None, 0, next_iterator is None
        if self.on_advance is not None:
            self.on_advance({s.shard_id: list(s.position) for s in self._shards.values()})

    def _give_up(self, records: list[Record]) -> None:
        first, last = records[0]["dynamodb"]["SequenceNumber"], records[-1]["dynamodb"]["SequenceNumber"]
        logger.error("%s: giving up on %d stream record(s) %s..%s", self.function_name, len(records), first, last)
        if self.on_give_up is not None:
            try:
                self.on_give_up(records)
            except Exception:
                logger.exception("%s: on_give_up failed", self.function_name)
