"""What one `target_selector` resolution costs: DynamoDB requests and read units, next to reading
every node (the node list's index partition, what a resolution without the label index does).

Run from the repository root:  .venv/bin/python bench/selector_cost.py [--json] [--nodes 10 10000]

Scenario (moto in-process)
  For each N: register N nodes through the service's own write (`inventory.create`: the node item
  and one label index item per label, in one transaction), labels {"pool": "cdn", "region": "eu"
  for every 10th node else "us"}, and 10 more nodes {"pool": "small"}; then count one resolution
  of {"pool": "cdn", "region": "eu"} (`services/selectors.resolve`: reads the N items of the
  pool=cdn partition, keeps the eu nodes), one of {"pool": "small"} (10 items, whatever N), and
  one read of every node item (`inventory.iter_nodes`, the node list), what a resolution without
  the index would read. Registration is counted separately.

How it counts
  `pynamodb.connection.base.Connection.dispatch` is wrapped: every DynamoDB request by operation.
  Read units follow DynamoDB's published rules, computed from the items in each answer (moto
  reports constants): item size = attribute-name bytes + value bytes (strings UTF-8, numbers ~1
  byte per 2 digits + 1, maps 3 bytes + 1 per entry + contents, booleans 1 byte); a Query costs
  its summed item size per started 4 KB, at least 1 unit, halved when eventually consistent (a
  GSI read always is). Write units of a registration: 2 per started KB of each item of the
  transaction. moto ignores DynamoDB's 1 MB page limit; the resolution pages 1,000 items a Query
  itself, far below it (a label item here is ~90 bytes), so the request count is the real one.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# the repository instead of bench/ (whose requests.py would shadow the requests package)
sys.path[0] = str(Path(__file__).resolve().parents[1])

from tests.harness import MOTO_ENV  # noqa: E402 (after the path)

SELECTOR = {"pool": "cdn", "region": "eu"}
SMALL = {"pool": "small"}


@dataclass
class Meter:
    requests: Counter[str] = field(default_factory=Counter)
    read_units: float = 0.0
    write_units: float = 0.0

    def reset(self) -> None:
        self.requests.clear()
        self.read_units = self.write_units = 0.0


METER = Meter()


def item_size(value: dict[str, Any]) -> int:
    """Bytes of one DynamoDB-JSON value (`{"S": "x"}`) by DynamoDB's size rules."""
    (kind, inner), = value.items()
    if kind == "S":
        return len(inner.encode())
    if kind == "N":
        return len(inner.lstrip("-").replace(".", "")) // 2 + 1
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "M":
        return 3 + sum(1 + len(k.encode()) + item_size(v) for k, v in inner.items())
    if kind == "L":
        return 3 + sum(1 + item_size(v) for v in inner)
    return len(str(inner))


def size_of(item: dict[str, Any]) -> int:
    return sum(len(name.encode()) + item_size(value) for name, value in item.items())


def _metered(dispatch: Any) -> Any:
    def counted(self: Any, operation: str, kwargs: dict[str, Any]) -> dict[str, Any]:
        answer: dict[str, Any] = dispatch(self, operation, kwargs)
        METER.requests[operation] += 1
        if operation == "Query":
            units = max(1, math.ceil(sum(size_of(i) for i in answer.get("Items", [])) / 4096))
            consistent = kwargs.get("ConsistentRead") and "IndexName" not in kwargs
            METER.read_units += units if consistent else units / 2
        if operation == "TransactWriteItems":
            for entry in kwargs["TransactItems"]:
                written = next(iter(entry.values()))
                METER.write_units += 2 * max(1, math.ceil(size_of(written.get("Item") or written["Key"]) / 1024))
        return answer

    return counted


@contextlib.contextmanager
def moto_table() -> Iterator[None]:
    from moto import mock_aws
    from pynamodb.connection.base import Connection

    from chalicelib import aws, config
    from chalicelib.store import models
    from fleetrun.local import moto_fixes
    from fleetrun.local.provision import provision

    os.environ.update(MOTO_ENV)
    moto_fixes.apply()
    original = Connection.dispatch
    Connection.dispatch = _metered(original)  # type: ignore[method-assign]
    try:
        with mock_aws():
            config.reset(), aws.reset(), models.reset_connections()
            os.environ.update(provision().environment())
            config.reset(), aws.reset(), models.reset_connections()
            yield
    finally:
        Connection.dispatch = original  # type: ignore[method-assign]


def measure(nodes: int) -> dict[str, Any]:
    from chalicelib.store import inventory

    with moto_table():
        METER.reset()
        started = time.monotonic()
        for i in range(nodes):
            labels = {"pool": "cdn", "region": "eu" if i % 10 == 0 else "us"}
            inventory.create(f"edge-{i:05d}", labels, 1, "hash", "2026-12-06T00:00:00Z")
        registration = {"requests": dict(METER.requests), "write_units_per_node": METER.write_units / nodes,
                        "seconds": round(time.monotonic() - started, 1)}
        for i in range(10):
            inventory.create(f"small-{i:02d}", SMALL, 1, "hash", "2026-12-06T00:00:00Z")
        resolution, small = resolved(SELECTOR), resolved(SMALL)
        METER.reset()
        every = sum(1 for _ in inventory.iter_nodes())
        all_nodes = {"requests": dict(METER.requests), "read_units": METER.read_units, "read": every}
    return {"nodes": nodes, "resolution": resolution, "small_pool": small, "every_node": all_nodes,
            "registration": registration}


def resolved(selector: dict[str, str]) -> dict[str, Any]:
    from chalicelib.services import selectors

    METER.reset()
    matched = len(selectors.resolve(selector))
    return {"requests": dict(METER.requests), "read_units": METER.read_units, "matched": matched}


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        f"one resolution (label index): {json.dumps(SELECTOR)} over N pool=cdn nodes, {json.dumps(SMALL)} over",
        "10 nodes in the same fleet; next to reading every node item (no index); registration per node",
        "",
        f"{'N':>6} | {'matched':>7} | {'pool=cdn resolution':>22} | {'pool=small (10)':>20} | {'every node':>22} | "
        f"{'registration':>15}",
    ]
    for r in results:
        res, small, every, reg = r["resolution"], r["small_pool"], r["every_node"], r["registration"]
        per_node = reg["requests"].get("TransactWriteItems", 0) / r["nodes"]
        lines.append(
            f"{r['nodes']:>6} | {res['matched']:>7} | {_cost(res):>22} | {_cost(small):>20} | {_cost(every):>22} | "
            f"{per_node:.0f} tx, {reg['write_units_per_node']:.0f} WCU")
    return "\n".join(lines)


def _cost(found: dict[str, Any]) -> str:
    return f"{_requests(found['requests'])}, {found['read_units']:.1f} RCU"


def _requests(requests: dict[str, int]) -> str:
    return ", ".join(f"{count} {op}" for op, count in sorted(requests.items())) or "none"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    parser.add_argument("--nodes", type=int, nargs="+", default=[10, 10_000], help="fleet sizes (default 10 10000)")
    args = parser.parse_args(argv)
    results = [measure(n) for n in args.nodes]
    print(json.dumps({"selector": SELECTOR, "results": results}, indent=2) if args.json else table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
