"""A 200-node `shell` task through the real local runtime and 5 agent processes.

Prints node runs per second end to end (submit → completed) next to the raw request rate of
the moto server measured in the same run: on one machine moto is the ceiling, so the ratio
says how many moto requests a node run costs here. Informational: never an assertion.

    .venv/bin/python bench/local_e2e.py [--nodes 200] [--agents 5] [--slots 4] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# bench/requests.py would shadow the `requests` library: import from the repository root instead
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != REPO / "bench"]
sys.path.insert(0, str(REPO))

import boto3  # noqa: E402
import requests  # noqa: E402

from chalicelib.auth import mint_token  # noqa: E402
from fleetrun.client import Api  # noqa: E402

SECRET = "local-dev-secret"
warnings.filterwarnings("ignore", message=".*HMAC key.*")  # the documented local secret is short
RUNNER = "bench-runner"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_runtime(data_dir: Path, api_port: int, moto_port: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLEETRUN_", "AWS_", "POWERTOOLS_"))}
    env.update(FLEETRUN_PORT=str(api_port), FLEETRUN_MOTO_PORT=str(moto_port), FLEETRUN_DEMO_AGENTS="0",
               FLEETRUN_DATA_DIR=str(data_dir), FLEETRUN_SWEEP_SECONDS="5", FLEETRUN_RATE_LIMIT="100000")
    log = (data_dir / "runtime.log").open("wb")
    return subprocess.Popen([sys.executable, "-c", "from fleetrun.local.runtime import up; raise SystemExit(up())"],
                            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)


def wait_healthy(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{url}/v1/health", timeout=1).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise SystemExit(f"runtime not healthy at {url}")


def moto_request_rate(moto_port: int, seconds: float = 3.0) -> float:
    """Raw GetItem requests per second against the same moto server (one client, sequential)."""
    client = boto3.client("dynamodb", endpoint_url=f"http://127.0.0.1:{moto_port}", region_name="us-east-1",
                          aws_access_key_id="local", aws_secret_access_key="local")
    table = client.list_tables()["TableNames"][0]
    key = {"pk": {"S": "BENCH"}, "sk": {"S": "PROBE"}}
    started, count = time.monotonic(), 0
    while time.monotonic() - started < seconds:
        client.get_item(TableName=table, Key=key)
        count += 1
    return count / (time.monotonic() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=200)
    parser.add_argument("--agents", type=int, default=5)
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    api_port, moto_port = free_port(), free_port()
    url = f"http://127.0.0.1:{api_port}"
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        runtime = start_runtime(data, api_port, moto_port)
        agents: list[subprocess.Popen[bytes]] = []
        try:
            wait_healthy(url)
            admin = Api(url, mint_token("admin", ["admin"], SECRET))
            token = admin.post("/v1/nodes", {"node_id": RUNNER, "slots": args.slots})["token"]
            for i in range(args.agents):  # several agent processes serve one delegate runner node
                agents.append(subprocess.Popen(
                    [sys.executable, "-m", "fleetrun.agent", "--api", url, "--node", RUNNER, "--token", token,
                     "--slots", str(args.slots), "--work-dir", str(data / f"agent-{i}")],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO))
            started = time.monotonic()
            task = admin.post("/v1/tasks", {
                "type": "shell", "name": "bench", "runner_node": RUNNER,
                "target_nodes": [f"bench-{i:04d}" for i in range(args.nodes)],
                "parameters": {"command": ["true"]}, "max_concurrency": args.nodes,
            })
            while True:
                current = admin.get(f"/v1/tasks/{task['task_id']}")
                if current["status"] in ("completed", "partial_failure", "failed", "cancelled"):
                    break
                time.sleep(0.5)
            elapsed = time.monotonic() - started
            moto_rate = moto_request_rate(moto_port)
        finally:
            for agent in agents:
                agent.send_signal(signal.SIGTERM)
            for agent in agents:
                try:
                    agent.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    agent.kill()
            runtime.send_signal(signal.SIGTERM)
            try:
                runtime.wait(timeout=30)
            except subprocess.TimeoutExpired:
                runtime.kill()
    result = {
        "nodes": args.nodes, "agents": args.agents, "slots_per_agent": args.slots, "status": current["status"],
        "seconds": round(elapsed, 2), "node_runs_per_second": round(args.nodes / elapsed, 2),
        "moto_requests_per_second": round(moto_rate, 1),
        "moto_requests_per_node_run_at_that_rate": round(moto_rate * elapsed / args.nodes, 1),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.nodes}-node shell task, {args.agents} agents x {args.slots} slots: {current['status']} "
              f"in {elapsed:.1f} s")
        print(f"  node runs per second        {result['node_runs_per_second']:>8}")
        print(f"  raw moto requests per second {result['moto_requests_per_second']:>7}  (same machine, same run)")
        print(f"  → at most ~{result['moto_requests_per_node_run_at_that_rate']} moto requests per node run "
              "of wall time; the service itself is bounded by moto here, not by its design")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
