"""What a heartbeat costs in DynamoDB write units, next to the design it replaced.

Run from the repository root:  .venv/bin/python bench/heartbeat_units.py [--json] [--leases N]

A heartbeat extends the run's lease and leaves the run's `lease` entry in the sweeper's due index
where the claim put it; the sweeper moves the entry to the current expiry when it comes due and
finds the run still held (domain/due.py, `rearm_due`). The design it replaced re-keyed the entry
on every heartbeat: an index delete and put (2 write units) on top of the run item's write.

Scenario (moto in-process, the real `app.py` via `tests.harness.Fleet`, priced by bench/requests.py's
meter): one run claimed by its node; then, on a service clock that moves only a second at a time,
its agent heartbeats every third of a lease (fleetrun/agent/lease.py) for N leases (default 5)
while the sweeper passes every second. Measured twice in the same process: with the entry
left by heartbeats (now), and with the previous rule patched back in (every heartbeat re-keys it).
Printed: the write units of one heartbeat, and the write units per lease period of a heartbeating
run (heartbeats + the sweeper's re-arms), by writer.
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
from collections.abc import Iterator
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


@contextlib.contextmanager
def _entry_per_heartbeat() -> Iterator[None]:
    """The previous rule: a heartbeat or a reservation extension re-keys the `lease` entry."""
    from chalicelib.domain import due, run_transitions
    from chalicelib.domain.writes import CLEAR

    current = run_transitions._due_entry

    def previous(run: Any, transition: Any, fields: dict[str, Any]) -> dict[str, Any]:
        if transition.action in ("heartbeat", "extend_reservation"):
            for name in ("lease_expires_at", "reservation_expires_at"):
                expiry = fields.get(name)
                if expiry is not None and expiry is not CLEAR:
                    due_pk, due_sk = due.lapse_due_keys(run.task_id, run.node, float(expiry))
                    return {"due_pk": due_pk, "due_sk": due_sk}
        return current(run, transition, fields)

    run_transitions._due_entry = previous
    try:
        yield
    finally:
        run_transitions._due_entry = current


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
            since, heartbeats, rearmed = 0.0, 1, 0
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
                    rearmed += report.leases_rearmed
            over = _units_by(meter.METER.tally)
            return {
                "lease_seconds": lease, "heartbeat_write_units": sum(one.values()), "heartbeat_by_target": one,
                "leases": leases, "heartbeats": heartbeats - 1, "rearms": rearmed,
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
        with _entry_per_heartbeat():
            before = measure(meter, args.leases)
    if meter.METER.errors:
        print(f"the meter failed: {meter.METER.errors[:5]}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"now": now, "entry_per_heartbeat": before}))
        return 0
    for name, figures in (("entry left by heartbeats, re-armed by the sweeper (now)", now),
                          ("entry re-keyed by every heartbeat (before)", before)):
        print(f"{name}: lease {figures['lease_seconds']} s, {figures['heartbeats']} heartbeats and "
              f"{figures['rearms']} re-arms over {figures['leases']} leases")
        print(f"  one heartbeat: {figures['heartbeat_write_units']:g} WU {figures['heartbeat_by_target']}")
        print(f"  per lease period: {figures['write_units_per_lease_total']:g} WU {figures['write_units_per_lease']}")
    print(f"({time.perf_counter() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
