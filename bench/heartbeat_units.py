"""What a heartbeat costs in DynamoDB write units, next to the designs it replaced.

Run from the repository root:  .venv/bin/python bench/heartbeat_units.py [--json] [--leases N]

A heartbeat extends the run's lease and writes nothing for the sweeper: the claim's stream
record had the run watched (services/lease_watch.py) the second its lease lapses; the sweeper
reads the watch when it comes due, finds the run still held, and watches it again at the
current expiry, one watch item per second for all the runs it finds held
(domain/due.py). The designs it replaced kept a `lease` entry per run in the `due-index`:
re-keyed by every heartbeat (an index delete and put, 2 write units, on top of the run item's
write), then, from 2026-12-05, left by heartbeats and re-keyed by the sweeper once a lease
(the run item 1 + the index 2 write units a lease period).

Scenario (moto in-process, the real `app.py` via `tests.harness.Fleet`, priced by bench/requests.py's
meter): one run claimed by its node; then, on a service clock that moves only a second at a time,
its agent heartbeats every third of a lease (fleetrun/agent/lease.py) for N leases (default 5)
while the sweeper passes every second. Printed: the write units of one heartbeat, and the write
units per lease period of a heartbeating run (heartbeats + the sweeper's watches), by writer,
next to the figures the earlier designs measured with this script (2026-12-06, lease 60 s).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import sys
import time
import warnings
from collections import defaultdict
from pathlib import Path
from types import ModuleType
from typing import Any


def _load_meter() -> ModuleType:
    """bench/requests.py under another name (its own file name shadows the `requests` package)."""
    spec = importlib.util.spec_from_file_location("bench_requests", Path(__file__).resolve().parent / "requests.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_requests"] = module
    spec.loader.exec_module(module)
    return module


#: measured with this script at 143203d (2026-12-06, lease 60 s, 5 leases), per-run index entries
EARLIER = {
    "entry re-keyed by every heartbeat": {"heartbeat_write_units": 3, "run_write_units_per_lease": 9},
    "entry re-keyed by the sweeper once a lease": {"heartbeat_write_units": 1, "run_write_units_per_lease": 6},
}


def measure(meter: ModuleType, leases: int) -> dict[str, Any]:
    from chalicelib import clock, config
    from chalicelib.services import sweeper

    offset = [0.0]
    real_now = clock.now_epoch
    started = real_now()
    # the service's clock stands still but for the test's steps (the scenario's real time is not service time)
    clock.now_epoch = lambda: started + offset[0]  # type: ignore[assignment]
    try:
        with meter.moto_fleet() as fleet:
            fleet.started({"type": "shell", "target_nodes": ["n-1"], "parameters": {"command": ["true"]}})
            [run] = fleet.claim("n-1")
            fleet.settle()
            lease = config.lease_seconds()
            heartbeat_every = lease / 3
            body = {"attempt": run["attempt"]}
            route = f"/v1/runs/{run['run_id']}/heartbeat"
            # one heartbeat a third of a lease after the claim (an expiry in another second)
            offset[0] += heartbeat_every
            meter.METER.reset()
            with meter.METER.counting():
                answer = fleet.agent("n-1", route, body)
            assert answer.status == 200, answer
            one = _units_by(meter.METER.tally)
            meter.METER.reset()
            since, heartbeats, watched = 0.0, 1, 0
            with meter.METER.counting():
                for _ in range(int(leases * lease)):
                    offset[0] += 1.0
                    since += 1.0
                    if since >= heartbeat_every:
                        answer = fleet.agent("n-1", route, body)
                        assert answer.status == 200, answer
                        since, heartbeats = 0.0, heartbeats + 1
                    with meter.METER.acting("sweeper"):
                        report = sweeper.sweep()
                    assert report.requeued_runs == 0, "the run was released while it heartbeat"
                    watched += report.leases_rearmed
            over = _units_by(meter.METER.tally)
            return {
                "lease_seconds": lease, "heartbeat_write_units": sum(one.values()), "heartbeat_by_target": one,
                "leases": leases, "heartbeats": heartbeats - 1, "watched_again": watched,
                "write_units_per_lease": {k: round(v / leases, 3) for k, v in over.items()},
                "write_units_per_lease_total": round(sum(over.values()) / leases, 3),
            }
    finally:
        clock.now_epoch = real_now  # type: ignore[assignment]


def _units_by(tally: Any) -> dict[str, float]:
    """Write units by writer, item kind and target (the table or an index)."""
    found: defaultdict[str, float] = defaultdict(float)
    for (caller, _op, kind, target), units in tally.write_units.items():
        found[f"{caller} {kind} {target}"] += units
    return dict(sorted(found.items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the tables")
    parser.add_argument("--leases", type=int, default=5, help="lease periods of heartbeats (default 5)")
    args = parser.parse_args(argv)
    meter = _load_meter()
    meter.bootstrap()
    warnings.filterwarnings("ignore", message="The HMAC key is")
    started = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):
        now = measure(meter, args.leases)
    if meter.METER.errors:
        print(f"the meter failed: {meter.METER.errors[:5]}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"now": now, "earlier": EARLIER}))
        return 0
    print(f"lease watches (now): lease {now['lease_seconds']} s, {now['heartbeats']} heartbeats, the run "
          f"watched again {now['watched_again']} times over {now['leases']} leases")
    print(f"  one heartbeat: {now['heartbeat_write_units']:g} WU {now['heartbeat_by_target']}")
    print(f"  per lease period: {now['write_units_per_lease_total']:g} WU {now['write_units_per_lease']}")
    run_writes = sum(v for k, v in now["write_units_per_lease"].items() if k.endswith(" run table")
                     or (" run " in k and "index" in k))
    print(f"  of which the run item and its index entries: {run_writes:g} WU")
    for name, figures in EARLIER.items():
        print(f"{name} (earlier): one heartbeat {figures['heartbeat_write_units']} WU, the run item and its"
              f" index entries per lease {figures['run_write_units_per_lease']} WU")
    print(f"({time.perf_counter() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
