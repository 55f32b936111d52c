"""The sharded stream pump delivers moto's stream as DynamoDB Streams on AWS do (moto in-process)."""

from __future__ import annotations

import threading
from collections import defaultdict
from typing import Any

import boto3
import pytest

from fleetrun.local.fidelity import OFF, STRICT, Fidelity, current, install
from fleetrun.local.fidelity.streams import ShardedStreamPump
from fleetrun.local.provision import Provisioned
from fleetrun.local.pumps import StreamPump
from tests.harness import Fleet
from tests.integration.test_pumps import FakeStreams

Batch = list[dict[str, Any]]


def strict(seed: int | None = None, **rates: Any) -> Fidelity:
    """Stream settings on the seed the `aws` fixture installed (FLEETRUN_FIDELITY_SEED replays it)."""
    settings: dict[str, Any] = {"shards": 4, "max_batch": 10, "replay_rate": 0.0, **rates}
    return Fidelity(mode=STRICT, seed=current().seed if seed is None else seed, **settings)


class Recorder:
    """A handler that keeps each batch it is given (calls come from several threads at once)."""

    def __init__(self, answer: Any = None) -> None:
        self.batches: list[Batch] = []
        self.answer = answer
        self._lock = threading.Lock()

    def __call__(self, event: dict[str, Any], context: Any) -> Any:
        with self._lock:
            self.batches.append(list(event["Records"]))
        return self.answer(event["Records"]) if callable(self.answer) else None

    def records(self) -> Batch:
        return [record for batch in self.batches for record in batch]


def pump_for(aws: Provisioned, handler: Any, fidelity: Fidelity, **options: Any) -> ShardedStreamPump:
    return ShardedStreamPump(boto3.client("dynamodbstreams"), aws.stream_arn, handler, fidelity=fidelity, **options)


def write(aws: Provisioned, *keys: str, times: int = 1) -> None:
    """`times` writes to each item of `keys`, item after item, round after round."""
    ddb = boto3.client("dynamodb")
    for version in range(times):
        for key in keys:
            ddb.put_item(TableName=aws.table_name,
                         Item={"pk": {"S": f"TASK#{key}"}, "sk": {"S": "META"}, "n": {"N": str(version)}})


def item(record: dict[str, Any]) -> str:
    return str(record["dynamodb"]["Keys"]["pk"]["S"]).removeprefix("TASK#")


def version(record: dict[str, Any]) -> int:
    return int(record["dynamodb"]["NewImage"]["n"]["N"])


def seq(record: dict[str, Any]) -> int:
    return int(record["dynamodb"]["SequenceNumber"])


def by_shard(pump: ShardedStreamPump, batches: list[Batch]) -> dict[int, list[list[int]]]:
    """The batches each virtual shard delivered, in its order, as sequence numbers."""
    lanes: dict[int, list[list[int]]] = defaultdict(list)
    for batch in batches:
        shards = {pump.virtual_shard_of(record) for record in batch}
        assert len(shards) == 1, "a batch holds records of one virtual shard"
        lanes[shards.pop()].append([seq(record) for record in batch])
    return dict(lanes)


ITEMS = [f"item-{i}" for i in range(12)]


def test_records_of_one_item_keep_their_order(aws):
    # GIVEN twelve items written five times each, round after round
    write(aws, *ITEMS, times=5)
    handler = Recorder()
    # WHEN the sharded pump drains the stream
    assert pump_for(aws, handler, strict()).drain() == 60
    # THEN each item's versions arrive once each, oldest first
    versions: dict[str, list[int]] = defaultdict(list)
    for record in handler.records():
        versions[item(record)].append(version(record))
    assert versions == {key: [0, 1, 2, 3, 4] for key in ITEMS}


def test_items_are_spread_over_virtual_shards_delivered_concurrently_out_of_write_order(aws):
    # GIVEN forty items, and a handler that holds each call until four calls are in flight at once
    keys = [f"item-{i}" for i in range(40)]
    write(aws, *keys)
    in_flight, most_in_flight, four_at_once = 0, 0, threading.Event()
    lock = threading.Lock()
    entered: list[Batch] = []

    def handler(event: dict[str, Any], context: Any) -> None:
        nonlocal in_flight, most_in_flight
        with lock:
            entered.append(event["Records"])
            in_flight += 1
            most_in_flight = max(most_in_flight, in_flight)
            if in_flight >= 4:
                four_at_once.set()
        four_at_once.wait(5)
        with lock:
            in_flight -= 1

    pump = pump_for(aws, handler, strict())
    # WHEN the pump drains the stream
    assert pump.drain() == 40
    # THEN records went to four virtual shards, whose batches were in the handler at the same time
    assert len(by_shard(pump, entered)) == 4
    assert most_in_flight >= 4
    # AND some record arrived before one written earlier
    delivered = [seq(record) for batch in entered for record in batch]
    assert sorted(delivered) != delivered


def test_batch_sizes_vary_up_to_the_fidelity_and_the_pump_limits(aws):
    # GIVEN sixty records
    write(aws, *ITEMS, times=5)
    # WHEN pumps with max_batch 10, and with max_batch 10 but batch_size 3, drain the stream
    wide, narrow = Recorder(), Recorder()
    pump_for(aws, wide, strict()).drain()
    pump_for(aws, narrow, strict(), batch_size=3).drain()
    # THEN batch sizes vary, within the smaller limit
    wide_sizes = [len(batch) for batch in wide.batches]
    narrow_sizes = [len(batch) for batch in narrow.batches]
    assert len(set(wide_sizes)) > 2
    assert max(wide_sizes) <= 10
    assert len(set(narrow_sizes)) > 1
    assert max(narrow_sizes) <= 3
    assert sum(wide_sizes) == sum(narrow_sizes) == 60


def test_with_replay_rate_one_every_batch_is_delivered_twice(aws):
    # GIVEN sixty records and a pump that replays every successful batch
    write(aws, *ITEMS, times=5)
    handler = Recorder()
    pump = pump_for(aws, handler, strict(replay_rate=1.0))
    # WHEN it drains the stream
    assert pump.drain() == 120
    # THEN on each virtual shard every batch comes twice in a row, and each record once per pair
    lanes = by_shard(pump, handler.batches)
    for batches in lanes.values():
        assert batches[0::2] == batches[1::2]
    firsts = sorted(s for batches in lanes.values() for batch in batches[0::2] for s in batch)
    assert len(firsts) == len(set(firsts)) == 60


def test_reported_batch_item_failure_redelivers_the_rest_of_the_batch_from_that_record(aws):
    # GIVEN one item written eight times (all on one virtual shard), and a handler that reports
    # version 3 as failed the first time it sees it
    write(aws, "one", times=8)
    seen: set[int] = set()

    def fail_at_version_3(records: Batch) -> dict[str, Any] | None:
        versions = [version(r) for r in records]
        first_time = 3 in versions and 3 not in seen
        seen.update(versions)
        if not first_time:
            return None
        failed = records[versions.index(3):]
        return {"batchItemFailures": [{"itemIdentifier": r["dynamodb"]["SequenceNumber"]} for r in failed]}

    handler = Recorder(fail_at_version_3)
    pump = pump_for(aws, handler, strict(max_batch=8))
    # WHEN the pump drains the stream
    pump.drain()
    # THEN the delivery after the failing one is that batch from version 3 on
    versions = [[version(r) for r in batch] for batch in handler.batches]
    failing = next(i for i, batch in enumerate(versions) if 3 in batch)
    assert versions[failing + 1] == versions[failing][versions[failing].index(3):]
    # AND every version arrived, in order, once plus the redelivered ones
    assert [v for batch in versions[: failing + 1] + versions[failing + 2 :] for v in batch] == list(range(8))


def test_a_batch_that_keeps_failing_is_given_up_after_max_retries_and_the_rest_continues(aws):
    # GIVEN one item written four times, and a handler that always raises on version 2
    write(aws, "one", times=4)

    def raise_at_version_2(records: Batch) -> None:
        if 2 in [version(r) for r in records]:
            raise RuntimeError("always")

    given_up: list[Batch] = []
    handler = Recorder(raise_at_version_2)
    pump = pump_for(aws, handler, strict(max_batch=1), max_retries=2, on_give_up=given_up.append)
    # WHEN the pump drains the stream
    assert pump.drain() == 6
    # THEN version 2 was tried three times, handed to on_give_up, and version 3 still came
    assert [[version(r) for r in batch] for batch in handler.batches] == [[0], [1], [2], [2], [2], [3]]
    assert [[version(r) for r in batch] for batch in given_up] == [[2]]


def test_a_dropped_batch_is_never_delivered_and_is_counted(aws):
    # GIVEN twelve items, and a pump told to drop the batch holding item-5
    write(aws, *ITEMS)
    handler = Recorder()
    pump = pump_for(aws, handler, strict())
    pump.drop_next(lambda record: item(record) == "item-5")
    # WHEN it drains the stream, and again after more writes
    delivered = pump.drain()
    write(aws, "item-99")
    delivered += pump.drain()
    # THEN item-5 never arrived, the records of its batch are counted as dropped, the rest came once
    received = [item(record) for record in handler.records()]
    assert "item-5" not in received
    assert "item-5" in [item(record) for record in pump.dropped]
    assert sorted(received + [item(record) for record in pump.dropped]) == sorted([*ITEMS, "item-99"])
    assert delivered == len(received) == 13 - len(pump.dropped)


def test_the_same_seed_cuts_and_replays_the_same_batches(aws):
    # GIVEN sixty records, read by two pumps with the same seed and a replay rate of one half
    write(aws, *ITEMS, times=5)
    first, second, other = Recorder(), Recorder(), Recorder()
    seed = current().seed
    first_pump = pump_for(aws, first, strict(seed, replay_rate=0.5))
    second_pump = pump_for(aws, second, strict(seed, replay_rate=0.5))
    # WHEN each drains the stream from its start
    assert first_pump.drain() == second_pump.drain() >= 60
    # THEN every virtual shard delivered the same batches, replays included
    assert by_shard(first_pump, first.batches) == by_shard(second_pump, second.batches)
    # AND another seed chooses otherwise
    other_pump = pump_for(aws, other, strict(seed + 1, replay_rate=0.5))
    other_pump.drain()
    assert by_shard(other_pump, other.batches) != by_shard(first_pump, first.batches)


def test_the_shard_position_moves_only_after_every_virtual_shard_finished_its_page(aws):
    # GIVEN forty records, and a pump that reports its position
    write(aws, *[f"item-{i}" for i in range(40)])
    handler = Recorder()
    delivered_at_advance: list[int] = []
    reported: list[dict[str, list[str | None]]] = []

    def on_advance(positions: dict[str, list[str | None]]) -> None:
        delivered_at_advance.append(len(handler.records()))
        reported.append(positions)

    pump = pump_for(aws, handler, strict(), on_advance=on_advance)
    # WHEN it drains the stream (one page: GetRecords returns up to 1000 records)
    assert pump.drain() == 40
    # THEN the position moved once, after all forty were delivered, to the last record
    assert delivered_at_advance == [40]
    last = str(max(seq(record) for record in handler.records()))
    assert [kind_and_sequence for positions in reported for kind_and_sequence in positions.values()] == [
        ["AFTER_SEQUENCE_NUMBER", last]
    ]
    # AND a pump resumed from there delivers nothing old, and what is new
    resumed = Recorder()
    again = pump_for(aws, resumed, strict(), positions=reported[-1])
    assert again.drain() == 0
    write(aws, "late")
    assert again.drain() == 1


def test_a_pump_resumed_from_a_position_reported_before_a_page_was_finished_delivers_it_again(aws):
    # GIVEN a pump whose handler dies (like a killed runtime) in the middle of its first page
    write(aws, *ITEMS)
    reported: list[dict[str, list[str | None]]] = []

    class Killed(BaseException):
        pass

    def dies(event: dict[str, Any], context: Any) -> None:
        raise Killed

    pump = pump_for(aws, dies, strict(), on_advance=reported.append)
    with pytest.raises(Killed):
        pump.poll_once()
    # WHEN a new pump starts where the first reported it was (nowhere yet)
    handler = Recorder()
    assert reported == []
    # THEN it delivers every record of that page
    assert pump_for(aws, handler, strict()).drain() == 12
    assert sorted(item(record) for record in handler.records()) == sorted(ITEMS)


def test_child_shards_are_read_after_their_parent_is_finished():
    # GIVEN a stream whose shard splits after one record was read; the parent has two records unread
    streams = FakeStreams()
    streams.add_shard("parent")
    streams.write("parent", "p1")
    handler = Recorder()
    pump = ShardedStreamPump(streams, "arn:stream", handler, fidelity=strict(seed=1))
    assert pump.poll_once() == 1
    streams.write("parent", "p2")
    streams.write("parent", "p3")
    streams.shards["parent"]["closed"] = True
    streams.add_shard("child", parent="parent")
    streams.write("child", "c1")
    # WHEN the pump drains the stream
    pump.drain()
    # THEN the child's records come after all of the parent's
    assert [record["eventID"] for record in handler.records()] == ["p1", "p2", "p3", "c1"]


@pytest.mark.parametrize(("mode", "pump_class"), [(STRICT, ShardedStreamPump), (OFF, StreamPump)])
def test_the_test_fleet_reads_the_stream_through_the_sharded_pump_when_fidelity_is_strict(aws, mode, pump_class):
    previous = install(Fidelity(mode=mode, seed=current().seed))
    try:
        assert type(Fleet(aws).stream) is pump_class
    finally:
        install(previous)
