"""Real-time latency in the local runtime: how long after a write its subscribers learn of it.

Measurements (each a function in MEASUREMENTS; run all, or some with `--only NAME`):

- `push`: the time from a task change's write to the WebSocket message that carries it. A
  task is created through the API on a node with no agent (it stays `running`, nothing else
  writes to it); a client subscribes to it over the runtime's gateway; then the bench writes
  N changes to the task item, one every `--spacing` seconds, each a new `stage` with its
  `updated_at` (what the stream aggregator writes when progress moves), straight into the
  runtime's moto DynamoDB. Latency of change i = arrival of the first task message whose
  stage is change i or a later one (the stream coalesces a batch into one message per task)
  minus the moment the write of change i was acknowledged. Compared with the target (p95 under
  500 ms locally, API.md "within a second") and with what polling once a second gives a
  client (uniform wait over the interval plus one GET: p50 ~0.5 s, p95 ~0.95 s).

- `dashboard`: the time to render the dashboard's task page of a `--nodes` (1,000) node task in
  headless Chromium, median of `--repeat` openings: to the first screen (the task, its events,
  the first 200 nodes) and to the whole grid, next to the same API reads made from Python and a
  1,000 ms budget. The scenario and the page's own figures are `bench/dashboard_render.py`'s
  (run that alone for the breakdown, or against a running stack with `--url`); needs Debian's
  chromium and chromium-driver.

Each measurement is a function `(stack, args) -> Figures` in MEASUREMENTS; `Stack` starts and
stops the runtime and offers the API, a WebSocket subscription and a direct DynamoDB client.

    .venv/bin/python bench/push_latency.py [--changes 500] [--spacing 0.05] [--nodes 1000] [--repeat 5]
        [--only push|dashboard] [--json]

Informational: prints the figures, never asserts them. Exit status 1 only when the scenario
broke (the runtime did not start, a change never arrived).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
# bench/requests.py would shadow the `requests` library: import from the repository root instead
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != REPO / "bench"]
sys.path.insert(0, str(REPO))

import boto3  # noqa: E402
import requests  # noqa: E402
from websockets.sync.client import ClientConnection, connect  # noqa: E402

from chalicelib import clock  # noqa: E402
from chalicelib.auth import mint_token  # noqa: E402
from fleetrun.client import Api  # noqa: E402

SECRET = "local-dev-secret"
warnings.filterwarnings("ignore", message=".*HMAC key.*")  # the documented local secret is short
TARGET_P95_SECONDS = 0.5
#: a client polling GET /v1/tasks/{id} once a second waits U(0, 1) s plus the request
POLL_INTERVAL_SECONDS = 1.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered) + 0.5) - 1))]


@dataclass
class Figures:
    """One measurement's result: named numbers, and lines that say what they compare with."""

    name: str
    values: dict[str, Any] = field(default_factory=dict)
    compared: list[str] = field(default_factory=list)


class Stack:
    """The local runtime as a subprocess on free ports, no demo agents."""

    def __init__(self) -> None:
        self.data_dir = Path(tempfile.mkdtemp(prefix="fleetrun-bench-"))
        self.api_port, self.ws_port, self.moto_port = free_port(), free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.api_port}"
        self.token = mint_token("admin", ["admin"], SECRET)
        self.api = Api(self.url, self.token, timeout=30)
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Stack:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FLEETRUN_", "AWS_", "POWERTOOLS_"))}
        env.update(FLEETRUN_PORT=str(self.api_port), FLEETRUN_WS_PORT=str(self.ws_port),
                   FLEETRUN_MOTO_PORT=str(self.moto_port), FLEETRUN_DEMO_AGENTS="0",
                   FLEETRUN_DATA_DIR=str(self.data_dir), FLEETRUN_RATE_LIMIT="100000", FLEETRUN_SWEEP_SECONDS="30")
        log_file = (self.data_dir / "runtime.log").open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from fleetrun.local.runtime import up; raise SystemExit(up())"],
            env=env, stdout=log_file, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True,
        )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the runtime exited; see {self.data_dir / 'runtime.log'}")
            try:
                if requests.get(f"{self.url}/v1/health", timeout=1).ok:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"the runtime did not start; see {self.data_dir / 'runtime.log'}")

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    @contextmanager
    def subscribe(self, topic: str) -> Iterator[ClientConnection]:
        url = self.api.get("/v1/health")["websocket_url"]
        with connect(f"{url}/?token={self.token}", open_timeout=10, max_size=2**20) as socket_:
            socket_.send(json.dumps({"action": "subscribe", "task_id": topic}))
            while json.loads(socket_.recv(timeout=10))["type"] != "subscribed":
                pass
            yield socket_

    def dynamodb(self) -> Any:
        return boto3.client("dynamodb", endpoint_url=f"http://127.0.0.1:{self.moto_port}", region_name="us-east-1",
                            aws_access_key_id="local", aws_secret_access_key="local")


# --- push ---------------------------------------------------------------------------------
def push(stack: Stack, args: argparse.Namespace) -> Figures:
    task = stack.api.post("/v1/tasks", {"type": "shell", "target_nodes": ["bench-nobody"],
                                        "parameters": {"command": ["true"]}})
    task_id = task["task_id"]
    ddb = stack.dynamodb()
    written: dict[int, float] = {}
    arrived: dict[int, float] = {}
    messages = 0
    with stack.subscribe(task_id) as subscription:
        _quiet(subscription, 2.0)  # creation and dispatch pushes are not measured
        done = threading.Event()

        def receive() -> None:
            nonlocal messages
            while not done.is_set():
                try:
                    message = json.loads(subscription.recv(timeout=0.5))
                except TimeoutError:
                    continue
                now = time.monotonic()
                stage = message.get("task", {}).get("stage") or ""
                if message.get("type") == "task" and stage.startswith("bench-"):
                    messages += 1
                    arrived.setdefault(int(stage.removeprefix("bench-")), now)

        reader = threading.Thread(target=receive, daemon=True)
        reader.start()
        log(f"push: {args.changes} changes, one every {args.spacing} s ...")
        for i in range(1, args.changes + 1):
            started = time.monotonic()
            ddb.update_item(
                TableName="fleetrun", Key={"pk": {"S": f"TASK#{task_id}"}, "sk": {"S": "META"}},
                UpdateExpression="SET #stage = :stage, updated_at = :now",
                ExpressionAttributeNames={"#stage": "stage"},
                ExpressionAttributeValues={":stage": {"S": f"bench-{i}"}, ":now": {"S": clock.now_iso()}},
            )
            written[i] = time.monotonic()
            time.sleep(max(0.0, args.spacing - (time.monotonic() - started)))
        deadline = time.monotonic() + 30
        while (not arrived or max(arrived) < args.changes) and time.monotonic() < deadline:
            time.sleep(0.1)
        done.set()
        reader.join(5)
    if not arrived or max(arrived) < args.changes:
        raise RuntimeError(f"the last change never arrived (latest: {max(arrived, default=0)})")
    latencies = []
    for i, at in written.items():
        delivered = min(t for j, t in arrived.items() if j >= i)
        latencies.append(delivered - at)
    p50, p95 = percentile(latencies, 50), percentile(latencies, 95)
    figures = Figures("push", {
        "changes": len(written),
        "messages": messages,
        "p50_ms": round(p50 * 1000, 1),
        "p95_ms": round(p95 * 1000, 1),
        "max_ms": round(max(latencies) * 1000, 1),
        "mean_ms": round(statistics.fmean(latencies) * 1000, 1),
        "writes_per_second": round(len(written) / (max(written.values()) - min(written.values()) or 1), 1),
    })
    figures.compared = [
        f"target: p95 under {TARGET_P95_SECONDS * 1000:.0f} ms locally -> "
        f"{'met' if p95 < TARGET_P95_SECONDS else 'NOT met'} ({p95 * 1000:.0f} ms)",
        f"polling once a second instead: p50 ~{POLL_INTERVAL_SECONDS * 500:.0f} ms, "
        f"p95 ~{POLL_INTERVAL_SECONDS * 950:.0f} ms plus a GET, and one GET per client per second",
        f"coalescing: {messages} task messages for {len(written)} changes "
        "(one per task per stream batch)",
    ]
    return figures


def _quiet(subscription: ClientConnection, seconds: float) -> None:
    """Read until nothing arrives for `seconds`."""
    while True:
        try:
            subscription.recv(timeout=seconds)
        except TimeoutError:
            return


def dashboard(stack: Stack, args: argparse.Namespace) -> Figures:
    import bench.dashboard_render as render

    missing = render.browser.available()
    if missing:
        raise RuntimeError(f"no browser for the dashboard measurement: {missing}")
    log(f"creating a {args.nodes}-node task and opening its page {args.repeat} times in headless Chromium")
    task_id = render.create_task(stack.api, args.nodes)
    reads = statistics.median(render.api_reads_ms(stack.url, stack.token, task_id) for _ in range(args.repeat))
    samples = render.measure(stack.url, stack.token, task_id, args.repeat)
    first = statistics.median(s["first_frame_ms"] for s in samples)
    whole = statistics.median(s["complete_frame_ms"] for s in samples)
    figures = Figures("dashboard", {
        "nodes": args.nodes, "grid_cells": samples[0]["cells"], "openings": args.repeat,
        "first_screen_ms": round(first, 1), "whole_grid_ms": round(whole, 1),
        "browser_dom_ms": round(statistics.median(s["dom_ms"] for s in samples), 1),
        "api_reads_from_python_ms": round(reads, 1),
    })
    figures.compared = [
        f"budget: first screen within {render.BUDGET_MS:.0f} ms -> "
        f"{'met' if first < render.BUDGET_MS else 'NOT met'} ({first:.0f} ms)",
        f"the whole grid ({whole:.0f} ms) against the same API reads from Python ({reads:.0f} ms): "
        "the page adds little to what the API costs",
    ]
    return figures


#: name -> measurement; each runs against its own fresh runtime
MEASUREMENTS: dict[str, Callable[[Stack, argparse.Namespace], Figures]] = {
    "push": push,
    "dashboard": dashboard,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--changes", type=int, default=500, help="task changes to push (default 500)")
    parser.add_argument("--spacing", type=float, default=0.05, help="seconds between two writes (default 0.05)")
    parser.add_argument("--nodes", type=int, default=1000, help="targets of the dashboard's task (default 1000)")
    parser.add_argument("--repeat", type=int, default=5, help="openings of the task page (default 5)")
    parser.add_argument("--only", action="append", choices=sorted(MEASUREMENTS), help="run only these")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args()
    results: list[Figures] = []
    try:
        for name in args.only or list(MEASUREMENTS):
            with Stack() as stack:
                results.append(MEASUREMENTS[name](stack, args))
    except RuntimeError as error:
        log(f"bench broke: {error}")
        return 1
    if args.json:
        print(json.dumps({f.name: f.values for f in results}))
        return 0
    for figures in results:
        print(f"== {figures.name}")
        for key, value in figures.values.items():
            print(f"  {key:<20} {value}")
        for line in figures.compared:
            print(f"  {line}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
