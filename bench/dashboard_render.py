"""How long the dashboard takes to show the page of a 1,000-node task, in headless Chromium.

Starts the local runtime (no agents), submits a `shell` task on `--nodes` targets (its runs
stay `pending`: a cell costs the same whatever its colour), signs a headless Chromium in and
opens the task page `--repeat` times (a hash navigation: the page stays loaded, the view is
built from scratch each time, as when a user clicks a row). The page shows a first screen
(the task, its events and the first 200 nodes) and then grows the grid a page of runs at a
time. For each opening it reports the time from the navigation to the frame drawn after the
first screen and after the whole grid, and what the page measured itself
(`window.__fleetrunTaskRender`: API reads, DOM work, the last build of the whole grid).
Printed next to the same API reads made from Python (the floor any client pays: on one
machine, moto's speed) and a 1,000 ms budget (a page that shows within a second feels
immediate).

    .venv/bin/python bench/dashboard_render.py [--nodes 1000] [--repeat 5] [--json]

Needs Debian's chromium and chromium-driver (`make test` installs them) and selenium
(requirements-dev.txt). Informational: never an assertion; exit 0 whatever the figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
# bench/requests.py would shadow the `requests` library: import from the repository root instead
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != REPO / "bench"]
sys.path.insert(0, str(REPO))

import requests  # noqa: E402

from bench.local_e2e import free_port, start_runtime, wait_healthy  # noqa: E402
from chalicelib.auth import mint_token  # noqa: E402
from fleetrun.client import Api  # noqa: E402
from tests.e2e import browser  # noqa: E402

SECRET = "local-dev-secret"
BUDGET_MS = 1000.0
warnings.filterwarnings("ignore", message=".*HMAC key.*")

#: navigate to the task page; resolve with the page's own figures and the times of the first
#: frame drawn after its first screen (task, events, first 200 nodes) and after the whole grid
_OPEN_TASK_PAGE = """
const [hash, done] = [arguments[0], arguments[arguments.length - 1]];
const view = document.getElementById("view");
const t0 = performance.now();
location.hash = hash;
const frame = (then) => requestAnimationFrame(() => requestAnimationFrame(then));
let firstFrame = null;
(function check() {
  if (firstFrame === null && view.dataset.rendered === "true") {
    firstFrame = -1;
    frame(() => { firstFrame = performance.now() - t0; check(); });
  } else if (firstFrame > 0 && view.dataset.complete === "true") {
    frame(() => done({...window.__fleetrunTaskRender, first_frame_ms: firstFrame,
                      complete_frame_ms: performance.now() - t0,
                      cells: document.querySelectorAll("#node-grid > i").length}));
  } else {
    setTimeout(check, 5);
  }
})();
"""


#: back to the (empty-filtered) task list, resolved once its table is there
_LEAVE = """
const done = arguments[arguments.length - 1];
location.hash = "#/tasks?status=discarded";
(function check() { document.getElementById("tasks") ? done(true) : setTimeout(check, 5); })();
"""


def create_task(api: Api, nodes: int) -> str:
    body = {"type": "shell", "name": f"bench {nodes} nodes", "parameters": {"command": ["true"]},
            "target_nodes": [f"bench-{i:05d}" for i in range(nodes)], "max_concurrency": nodes}
    task_id = str(api.post("/v1/tasks", body)["task_id"])
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        task = api.get(f"/v1/tasks/{task_id}")
        if task["dispatch"]["created_count"] + task["dispatch"]["skipped_count"] >= nodes:
            return task_id
        time.sleep(0.5)
    raise SystemExit(f"the task's {nodes} runs were not dispatched within 300 s")


def api_reads_ms(url: str, token: str, task_id: str) -> float:
    """The reads the page makes (task, every page of runs and events), sequentially from Python."""
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    started = time.perf_counter()
    session.get(f"{url}/v1/tasks/{task_id}").raise_for_status()
    for kind in ("nodes", "events"):
        cursor: str | None = None
        while True:
            params = {"limit": "200", **({"cursor": cursor} if cursor else {})}
            page = session.get(f"{url}/v1/tasks/{task_id}/{kind}", params=params)
            page.raise_for_status()
            cursor = page.json()["next_cursor"]
            if not cursor:
                break
    return (time.perf_counter() - started) * 1000


def measure(url: str, token: str, task_id: str, repeat: int) -> list[dict[str, Any]]:
    with browser.chromium() as driver:
        driver.set_script_timeout(120)
        driver.get(f"{url}/#/stats")
        driver.execute_script("localStorage.setItem('fleetrun.token', arguments[0])", token)
        driver.refresh()
        samples = []
        for _ in range(repeat + 1):  # the first opening warms the caches; not counted
            driver.execute_async_script(_LEAVE)
            samples.append(driver.execute_async_script(_OPEN_TASK_PAGE, f"#/tasks/{task_id}"))
        return samples[1:]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--url", help="measure against this running stack (e.g. `make run`) instead of a new one")
    parser.add_argument("--task-id", help="with --url: an existing task to open instead of a new one")
    args = parser.parse_args()
    missing = browser.available()
    if missing:
        print(f"cannot run: {missing}", file=sys.stderr)
        return 1
    if args.url:
        token = mint_token("bench", ["admin"], SECRET)
        task_id = args.task_id or create_task(Api(args.url, token, timeout=60), args.nodes)
        reads = [api_reads_ms(args.url, token, task_id) for _ in range(args.repeat)]
        return report(args, measure(args.url, token, task_id, args.repeat), reads)
    with tempfile.TemporaryDirectory(prefix="fleetrun-bench-") as tmp:
        port = free_port()
        runtime = start_runtime(Path(tmp), port, free_port())
        url = f"http://127.0.0.1:{port}"
        try:
            wait_healthy(url)
            token = mint_token("bench", ["admin"], SECRET)
            print(f"creating a {args.nodes}-node task …", file=sys.stderr, flush=True)
            task_id = create_task(Api(url, token, timeout=60), args.nodes)
            reads = [api_reads_ms(url, token, task_id) for _ in range(args.repeat)]
            print(f"opening its page {args.repeat} times in headless Chromium …", file=sys.stderr)
            samples = measure(url, token, task_id, args.repeat)
        finally:
            runtime.terminate()
            try:
                runtime.wait(60)
            except subprocess.TimeoutExpired:
                runtime.kill()
                runtime.wait()
    return report(args, samples, reads)


def report(args: argparse.Namespace, samples: list[dict[str, Any]], reads: list[float]) -> int:
    keys = ("ms", "fetch_ms", "dom_ms", "first_frame_ms", "complete_ms", "complete_frame_ms", "grid_dom_ms")
    median = {key: statistics.median(s[key] for s in samples) for key in keys}
    result = {
        "nodes": args.nodes, "cells": samples[0]["cells"], "events": samples[0]["events"], "repeat": args.repeat,
        "median_ms": {k: round(v, 1) for k, v in median.items()},
        "api_reads_from_python_median_ms": round(statistics.median(reads), 1),
        "budget_ms": BUDGET_MS,
    }
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"task page of a {args.nodes}-node task ({result['cells']} grid cells, {result['events']} events), "
          f"median of {args.repeat} openings in headless Chromium:")
    print(f"  navigation → first screen drawn (task, events, 200 nodes) {median['first_frame_ms']:8.1f} ms"
          f"   (budget {BUDGET_MS:.0f} ms)")
    print(f"    of which API reads (3 in parallel)                       {median['fetch_ms']:8.1f} ms")
    print(f"    of which building the DOM                                {median['dom_ms']:8.1f} ms")
    print(f"  navigation → whole grid drawn                              {median['complete_frame_ms']:8.1f} ms"
          f"   (the same reads from Python, one after the other: {result['api_reads_from_python_median_ms']:.1f} ms)")
    grid = f"of which building the grid of {result['cells']} cells"
    print(f"    {grid:<57}{median['grid_dom_ms']:8.1f} ms")
    paint = median["complete_frame_ms"] - median["complete_ms"]
    print(f"    {'of which style, layout and paint of the whole grid':<57}{paint:8.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
