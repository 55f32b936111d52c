"""A 200-node `shell` task through the real local runtime and 5 agent processes.

Prints node runs per second end to end (submit → completed), the moto requests one node run
cost (counted by the runtime's stand-in; for a baseline without that counter, estimated from
moto's raw request rate as this bench used to), and how long a runtime holding 10,000 tasks
and 100,000 node runs takes to be healthy again after a restart. `--baseline REF` runs the same
task against a git worktree of REF (default e4a68c2, before the durable runtime) in the same
run, side by side; `--repeat N` runs both N times, alternating, and reports the median of each
(this machine's speed drifts by a third within minutes: one pair can mislead). Informational:
never an assertion.

The agents' step is, by default, a `/bin/sh` script that reads its parameters and succeeds
(`--steps minimal`): the figure is then the service's, not the cost of starting a step. With
`--steps demo` they run the bundled Python `shell` step, one interpreter start per node run
(through a version manager's `python3` shim that alone cost ~200 ms of CPU; the agents here,
like `make run`'s demo agents, find this interpreter first on PATH).

    .venv/bin/python bench/local_e2e.py [--nodes 200] [--agents 5] [--slots 4] [--baseline [REF]]
                                        [--repeat N] [--steps minimal|demo] [--restart-tasks 10000] [--json]

With `--json` the last line is one JSON object with at least `node_runs_per_s`,
`moto_requests_per_node_run` and `restart_seconds_10k_tasks`.
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
from typing import Any

REPO = Path(__file__).resolve().parents[1]
# bench/requests.py would shadow the `requests` library: import from the repository root instead
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != REPO / "bench"]
sys.path.insert(0, str(REPO))

import boto3  # noqa: E402
import requests  # noqa: E402

from chalicelib.auth import mint_token  # noqa: E402
from fleetrun.client import Api  # noqa: E402
from tests.e2e.runtime_process import clone_tasks  # noqa: E402

SECRET = "local-dev-secret"
warnings.filterwarnings("ignore", message=".*HMAC key.*")  # the documented local secret is short
RUNNER = "bench-runner"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_runtime(data_dir: Path, api_port: int, moto_port: int, repo: Path = REPO) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLEETRUN_", "AWS_", "POWERTOOLS_"))}
    env.update(FLEETRUN_PORT=str(api_port), FLEETRUN_MOTO_PORT=str(moto_port), FLEETRUN_DEMO_AGENTS="0",
               FLEETRUN_DATA_DIR=str(data_dir), FLEETRUN_SWEEP_SECONDS="5", FLEETRUN_RATE_LIMIT="100000",
               FLEETRUN_WS_PORT=str(free_port()))
    log = (data_dir.parent / f"{data_dir.name}-runtime.log").open("ab")
    return subprocess.Popen([sys.executable, "-c", "from fleetrun.local.runtime import up; raise SystemExit(up())"],
                            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=repo)


def stop(process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def moto_requests_served(moto_port: int) -> int | None:
    """The stand-in's count of requests served (None: a runtime without the counter)."""
    try:
        answer = requests.get(f"http://127.0.0.1:{moto_port}/fleetrun/requests", timeout=5)
        return int(answer.json()["requests"]) if answer.ok else None
    except (requests.RequestException, ValueError, KeyError):
        return None


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


def minimal_steps(into: Path) -> Path:
    """A steps directory whose `shell/run` reads its parameters and succeeds, in `/bin/sh`."""
    step = into / "shell" / "run"
    step.parent.mkdir(parents=True)
    step.write_text("#!/bin/sh\nexec cat >/dev/null\n")
    step.chmod(0o755)
    return into


def run_task(repo: Path, data: Path, nodes: int, agents: int, slots: int, steps: str) -> dict[str, Any]:
    """One `nodes`-node shell task on `agents` agent processes of the runtime in `repo`."""
    api_port, moto_port = free_port(), free_port()
    url = f"http://127.0.0.1:{api_port}"
    data.mkdir(parents=True)
    steps_dir = ["--steps-dir", str(minimal_steps(data / "steps"))] if steps == "minimal" else []
    runtime = start_runtime(data, api_port, moto_port, repo)
    started_agents: list[subprocess.Popen[bytes]] = []
    try:
        wait_healthy(url)
        admin = Api(url, mint_token("admin", ["admin"], SECRET))
        token = admin.post("/v1/nodes", {"node_id": RUNNER, "slots": slots})["token"]
        for i in range(agents):  # several agent processes serve one delegate runner node
            started_agents.append(subprocess.Popen(
                [sys.executable, "-m", "fleetrun.agent", "--api", url, "--node", RUNNER,
                 "--slots", str(slots), "--work-dir", str(data / f"agent-{i}"), *steps_dir],
                # as `make run`'s demo agents: `python3` is this interpreter, not a version manager's shim
                env={**os.environ, "FLEETRUN_NODE_TOKEN": token,
                     "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])},
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=repo))
        served_before = moto_requests_served(moto_port)
        started = time.monotonic()
        task = admin.post("/v1/tasks", {
            "type": "shell", "name": "bench", "runner_node": RUNNER,
            "target_nodes": [f"bench-{i:04d}" for i in range(nodes)],
            "parameters": {"command": ["true"]}, "max_concurrency": nodes,
        })
        while True:
            current = admin.get(f"/v1/tasks/{task['task_id']}")
            if current["status"] in ("completed", "partial_failure", "failed", "cancelled"):
                break
            time.sleep(0.2)
        elapsed = time.monotonic() - started
        served_after = moto_requests_served(moto_port)
        moto_rate = moto_request_rate(moto_port)
    finally:
        for agent in started_agents:
            agent.send_signal(signal.SIGTERM)
        for agent in started_agents:
            try:
                agent.wait(timeout=30)
            except subprocess.TimeoutExpired:
                agent.kill()
        stop(runtime)
    counted = served_before is not None and served_after is not None
    per_node = (served_after - served_before) / nodes if counted else moto_rate * elapsed / nodes  # type: ignore[operator]
    return {
        "status": current["status"], "seconds": round(elapsed, 2), "node_runs_per_s": round(nodes / elapsed, 2),
        "moto_requests_per_node_run": round(per_node, 1),
        "moto_requests_counted": counted, "raw_moto_requests_per_s": round(moto_rate, 1),
    }


def restart_seconds(data: Path, tasks: int, runs_per_task: int) -> float:
    """Seconds from starting a runtime that holds `tasks` tasks x `runs_per_task` runs until it
    answers health (the first page of the task list is timed too, on stderr)."""
    api_port, moto_port = free_port(), free_port()
    url = f"http://127.0.0.1:{api_port}"
    data.mkdir(parents=True)
    runtime = start_runtime(data, api_port, moto_port)
    try:
        wait_healthy(url)
        admin = Api(url, mint_token("admin", ["admin"], SECRET))
        admin.post("/v1/nodes", {"node_id": "seed", "slots": 1})
        task = admin.post("/v1/tasks", {"type": "shell", "target_nodes": [f"seed-{i}" for i in range(runs_per_task)],
                                        "parameters": {"command": ["true"]}})
        deadline = time.monotonic() + 60
        while len(admin.pages(f"/v1/tasks/{task['task_id']}/nodes")) < runs_per_task and time.monotonic() < deadline:
            time.sleep(0.3)
    finally:
        stop(runtime)
    clone_tasks(data, tasks)
    started = time.monotonic()
    runtime = start_runtime(data, api_port, moto_port)
    try:
        wait_healthy(url, timeout=120)
        healthy = time.monotonic() - started
        Api(url, mint_token("admin", ["admin"], SECRET), timeout=120).get("/v1/tasks", limit=50)
        listed = time.monotonic() - started
    finally:
        stop(runtime)
    log = (data.parent / f"{data.name}-runtime.log").read_text(errors="replace")
    restored = [line.strip() for line in log.splitlines() if "restored in" in line][-1:]
    print(f"restart: healthy after {healthy:.1f} s, first task page after {listed:.1f} s; {' '.join(restored)}",
          file=sys.stderr)
    return healthy


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run of median throughput (the lower middle one of an even number), with every run's
    throughput when there were several."""
    ranked = sorted(runs, key=lambda run: run["node_runs_per_s"])
    median = dict(ranked[(len(ranked) - 1) // 2])
    if len(runs) > 1:
        median["node_runs_per_s_each"] = [run["node_runs_per_s"] for run in runs]
    return median


def baseline_worktree(ref: str, into: Path) -> Path:
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(into), ref], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return into


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=200)
    parser.add_argument("--agents", type=int, default=5)
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--baseline", nargs="?", const="e4a68c2", default=None,
                        help="also run the task on a worktree of this commit (default e4a68c2)")
    parser.add_argument("--steps", choices=("minimal", "demo"), default="minimal",
                        help="the shell step the agents run: `minimal` (a /bin/sh step that succeeds; the "
                             "default: the service's throughput) or `demo` (the bundled Python step, which "
                             "runs the command: an interpreter start per node run)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run the task this many times (alternating with the baseline): the figures are "
                             "the medians, the speed-up their ratio (a shared machine's speed drifts)")
    parser.add_argument("--restart-tasks", type=int, default=10_000, help="0: skip the restart measurement")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result: dict[str, Any] = {"nodes": args.nodes, "agents": args.agents, "slots_per_agent": args.slots,
                              "steps": args.steps}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        worktree = baseline_worktree(args.baseline, root / "baseline-code") if args.baseline else None
        try:
            currents, befores = [], []
            for i in range(args.repeat):  # alternating, so both see the machine as it is at the time
                currents.append(run_task(REPO, root / f"current-{i}", args.nodes, args.agents, args.slots, args.steps))
                if worktree is not None:
                    befores.append(run_task(worktree, root / f"baseline-{i}", args.nodes, args.agents, args.slots,
                                            args.steps))
        finally:
            if worktree is not None:
                subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(worktree)], check=False)
        result.update(median_run(currents))
        if befores:
            result["baseline"] = {"ref": args.baseline, **median_run(befores)}
            result["speedup"] = round(result["node_runs_per_s"] / result["baseline"]["node_runs_per_s"], 2)
            if args.repeat > 1:
                result["speedups"] = [round(c["node_runs_per_s"] / b["node_runs_per_s"], 2)
                                      for c, b in zip(currents, befores, strict=True)]
        if args.restart_tasks:
            result["restart_tasks"], result["restart_runs"] = args.restart_tasks, args.restart_tasks * 10
            key = "restart_seconds_10k_tasks" if args.restart_tasks == 10_000 else "restart_seconds"
            result[key] = round(restart_seconds(root / "restart", args.restart_tasks, 10), 2)
    if not args.json:
        runs = f" (median of {args.repeat})" if args.repeat > 1 else ""
        print(f"{args.nodes}-node shell task, {args.agents} agents x {args.slots} slots, {args.steps} step: "
              f"{result['status']} in {result['seconds']} s{runs}")
        print(f"  node runs per second        {result['node_runs_per_s']:>8}")
        how = "counted" if result["moto_requests_counted"] else "estimated from the raw rate"
        print(f"  moto requests per node run  {result['moto_requests_per_node_run']:>8}  ({how})")
        if "baseline" in result:
            b = result["baseline"]
            print(f"  baseline {b['ref']}: {b['node_runs_per_s']} node runs/s, ~{b['moto_requests_per_node_run']} "
                  f"moto requests per node run; speed-up x{result['speedup']}")
            if "speedups" in result:
                print(f"  speed-up of each pair: {', '.join(f'x{x}' for x in result['speedups'])}")
        for key in ("restart_seconds_10k_tasks", "restart_seconds"):
            if key in result:
                print(f"  restart with {result['restart_tasks']} tasks / {result['restart_runs']} runs: "
                      f"healthy in {result[key]} s")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
