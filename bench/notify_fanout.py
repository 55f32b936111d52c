"""What finding a task change's subscribers costs, next to scanning every subscription.

On moto in-process: S subscriptions exist (one by the task's owner, one by an admin, the rest by
S-2 other users, each listening to every event). One task status change (running → completed)
goes through the real stream consumer (`chalicelib.notify.fanout.consume`). The bench counts the
DynamoDB requests and the items they read, and the SQS messages queued, and prints them next to
the naive design: a Scan over every subscription item, filtered in code.

    .venv/bin/python bench/notify_fanout.py                 # S = 10, 1000, 5000
    .venv/bin/python bench/notify_fanout.py --sizes 100 20000

The indexed figures stay flat (2 queries, the matching items only) whatever S; the scan grows with S.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

# bench/ holds a `requests.py`: run as a script, it would shadow the `requests` package
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.harness import MOTO_ENV  # noqa: E402

EVENTS = ["task.completed", "task.failed", "task.partial_failure", "task.apply_pending", "task.retried",
          "task.cancelled"]


class Meter:
    """DynamoDB requests and the items they read, from the PynamoDB client's own events."""

    def __init__(self) -> None:
        self.requests: dict[str, int] = {}
        self.items_read = 0

    def __call__(self, http_response: Any, parsed: dict[str, Any], model: Any, **_: Any) -> None:
        self.requests[model.name] = self.requests.get(model.name, 0) + 1
        self.items_read += int(parsed.get("ScannedCount", parsed.get("Count", 0)) or 0)


def _change_record(owner: str) -> dict[str, Any]:
    def image(status: str) -> dict[str, Any]:
        return {
            "pk": {"S": "TASK#T1"}, "sk": {"S": "META"}, "task_id": {"S": "T1"}, "type": {"S": "shell"},
            "owner": {"S": owner}, "status": {"S": status}, "attempt": {"N": "1"}, "max_concurrency": {"N": "1"},
            "created_at": {"S": "2026-11-22T00:00:00.000Z"}, "updated_at": {"S": "2026-11-22T00:00:01.000Z"},
        }

    return {"eventName": "MODIFY", "dynamodb": {
        "SequenceNumber": "100", "Keys": {"pk": {"S": "TASK#T1"}, "sk": {"S": "META"}},
        "OldImage": image("running"), "NewImage": image("completed")}}


def measure(size: int) -> dict[str, Any]:
    from moto import mock_aws

    from chalicelib import aws, config, secrets
    from chalicelib.notify import fanout
    from chalicelib.services.aggregation import Record
    from chalicelib.store import models
    from chalicelib.store import subscriptions as store
    from fleetrun.local.provision import provision

    with mock_aws():
        config.reset(), aws.reset(), models.reset_connections()
        provisioned = provision()
        os.environ.update(provisioned.environment())
        config.reset(), aws.reset(), models.reset_connections()
        sealed = secrets.seal({"target": "https://hooks.example.com/x", "secret": "s" * 16})
        owners = ["alice", "root", *(f"user-{i}" for i in range(size - 2))]
        # the same items store.create writes, batched (moto copies the whole table per transaction)
        with models.SubscriptionItem.batch_write() as items, models.SubscriptionEventItem.batch_write() as index:
            for owner in owners:
                subscription = store.new_subscription(
                    owner=owner, scope="all" if owner == "root" else "own", channel="webhook",
                    target_display="https://hooks.example.com/x", sealed=sealed, secret_set=True, events=EVENTS,
                    created_at="2026-11-22T00:00:00.000Z")
                items.save(subscription)
                for item in store.index_items(subscription):
                    index.save(item)
        meter = Meter()
        for model in (models.SubscriptionItem, models.SubscriptionEventItem):  # a client per model
            model._get_connection().connection.client.meta.events.register("after-call.dynamodb", meter)
        sent: list[int] = []
        aws.client("sqs").meta.events.register(
            "after-call.sqs.SendMessageBatch", lambda parsed, **_: sent.append(len(parsed.get("Successful", []))))
        fanout.consume([Record(_change_record("alice"))])
        indexed = {"requests": dict(meter.requests), "items_read": meter.items_read, "queued": sum(sent)}
        meter.requests.clear()
        meter.items_read = 0
        matched = [s for s in models.SubscriptionItem.scan(models.SubscriptionItem.sk == "META")
                   if "task.completed" in s.events and (s.scope == "all" or s.owner == "alice")]
        scan = {"requests": dict(meter.requests), "items_read": meter.items_read, "matched": len(matched)}
    return {"subscriptions": size, "indexed": indexed, "scan": scan}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 1000, 5000])
    args = parser.parse_args()
    for key, value in MOTO_ENV.items():
        os.environ.setdefault(key, value)
    import logging

    logging.getLogger("fleetrun").setLevel(logging.ERROR)
    print(f"{'subscriptions':>13} | {'indexed: requests':<28} {'items read':>10} {'queued':>6} | "
          f"{'scan: requests':<20} {'items read':>10} {'matched':>7}")
    for size in args.sizes:
        result = measure(size)
        indexed, scan = result["indexed"], result["scan"]
        print(f"{size:>13} | {indexed['requests']!s:<28} {indexed['items_read']:>10} {indexed['queued']:>6} | "
              f"{scan['requests']!s:<20} {scan['items_read']:>10} {scan['matched']:>7}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
