"""Writes per partition key of one large task at a modelled rate of node runs per second.

The task runs in waves of `runs_per_second` node runs (claim → heartbeat → events → complete,
then the stream and the queues settle): one wave is one modelled second. The fidelity layer's
write meter (`fleetrun/local/fidelity/dynamo.py`) is read per wave; the task item's writes are
counted from the table's stream (one record per write of `TASK#<id>`/`META`).

    python bench/scale_partitions.py --nodes 2000 [--rate 1000] [--fidelity strict|off] [--waves N]
                                     [--grow-from N] [--json]

With `--grow-from N` the task is created on the first N nodes and grown to all of them by one
`POST /v1/tasks/{id}/dispatch` (a release reaching the nodes added since), as a task that
outgrew the partitions it was created with.

`partition_rates(fleet, nodes)` is the reusable part (bench/scale.py, tests): it takes a
tests.harness.Fleet whose table is metered (strict fidelity, or `meter().enable()`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
STEPS = ("deploy", "verify")


@dataclass
class PartitionRates:
    nodes: int
    runs_per_second: int
    run_shards: int
    waves: int
    #: the most writes (and write units) one partition key took in one wave (= modelled second)
    peak_partition_writes_per_s: int = 0
    peak_partition_units_per_s: int = 0
    hottest_partition: str | None = None
    #: the busiest key's writes per wave, for the task's own partition `TASK#<id>`
    task_partition_writes_per_s: int = 0
    #: writes of the task item itself per wave (most, and mean over the waves)
    task_item_writes_per_s: int = 0
    task_item_writes_per_s_mean: float = 0.0
    #: the dispatch (run creation) is not a node-run wave: its busiest key, over the whole dispatch
    dispatch_peak_partition_writes: int = 0
    #: created on this many nodes, then grown to all by a dispatch request (None: created on all)
    grown_from: int | None = None
    completed: bool = False
    task_id: str = ""
    seconds: float = 0.0
    per_wave: list[dict[str, Any]] = field(default_factory=list)


def partition_rates(fleet: Any, nodes: list[str], runs_per_second: int = 1000, progress: bool = False,
                    max_waves: int | None = None, grow_from: int | None = None,
                    before_waves: Callable[[str], None] | None = None) -> PartitionRates:
    """Run one task on `nodes` in waves of `runs_per_second` node runs and measure each wave's
    writes per partition key (see the module docstring). Registers the nodes it does not know.
    With `max_waves`, stops after that many waves (the task is left running: `completed` False).
    With `grow_from`, the task is created on that many nodes and grown to all by a dispatch request.
    `before_waves(task_id)` is called once the task is dispatched and settled (running, every run
    waiting, its counters quiet), before the first wave's measure starts."""
    from chalicelib.store import runs
    from fleetrun.local.fidelity.dynamo import meter

    started = time.perf_counter()
    fleet.register(*[node for node in nodes if node not in fleet.node_tokens])
    fleet.settle(rounds=10_000)
    metered = meter()
    was_enabled = metered.enabled
    metered.enable()
    try:
        metered.reset()
        created_on = nodes[:grow_from] if grow_from else nodes
        answer = fleet.submit({"type": "shell", "name": "partition rates", "target_nodes": created_on,
                               "parameters": {"command": ["true"]}, "max_concurrency": len(nodes)})
        if answer.status != 202:
            raise RuntimeError(f"submit answered {answer}")
        task_id = str(answer.body["task_id"])
        fleet.settle(rounds=10_000)
        if grow_from:
            grown = fleet.user("POST", f"/v1/tasks/{task_id}/dispatch", {"target_nodes": nodes[grow_from:]})
            if grown.status not in (200, 202):
                raise RuntimeError(f"dispatch answered {grown}")
            fleet.settle(rounds=10_000)
        shards = runs.run_shards(task_id)
        result = PartitionRates(len(nodes), runs_per_second, shards, 0, task_id=task_id, grown_from=grow_from)
        result.dispatch_peak_partition_writes = max(metered.writes_by_partition().values(), default=0)
        if before_waves is not None:
            before_waves(task_id)
        stream = _TaskItemWrites(fleet.provisioned.table_name, task_id)
        for start in range(0, len(nodes), runs_per_second):
            if max_waves is not None and result.waves >= max_waves:
                break
            metered.reset()
            stream.mark()
            for node in nodes[start:start + runs_per_second]:
                _run_one(fleet, node)
            fleet.settle(rounds=10_000)
            writes, units = metered.writes_by_partition(), metered.units_by_partition()
            _note_wave(result, task_id, writes, units, stream.since_mark())
            if progress:
                print(f"  wave {result.waves}: {min(start + runs_per_second, len(nodes))}/{len(nodes)} node runs,"
                      f" hottest {result.per_wave[-1]['hottest']} {result.per_wave[-1]['writes']} writes"
                      f" ({time.perf_counter() - started:.0f}s)", file=sys.stderr, flush=True)
        task = fleet.task(task_id)
        result.completed = task["status"] == "completed" and task["node_counts"]["succeeded"] == len(nodes)
    finally:
        metered.enable(was_enabled)
    waves = result.per_wave
    result.task_item_writes_per_s_mean = round(sum(w["task_item_writes"] for w in waves) / max(1, len(waves)), 1)
    result.seconds = round(time.perf_counter() - started, 1)
    return result


def _note_wave(result: PartitionRates, task_id: str, writes: dict[str, int], units: dict[str, int],
               task_item_writes: int) -> None:
    hottest = max(writes, key=lambda pk: writes[pk], default=None)
    wave = {"writes": writes.get(hottest, 0) if hottest else 0, "hottest": hottest,
            "units": max(units.values(), default=0), "task_partition": writes.get(f"TASK#{task_id}", 0),
            "task_item_writes": task_item_writes, "partitions": len(writes)}
    result.per_wave.append(wave)
    result.waves += 1
    if wave["writes"] > result.peak_partition_writes_per_s:
        result.peak_partition_writes_per_s, result.hottest_partition = wave["writes"], hottest
    result.peak_partition_units_per_s = max(result.peak_partition_units_per_s, wave["units"])
    result.task_partition_writes_per_s = max(result.task_partition_writes_per_s, wave["task_partition"])
    result.task_item_writes_per_s = max(result.task_item_writes_per_s, task_item_writes)


def _run_one(fleet: Any, node: str) -> None:
    """One node run as the agent does it (fleetrun/agent/batching.py): a claim, then one report
    carrying the heartbeat of the first step with its event, and the completion with the last."""
    claimed = fleet.claim(node, 1)
    if len(claimed) != 1:
        raise RuntimeError(f"{node} claimed {len(claimed)} runs, expected 1")
    run = claimed[0]
    first, last = ({"type": "success", "step": step, "message": f"{step} done", "progress": progress}
                   for step, progress in zip(STEPS, (50, 100), strict=True))
    answer = fleet.agent(node, f"/v1/agents/{node}/report", {
        "heartbeats": [{"run_id": run["run_id"], "attempt": run["attempt"], "progress": 50, "step": STEPS[0],
                        "events": [first]}],
        "completions": [{"run_id": run["run_id"], "attempt": run["attempt"], "status": "succeeded",
                         "error_message": None, "events": [last]}],
    })
    statuses = [item["status"] for part in ("heartbeats", "completions") for item in answer.body.get(part, [])] \
        if answer.status == 200 else []
    if statuses != [200, 200]:
        raise RuntimeError(f"{node}: report answered {answer}")


class _TaskItemWrites:
    """Writes of the task item, from moto's stream shard (in-process moto: one record per write)."""

    def __init__(self, table_name: str, task_id: str) -> None:
        from moto.backends import get_backend

        account = next(iter(get_backend("dynamodb")))
        region = os.environ.get("AWS_REGION", "us-east-1")
        self._table = get_backend("dynamodb")[account][region].tables[table_name]
        self._key = {"pk": {"S": f"TASK#{task_id}"}, "sk": {"S": "META"}}
        self._position = 0

    def mark(self) -> None:
        self._position = len(self._table.stream_shard.items)

    def since_mark(self) -> int:
        items = self._table.stream_shard.items[self._position:]
        return sum(1 for item in items if item.to_json()["dynamodb"]["Keys"] == self._key)


# === standalone ====================================================================================
@contextmanager
def metered_fleet(strict: bool = True) -> Iterator[Any]:
    """A fresh in-process moto with the fidelity layer (strict: as tests/conftest.py builds it;
    else only its write meter, as bench/requests.py runs), and a Fleet on it."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from scale_common import bootstrap, strict_fleet  # type: ignore[import-not-found]

    bootstrap()
    if not strict:
        os.environ["FLEETRUN_FIDELITY"] = "off"
    with strict_fleet() as fleet:
        yield fleet


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=2000)
    parser.add_argument("--rate", type=int, default=1000, help="node runs per modelled second (one wave)")
    parser.add_argument("--fidelity", choices=("strict", "off"), default="strict",
                        help="off: plain moto with the write meter on (faster; no throttles, conflicts, shards)")
    parser.add_argument("--waves", type=int, default=None, help="measure only this many waves (task left running)")
    parser.add_argument("--grow-from", type=int, default=None,
                        help="create the task on this many nodes, then grow it to all by a dispatch request")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    # the app's log lines and EMF metrics go to stdout, which carries only the figures
    with open(os.devnull, "w") as discard, contextlib.redirect_stdout(discard), \
            metered_fleet(args.fidelity == "strict") as fleet:
        result = partition_rates(fleet, [f"node-{i:05d}" for i in range(args.nodes)], args.rate, progress=True,
                                 max_waves=args.waves, grow_from=args.grow_from)
    figures = asdict(result)
    waves = figures.pop("per_wave")
    if args.json:
        print(json.dumps(figures))
    else:
        for name, value in figures.items():
            print(f"{name:36} {value}")
        print("waves (hottest key writes, task partition writes, task item writes):")
        print("  " + ", ".join(f"{w['writes']}/{w['task_partition']}/{w['task_item_writes']}" for w in waves))
        print("partitions per wave:", dict(Counter(w["partitions"] for w in waves)))
    return 0 if result.completed or (args.waves is not None and result.waves == args.waves) else 1


if __name__ == "__main__":
    sys.exit(main())
