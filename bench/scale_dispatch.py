"""The dispatch part of `bench/scale.py`: a task of many nodes dispatched through the dispatch
queue in chunks (services/dispatch.py), every dispatch-queue Lambda invocation timed and the runs
it created counted.

    from bench.scale_dispatch import dispatch_figures
    figures = dispatch_figures(fleet, nodes)   # nodes registered already

`longest_invocation_s` is wall time on this machine against in-process moto (about 600
requests/s, PITFALLS.md): compare it between designs, not with Lambda at 512 MB.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass
class InvocationMeter:
    """Per dispatch-queue invocation: seconds and node runs created."""

    seconds: list[float] = field(default_factory=list)
    runs_created: list[int] = field(default_factory=list)
    _current: int = 0

    def figures(self) -> dict[str, Any]:
        return {
            "max_runs_per_invocation": max(self.runs_created, default=0),
            "longest_invocation_s": round(max(self.seconds, default=0.0), 3),
            "invocations": len(self.seconds),
            "runs_created": sum(self.runs_created),
        }


@contextlib.contextmanager
def metered(fleet: Any) -> Iterator[InvocationMeter]:
    """Time each invocation of the fleet's dispatch-queue handler and count the runs it creates
    (every run a dispatch creates goes through `store.runs.create_missing`)."""
    from chalicelib.store import runs

    meter = InvocationMeter()
    handler: Callable[..., Any] = fleet.queue.handler
    create_missing = runs.create_missing

    def timed(*args: Any, **kwargs: Any) -> Any:
        meter._current = 0
        started = time.perf_counter()
        try:
            return handler(*args, **kwargs)
        finally:
            meter.seconds.append(time.perf_counter() - started)
            meter.runs_created.append(meter._current)

    def counted(*args: Any, **kwargs: Any) -> tuple[list[str], list[str]]:
        created, skipped = create_missing(*args, **kwargs)
        meter._current += len(created)
        return created, skipped

    fleet.queue.handler, runs.create_missing = timed, counted
    try:
        yield meter
    finally:
        fleet.queue.handler, runs.create_missing = handler, create_missing


def dispatch_figures(fleet: Any, nodes: list[str], *, who: str = "alice") -> dict[str, Any]:
    """Submit a `shell` task on `nodes` (registered already) and let the stream and the dispatch
    queue settle. Returns max_runs_per_invocation, longest_invocation_s, invocations,
    runs_created, dispatch_chunks, task_id and `ok` (the task runs, every node has exactly one
    run, the dispatch state is `done` with created_count == len(nodes))."""
    with metered(fleet) as meter:
        answer = fleet.submit({"type": "shell", "target_nodes": nodes, "parameters": {"command": ["true"]},
                               "max_concurrency": 100}, who=who)
        assert answer.status == 202, answer
        task_id = str(answer.body["task_id"])
        fleet.settle(rounds=10_000)
    task = fleet.task(task_id, who=who)
    from chalicelib.store import tasks

    stored = tasks.get(task_id)
    return {
        **meter.figures(),
        "dispatch_chunks": int(stored.dispatch_chunks),
        "task_id": task_id,
        "ok": task["status"] == "running" and task["dispatch"]["state"] == "done"
        and task["dispatch"]["created_count"] == len(nodes) and meter.figures()["runs_created"] == len(nodes),
    }


if __name__ == "__main__":  # a quick look: python bench/scale_dispatch.py [nodes]
    import json
    import sys

    from scale_common import bootstrap, note, strict_fleet

    bootstrap()
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    with strict_fleet() as fleet:
        names = [f"node-{i:05d}" for i in range(count)]
        note(f"registering {count} nodes")
        fleet.register(*names)
        note("dispatching")
        print(json.dumps(dispatch_figures(fleet, names)))
