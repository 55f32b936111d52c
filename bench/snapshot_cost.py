"""What one `GET /v1/monitoring/snapshot` costs with 10 nodes and with 5,000: it must not grow.

Run from the repository root:  .venv/bin/python bench/snapshot_cost.py [--json] [--nodes 10,5000]

Scenario (moto in-process, the real `app.py` driven by `tests.harness.Fleet`, as bench/requests.py)
  Register the first number of nodes through `chalicelib.services.nodes.register` (no HTTP, not
  counted), deliver their stream records to the real stream handler (the snapshot's consumer
  counts them), put a task on two of them so there is something running, then count two reads
  through the route as a viewer: the first after a copy older than 10 s (it refreshes the
  copied task and run figures from the statistics counters), the second right after (served
  from the cached item). Grow to the next number of nodes and count again. The answer must
  count every node, or the bench exits 1.

How it counts
  bench/requests.py's meter (botocore hooks on every session): DynamoDB requests by operation,
  read units priced from the items read (GetItem: per started 4 KB of the stored item, halved
  when eventually consistent; Query: the items evaluated), write units of the refresh.

It prints both sizes side by side and "equal: yes/no" for each kind of read; it asserts nothing.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _load_requests_bench() -> ModuleType:
    """bench/requests.py as a module (its file name would shadow the `requests` package)."""
    spec = importlib.util.spec_from_file_location("fleetrun_bench_requests", ROOT / "bench" / "requests.py")
    if spec is None or spec.loader is None:
        raise ImportError("bench/requests.py is missing")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


BENCH = _load_requests_bench()


@dataclass
class Reading:
    nodes: int
    read: str
    requests: dict[str, int]
    read_units: float
    write_units: float

    def cost(self) -> tuple[tuple[tuple[str, int], ...], float, float]:
        return tuple(sorted(self.requests.items())), self.read_units, self.write_units


def register_nodes(fleet: Any, start: int, stop: int) -> None:
    from chalicelib.services import nodes

    for i in range(start, stop):
        node, node_token = nodes.register(f"gpu-{i:05d}", {"rack": str(i % 40)}, 8)
        if i < 2:
            fleet.node_tokens[node.node_id] = node_token
        if (i + 1) % 1000 == 0:
            BENCH._drain_stream(fleet)
            BENCH._note(f"  {i + 1:,} nodes registered")
    BENCH._drain_stream(fleet)


def start_work(fleet: Any) -> None:
    """A task on the first two nodes, one run claimed: figures that are not all zero."""
    answer = fleet.submit({"type": "shell", "target_nodes": ["gpu-00000", "gpu-00001"],
                           "parameters": {"command": ["nvidia-smi"]}})
    if answer.status != 202:
        raise BENCH.ScenarioBroke(f"submit answered {answer}")
    fleet.settle(rounds=100)
    if len(fleet.claim("gpu-00000")) != 1:
        raise BENCH.ScenarioBroke("gpu-00000 could not claim its run")
    fleet.settle(rounds=100)


def age_the_copy() -> None:
    """Make the cached copy 11 s old, as if no one had read the snapshot for a while."""
    from chalicelib import aws, config
    from chalicelib.store import snapshot

    aws.client("dynamodb").update_item(
        TableName=config.table_name(), Key={"pk": {"S": snapshot.PK}, "sk": {"S": snapshot.META}},
        UpdateExpression="SET as_of = as_of - :age", ExpressionAttributeValues={":age": {"N": "11"}},
    )


def counted_read(fleet: Any, nodes: int, label: str, viewer: str) -> Reading:
    BENCH.METER.reset()
    with BENCH.METER.counting():
        answer = fleet.call("GET", "/v1/monitoring/snapshot", bearer=viewer)
    if answer.status != 200 or answer.body["total_nodes"] != nodes:
        raise BENCH.ScenarioBroke(f"the snapshot answered {answer} for {nodes} nodes")
    tally = BENCH.METER.tally
    ddb = {op: n for (_, service, op), n in tally.requests.items() if service == "dynamodb"}
    return Reading(nodes, label, ddb, sum(tally.read_units.values()), sum(tally.write_units.values()))


def run(sizes: list[int]) -> list[Reading]:
    from tests.harness import token

    readings: list[Reading] = []
    registered = 0
    with BENCH.moto_fleet() as fleet:
        viewer = token("vera", ("viewer",))
        for size in sizes:
            started = time.perf_counter()
            register_nodes(fleet, registered, size)
            if not registered:
                start_work(fleet)
            registered = size
            BENCH._note(f"{size:,} nodes ready in {time.perf_counter() - started:.1f} s")
            fleet.call("GET", "/v1/monitoring/snapshot", bearer=viewer)  # a copy exists
            age_the_copy()
            readings.append(counted_read(fleet, size, "stale copy (refresh)", viewer))
            readings.append(counted_read(fleet, size, "fresh copy (cached)", viewer))
    if BENCH.METER.errors:
        raise BENCH.ScenarioBroke("meter errors: " + "; ".join(BENCH.METER.errors[:3]))
    return readings


def table(readings: list[Reading]) -> str:
    lines = [f"{'read':<22} {'nodes':>7}  {'DynamoDB requests':<44} {'read units':>10} {'write units':>11}"]
    for r in readings:
        ops = ", ".join(f"{op} {n}" for op, n in sorted(r.requests.items()))
        lines.append(f"{r.read:<22} {r.nodes:>7,}  {ops:<44} {r.read_units:>10.1f} {r.write_units:>11.1f}")
    lines.append("")
    for label in dict.fromkeys(r.read for r in readings):
        costs = [r.cost() for r in readings if r.read == label]
        sizes = " vs ".join(f"{r.nodes:,}" for r in readings if r.read == label)
        lines.append(f"{label}: {sizes} nodes, equal: {'yes' if len(set(costs)) == 1 else 'no'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--nodes", default="10,5000", help="node counts to read at, ascending (default 10,5000)")
    parser.add_argument("--json", action="store_true", help="print the readings as JSON")
    args = parser.parse_args(argv)
    sizes = sorted(int(n) for n in args.nodes.split(","))
    BENCH.bootstrap()
    # the app's INFO lines and metrics would bury the figures
    os.environ.update(POWERTOOLS_LOG_LEVEL="WARNING", POWERTOOLS_METRICS_DISABLED="true")
    warnings.filterwarnings("ignore", module="jwt")  # the tests' short HS256 secret
    try:
        readings = run(sizes)
    except BENCH.ScenarioBroke as broke:
        print(f"the scenario broke: {broke}", file=sys.stderr)
        return 1
    print(json.dumps([asdict(r) for r in readings], indent=2) if args.json else table(readings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
