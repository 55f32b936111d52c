"""One 10,000-node task on AWS's semantics: hot partitions, bounded invocations, bounded sweeps.

Run from the repository root:  .venv/bin/python bench/scale.py [--json] [--nodes N] [--rate R]

Scenario (moto in-process under the strict fidelity layer, the real `app.py` driven by
`tests.harness.Fleet`, as the integration tests run it; bench/scale_common.py)
  1. Register N nodes (default 10,000) through the service (not HTTP: registration is not what
     is measured) and open an admin WebSocket subscribed to every task (`"*"`), whose every
     message a recording `@connections` endpoint measures.
  2. Submit one `shell` task on all of them; the dispatch queue creates its runs in chunks
     (services/dispatch.py): each dispatch-queue invocation is timed and its runs counted
     (bench/scale_dispatch.py).
  3. Recount the dispatched task (every run waiting, its counters quiet) job by job, as the
     sweeper's `run_look` jobs do: the most runs and AWS requests of one job (bench/scale_recount.py).
  4. Run the task in waves of R node runs (default 1,000): claim, heartbeat, events, complete,
     then the stream and the queues settle; one wave is one modelled second. The fidelity
     layer's write meter gives each wave's writes per partition key; the task item's writes are
     read from the stream (bench/scale_partitions.py).
  5. The task must end `completed` with exact counts (node_counts and the statistics equal a
     recount), or the bench exits 1.
  6. Sweeper requests per sweep with nothing due, at 10 and at 1,000 active tasks, in a fresh
     table (bench/scale_sweeps.py), and the most AWS requests one statistics-reconcile step
     makes in a whole pass (bench/scale_reconcile.py).

What the figures are judged by (issue 17 / ARCHITECTURE.md invariant 9): no partition key over
300 writes/s at 1,000 node runs/s (a third of DynamoDB's 1,000 per partition); no invocation
creating more than 1,000 runs; no recount job reading more than one group of run partitions
(about 200 runs); a sweep costing the same at 10 and 1,000 active tasks; no
WebSocket message over 128 KiB (API Gateway's frame limit); the task item written a bounded
number of times per second whatever the node count. The figures are informational: the exit
status says only whether the scenario worked. `longest_invocation_s` is wall time against
in-process moto on this machine: compare designs with it, not Lambda.

With --json, exactly one JSON object is printed, on the last line; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

# the parts live next to this file; they are imported before `bootstrap` takes bench/ off the
# path again (where `requests.py` would shadow the package moto imports)
sys.path.insert(0, str(Path(__file__).resolve().parent))

import scale_dispatch
import scale_partitions
import scale_reconcile
import scale_recount
import scale_sweeps
from scale_common import bootstrap, note, strict_fleet

#: API Gateway's WebSocket frame limit, and the partition budget of invariant 9
FRAME_BYTES_MAX = 128 * 1024
PARTITION_WRITES_BUDGET = 300


def register(fleet: Any, names: list[str]) -> None:
    """Register the nodes through the service, 8 at a time, and give the fleet their tokens."""
    from chalicelib.services import nodes

    def one(name: str) -> tuple[str, str]:
        _, token = nodes.register(name, {}, 1)
        return name, token

    with ThreadPoolExecutor(8) as pool:
        fleet.node_tokens.update(pool.map(one, names))


class MessageSizes:
    """The largest message the `@connections` endpoint was posted, and how many."""

    def __init__(self, recorder: Any) -> None:
        self.largest = 0
        self.count = 0
        record = recorder._record

        def measuring(connection_id: str, data: bytes) -> bool:
            self.largest, self.count = max(self.largest, len(data)), self.count + 1
            return bool(record(connection_id, data))

        recorder._record = measuring


def exact(fleet: Any, task_id: str, nodes: int) -> bool:
    """The task completed with every node succeeded, its counts equal to a recount of its runs,
    and every statistics scope equal to a recount of the task items."""
    from collections import Counter

    from chalicelib.store import runs
    from tests.harness import assert_statistics_equal_recount

    task = fleet.task(task_id)
    if task["status"] != "completed" or task["node_counts"]["succeeded"] != nodes:
        note(f"task ended {task['status']} with node counts {task['node_counts']}")
        return False
    recounted = Counter(run.status for run in runs.iter_runs(task_id))
    if {k: v for k, v in task["node_counts"].items() if v} != dict(recounted):
        note(f"node counts {task['node_counts']} differ from a recount of the runs: {dict(recounted)}")
        return False
    try:
        assert_statistics_equal_recount()
    except AssertionError as error:
        note(f"statistics differ from a recount: {error}")
        return False
    return True


def run(nodes: int, rate: int, seed: int | None) -> dict[str, Any]:
    from chalicelib import config
    from tests.integration.sockets import Sockets
    from tests.ws_connections import RecordingConnections

    began = time.perf_counter()
    names = [f"node-{i:05d}" for i in range(nodes)]
    figures: dict[str, Any] = {"nodes": nodes, "runs_per_second_modelled": rate}
    with strict_fleet(seed) as fleet:
        note(f"registering {nodes} nodes")
        register(fleet, names)
        recorder = RecordingConnections().start()
        try:
            os.environ["FLEETRUN_WEBSOCKET_ENDPOINT"] = recorder.endpoint
            config.reset()
            sizes = MessageSizes(recorder)
            sockets = Sockets(fleet, recorder)
            sockets.open("root", ("admin",), subscribe="*")
            note(f"one task on {nodes} nodes, in waves of {rate} node runs ({time.perf_counter() - began:.0f}s)")
            recounted: list[scale_recount.RecountFigures] = []

            def recount_it(task_id: str) -> None:
                note(f"a recount of the dispatched task, job by job ({time.perf_counter() - began:.0f}s)")
                recounted.append(scale_recount.recount_in_jobs(task_id))

            with scale_dispatch.metered(fleet) as dispatch:
                rates = scale_partitions.partition_rates(fleet, names, rate, progress=True,
                                                         before_waves=recount_it)
            figures.update(dispatch.figures())
            task_id = rates.task_id
            figures["completed_exact"] = rates.completed and exact(fleet, task_id, nodes)
        finally:
            recorder.stop()
        figures.update({
            "peak_partition_writes_per_s": rates.peak_partition_writes_per_s,
            "peak_partition_units_per_s": rates.peak_partition_units_per_s,
            "hottest_partition": rates.hottest_partition,
            "run_shards": rates.run_shards,
            "task_item_writes_per_s": rates.task_item_writes_per_s,
            "task_item_writes_per_s_mean": rates.task_item_writes_per_s_mean,
            "max_websocket_message_bytes": sizes.largest,
            "websocket_messages": sizes.count,
        })
        if recounted:
            figures.update({f"recount_{name}": value for name, value in asdict(recounted[0]).items()})
        note(f"reconcile steps ({time.perf_counter() - began:.0f}s)")
        figures["reconcile_requests_per_invocation"] = scale_reconcile.reconcile_requests_per_invocation(fleet, 1)
    with strict_fleet(seed) as fleet:
        for active in (10, 1000):
            note(f"one sweep at {active} active tasks ({time.perf_counter() - began:.0f}s)")
            figures[f"sweeper_requests_per_sweep_{active}"] = scale_sweeps.sweeper_requests_per_sweep(fleet, active)
    figures["seconds"] = round(time.perf_counter() - began, 1)
    return figures


def as_table(f: dict[str, Any]) -> str:
    budget = PARTITION_WRITES_BUDGET
    rows = [
        ("peak writes/s on one partition key", f"{f['peak_partition_writes_per_s']}", f"≤ {budget} (1/3 of 1,000)"),
        ("peak write units/s on one key", f"{f['peak_partition_units_per_s']}", "≤ 1,000 WCU/s per partition"),
        ("hottest key", str(f["hottest_partition"]), f"runs over {f['run_shards']} partition(s)"),
        ("task-item writes/s (max, mean)", f"{f['task_item_writes_per_s']}, {f['task_item_writes_per_s_mean']}",
         "bounded whatever the node count"),
        ("max runs created in one invocation", f"{f['max_runs_per_invocation']}", "≤ 1,000"),
        ("longest dispatch invocation", f"{f['longest_invocation_s']} s", "Lambda limit 900 s"),
        ("dispatch invocations", f"{f['invocations']}", ""),
        ("sweeper requests/sweep, 10 active", f"{f['sweeper_requests_per_sweep_10']}", "equal to 1,000 active"),
        ("sweeper requests/sweep, 1,000 active", f"{f['sweeper_requests_per_sweep_1000']}", ""),
        ("reconcile requests per invocation", f"{f['reconcile_requests_per_invocation']}", "bounded by its chunk"),
        ("recount: most runs read by one job", f"{f.get('recount_max_runs_per_invocation', '-')}",
         f"of {f.get('recount_runs_read', '-')} in {f.get('recount_jobs', '-')} jobs"),
        ("recount: most requests of one job", f"{f.get('recount_max_requests_per_invocation', '-')}",
         "bounded by its chunk"),
        ("largest WebSocket message", f"{f['max_websocket_message_bytes']:,} B", f"≤ {FRAME_BYTES_MAX:,} B"),
        ("task completed, counts exact", "yes" if f["completed_exact"] else "NO", ""),
    ]
    width = max(len(r[0]) for r in rows)
    lines = [f"fleetrun scale bench: one task on {f['nodes']:,} nodes at a modelled "
             f"{f['runs_per_second_modelled']:,} node runs/s, strict fidelity ({f['seconds']} s)", ""]
    lines += [f"  {name:<{width}}  {value:>14}  {judged}" for name, value, judged in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="exactly one JSON object on the last line")
    parser.add_argument("--nodes", type=int, default=10_000, help="nodes of the task (default 10,000)")
    parser.add_argument("--rate", type=int, default=1000, help="modelled node runs per second (default 1,000)")
    parser.add_argument("--seed", type=int, default=None, help="fidelity seed (default: random, printed)")
    args = parser.parse_args(argv)
    bootstrap()
    warnings.filterwarnings("ignore", message="The HMAC key is")
    # the app's log lines and EMF metrics go to stdout, which carries only the figures
    with open(os.devnull, "w") as discard, contextlib.redirect_stdout(discard):
        figures = run(args.nodes, args.rate, args.seed)
    print(json.dumps(figures) if args.json else as_table(figures))
    return 0 if figures["completed_exact"] else 1


if __name__ == "__main__":
    sys.exit(main())
