"""Cold start: `import app` and a first request, against `import chalice, boto3`, in fresh interpreters.

Run from the repository root:  .venv/bin/python bench/coldstart.py [--runs 7] [--json]

What it measures
  Each sample is a fresh `python` process, so nothing is cached in memory; the two kinds alternate
  (app, baseline, app, baseline, ...) so that a drift of this machine's speed hits both alike.
  - `import app`: the wall time of `import app` inside the process (the interpreter's own start
    is left out of both sides), with the environment a deployed function has: `LAMBDA_TASK_ROOT`
    and `AWS_LAMBDA_FUNCTION_NAME` set (so Powertools enables the X-Ray tracer, as on Lambda with
    active tracing), an `_X_AMZN_TRACE_ID`, the stack's `FLEETRUN_*` and `POWERTOOLS_*` settings,
    and AWS pointed at a moto server running in this (parent) process.
  - then, in the same process, the first request of a warm function: `GET /v1/tasks` (a user's
    JWT), then the first `POST /v1/agents/{node}/claim` (a node token), each an API Gateway proxy
    event handed to `app.app(event, context)` like the Lambda runtime does. Their times include
    whatever the handlers load on first use and the first AWS client of the process (moto over
    HTTP on localhost, so the AWS round trips are cheap; they are the same before and after).
  - `import app` and a claim as the process's first request (what an agent's request meets), in
    a third kind of process.
  - `import chalice, boto3`: the same, in a process with the same environment.
  The figures are medians over `--runs` samples of each kind; `ratio` is import_app / baseline.
  `--importtime` prints the 25 slowest modules (cumulative) of one `python -X importtime -c
  "import app"` run in the same environment, to see what a cold start loads.

Output
  A table on stdout; with `--json`, exactly one JSON object on the last line:
  import_app_ms, import_chalice_boto3_ms, ratio, first_request_ms (GET /v1/tasks),
  first_claim_ms (after the GET), import_and_first_request_ms, import_and_first_claim_ms (a process
  whose first request is the claim), runs, the per-sample lists and, with `--against DIR`, the
  same figures of DIR under "against".
  Exit 1 only when a sample fails (an import error, a request not answered 200).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# bench/ on sys.path would shadow the `requests` package with bench/requests.py
sys.path[:] = [str(ROOT)] + [entry for entry in sys.path if Path(entry or ".").resolve() != ROOT / "bench"]
JWT_SECRET = "coldstart-bench-secret"
NODE_ID = "coldstart-node-1"
#: what the child prints its figures after (its own log lines go to stdout too)
MARK = "COLDSTART-RESULT "

_BASELINE = f"""
import json, time
start = time.perf_counter()
import chalice, boto3
print({MARK!r} + json.dumps({{"import_ms": (time.perf_counter() - start) * 1000}}), flush=True)
"""

_APP = f"""
import io, json, sys, time
start = time.perf_counter()
import app
imported = time.perf_counter()

class Context:
    function_name = "fleetrun-bench-APIHandler"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:fleetrun-bench-APIHandler"
    aws_request_id = "00000000-0000-0000-0000-000000000001"
    def get_remaining_time_in_millis(self):
        return 30000

def event(method, resource, path, params, token, body=None):
    headers = {{"authorization": "Bearer " + token, "content-type": "application/json", "host": "localhost"}}
    return {{
        "resource": resource, "path": path, "httpMethod": method, "headers": headers,
        "multiValueHeaders": {{k: [v] for k, v in headers.items()}},
        "queryStringParameters": None, "multiValueQueryStringParameters": None,
        "pathParameters": params or None, "stageVariables": None,
        "requestContext": {{"resourcePath": resource, "httpMethod": method, "path": "/bench" + path,
                            "stage": "bench", "requestId": "r-1", "identity": {{"sourceIp": "127.0.0.1"}}}},
        "body": json.dumps(body) if body is not None else None, "isBase64Encoded": False,
    }}

user_token, node_token, claim_first = sys.argv[1], sys.argv[2], sys.argv[3] == "claim-first"
real_stdout, sys.stdout = sys.stdout, io.StringIO()  # the app's log lines are not the figures
claim_event = event("POST", "/v1/agents/{{node_id}}/claim", "/v1/agents/{NODE_ID}/claim",
                    {{"node_id": "{NODE_ID}"}}, node_token, {{"max": 1}})
if claim_first:  # an agent's claim is the first request this process serves
    answers = [app.app(claim_event, Context())]
    claimed = time.perf_counter()
    figures = {{"import_ms": (imported - start) * 1000, "claim_as_first_request_ms": (claimed - imported) * 1000}}
else:
    answers = [app.app(event("GET", "/v1/tasks", "/v1/tasks", {{}}, user_token), Context())]
    listed = time.perf_counter()
    answers.append(app.app(claim_event, Context()))
    claimed = time.perf_counter()
    figures = {{"import_ms": (imported - start) * 1000, "first_request_ms": (listed - imported) * 1000,
               "first_claim_ms": (claimed - listed) * 1000}}
sys.stdout = real_stdout
if any(answer["statusCode"] != 200 for answer in answers):
    print("unexpected answers:", answers, file=sys.stderr)
    sys.exit(1)
print({MARK!r} + json.dumps(figures), flush=True)
"""


def _moto_environment() -> dict[str, str]:
    """Start moto on a free port, create the resources and a node; the child's environment."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per moto request is noise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    aws = {
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1",
    }
    os.environ.update(aws)
    from fleetrun.local.provision import provision

    provisioned = provision()
    os.environ.update(provisioned.environment())
    return {**aws, **provisioned.environment()}


def _lambda_environment(aws: dict[str, str], root: Path = ROOT) -> dict[str, str]:
    """A deployed function's environment (infra/stack.py, .chalice/config.json, the runtime's own)."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("FLEETRUN_", "POWERTOOLS_", "AWS_", "_X_AMZN"))}
    env.pop("PYTHONPATH", None)
    return {
        **env, **aws,
        "FLEETRUN_JWT_SECRET": JWT_SECRET,
        "POWERTOOLS_SERVICE_NAME": "fleetrun",
        "POWERTOOLS_METRICS_NAMESPACE": "Fleetrun",
        "POWERTOOLS_LOG_LEVEL": "INFO",
        "LAMBDA_TASK_ROOT": str(root),
        "AWS_LAMBDA_FUNCTION_NAME": "fleetrun-bench-APIHandler",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512",
        "AWS_EXECUTION_ENV": "AWS_Lambda_python3.11",
        "_X_AMZN_TRACE_ID": "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
        "AWS_XRAY_DAEMON_ADDRESS": "127.0.0.1:2000",  # UDP to nowhere: segments are dropped
        "PYTHONDONTWRITEBYTECODE": "",
    }


def _credentials() -> tuple[str, str]:
    from chalicelib import auth
    from chalicelib.services import nodes

    _, node_token = nodes.register(NODE_ID, {"pool": "bench"}, 1)
    return auth.mint_token("alice", ["operator"], JWT_SECRET), node_token


def _sample(code: str, env: dict[str, str], *args: str) -> dict[str, float]:
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=env["LAMBDA_TASK_ROOT"], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith(MARK)]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"sample failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(lines[-1][len(MARK):])  # type: ignore[no-any-return]


def _import_and(samples: list[dict[str, float]]) -> float:
    """Median of import + the claim, in processes whose first request was the claim."""
    return round(statistics.median(s["import_ms"] + s["claim_as_first_request_ms"] for s in samples), 1)


def _importtime(env: dict[str, str], top: int = 25) -> list[tuple[int, str]]:
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", "import app"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    rows = []
    for line in done.stderr.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[1].strip().isdigit():
            rows.append((int(parts[1]), parts[2].rstrip()))
    return sorted(rows, reverse=True)[:top]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="samples of each kind (default 7)")
    parser.add_argument("--json", action="store_true", help="one JSON object on the last line")
    parser.add_argument("--importtime", action="store_true", help="also print the slowest imports of app")
    parser.add_argument("--against", type=Path, metavar="DIR",
                        help="also measure the app in DIR (e.g. `git archive HEAD | tar -x -C DIR`), alternating")
    options = parser.parse_args()

    aws = _moto_environment()
    env = _lambda_environment(aws)
    user_token, node_token = _credentials()
    against_env = _lambda_environment(aws, options.against.resolve()) if options.against else None
    apps: list[dict[str, float]] = []
    others: list[dict[str, float]] = []
    baselines: list[float] = []
    claims_first: list[dict[str, float]] = []
    others_claims_first: list[dict[str, float]] = []
    for run in range(options.runs):
        apps.append(_sample(_APP, env, user_token, node_token, "get-first"))
        baselines.append(_sample(_BASELINE, env)["import_ms"])
        claims_first.append(_sample(_APP, env, user_token, node_token, "claim-first"))
        if against_env is not None:
            others.append(_sample(_APP, against_env, user_token, node_token, "get-first"))
            others_claims_first.append(_sample(_APP, against_env, user_token, node_token, "claim-first"))
        print(f"run {run + 1}/{options.runs}: import app {apps[-1]['import_ms']:.0f} ms, "
              f"import chalice, boto3 {baselines[-1]:.0f} ms", file=sys.stderr)

    def median(key: str, samples: list[dict[str, float]] = apps) -> float:
        return round(statistics.median(sample[key] for sample in samples), 1)

    result: dict[str, Any] = {
        "import_app_ms": median("import_ms"),
        "import_chalice_boto3_ms": round(statistics.median(baselines), 1),
        "first_request_ms": median("first_request_ms"),
        "first_claim_ms": median("first_claim_ms"),
        "import_and_first_request_ms": round(statistics.median(
            sample["import_ms"] + sample["first_request_ms"] for sample in apps), 1),
        "import_and_first_claim_ms": _import_and(claims_first),
        "runs": options.runs,
        "samples": {"import_app_ms": [round(s["import_ms"], 1) for s in apps],
                    "import_chalice_boto3_ms": [round(b, 1) for b in baselines],
                    "first_request_ms": [round(s["first_request_ms"], 1) for s in apps],
                    "first_claim_ms": [round(s["first_claim_ms"], 1) for s in apps]},
    }
    result["ratio"] = round(result["import_app_ms"] / result["import_chalice_boto3_ms"], 2)
    if others:
        result["against"] = {
            "root": str(options.against), "import_app_ms": median("import_ms", others),
            "first_request_ms": median("first_request_ms", others), "first_claim_ms": median("first_claim_ms", others),
            "import_and_first_request_ms": round(statistics.median(
                sample["import_ms"] + sample["first_request_ms"] for sample in others), 1),
            "import_and_first_claim_ms": _import_and(others_claims_first),
        }
        result["against"]["ratio"] = round(result["against"]["import_app_ms"] / result["import_chalice_boto3_ms"], 2)
    print(f"import app                      {result['import_app_ms']:8.1f} ms (median of {options.runs})")
    print(f"import chalice, boto3           {result['import_chalice_boto3_ms']:8.1f} ms")
    print(f"ratio                           {result['ratio']:8.2f}")
    print(f"first GET /v1/tasks             {result['first_request_ms']:8.1f} ms")
    print(f"first POST claim (after it)     {result['first_claim_ms']:8.1f} ms")
    print(f"import app + first GET          {result['import_and_first_request_ms']:8.1f} ms")
    print(f"import app + claim as first     {result['import_and_first_claim_ms']:8.1f} ms")
    if others:
        theirs = result["against"]
        print(f"{options.against}: import app {theirs['import_app_ms']:.1f} ms (ratio {theirs['ratio']:.2f}), "
              f"first GET {theirs['first_request_ms']:.1f} ms, first claim {theirs['first_claim_ms']:.1f} ms, "
              f"import + first GET {theirs['import_and_first_request_ms']:.1f} ms, "
              f"import + claim as first {theirs['import_and_first_claim_ms']:.1f} ms")
    if options.importtime:
        print("slowest imports of `import app` (cumulative µs):")
        for micros, name in _importtime(env):
            print(f"  {micros:8d} {name}")
    if options.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
