"""A month of fleetrun on AWS for a fleet (default: 1,000 nodes, 100,000 node runs), from counted requests.

Run from the repository root (about two minutes: it runs bench/requests.py's 1,000-node scenario first):
  .venv/bin/python bench/monthly_cost.py [--nodes 1000] [--node-runs 100000] [--json]
`--figures FILE` takes the per-node-run figures of an earlier `bench/requests.py --json` run instead
(its app log bytes are then unknown and left out of the log line).

What is measured (moto in-process, the real app.py, bench/requests.py's meter and prices):
  - per node run: bench/requests.py's dollars per million node runs, by line item;
  - an idle agent's claim (`POST /v1/agents/{node}/claim` with nothing to claim): requests, read
    units and Lambda duration; the first request of a node's agent after `liveness.refresh_seconds()`
    (a sixth of FLEETRUN_NODE_OFFLINE_SECONDS) also refreshes `last_seen_at` (a write, and a stream
    record for the aggregator);
  - one sweep of an idle table (the sweeper runs every minute).
The month (30 days) multiplies them: every idle node polls every DEFAULT_IDLE_POLL_MAX_SECONDS (the
agent's `--idle-poll-max`: after work the pause starts at 1 s and doubles up to it, which adds about
five polls per run, negligible at 100 runs per node a month; a node with 100 runs a month is idle
nearly all the time, so all of it is counted), each
node's liveness is refreshed every refresh_seconds(), the sweeper's node pass reads every node item
(measured with IDLE_NODES nodes, scaled to the fleet), and Lambda's SQS pollers long-poll each
consumed queue. Modelled, not measured: API Gateway's volume tiers, X-Ray traces at the default
sampling rule (5% of requests), CloudWatch Logs ingestion of Lambda's own START/END/REPORT lines
plus the app's log lines (measured bytes), the stream function's invocations for liveness records
(4 polls a second on one shard), and fixed monthly items (the KMS key, the CloudWatch alarms).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

SECONDS_PER_MONTH = 30 * 24 * 3600
#: API Gateway REST, us-east-1: per million requests for the first 333 M, the next 667 M, the next 19 B
APIGW_TIERS = ((333e6, 3.50), (667e6, 2.80), (19e9, 2.38), (float("inf"), 1.51))
XRAY_USD_PER_TRACE = 5.00 / 1e6
XRAY_SAMPLED_SHARE = 0.05
LOGS_USD_PER_GB = 0.50
#: Lambda's START, END and REPORT lines of one invocation (text format)
PLATFORM_LOG_BYTES = 330
KMS_KEY_USD_PER_MONTH = 1.00
ALARM_USD_PER_MONTH = 0.10
#: Lambda's SQS event source mapping: 5 pollers, 20 s long polls, per consumed queue
SQS_POLLERS, SQS_LONG_POLL_SECONDS = 5, 20
#: Lambda polls each stream shard 4 times a second; liveness writes trickle all the time
STREAM_POLLS_PER_SECOND = 4
IDLE_NODES = 50


def _load_bench() -> ModuleType:
    path = Path(__file__).resolve().parent / "requests.py"
    spec = importlib.util.spec_from_file_location("fleetrun_bench_requests", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


bench = _load_bench()


def apigw_usd(requests: float) -> float:
    total, left = 0.0, requests
    for size, per_million in APIGW_TIERS:
        taken = min(left, size)
        total += taken * per_million / 1e6
        left -= taken
        if left <= 0:
            break
    return total


def lambda_usd(invocations: float, billed_ms: float) -> float:
    gb_seconds = invocations * billed_ms / 1000 * bench.LAMBDA_MEMORY_GB
    return invocations * bench.LAMBDA_USD_PER_REQUEST + gb_seconds * bench.LAMBDA_USD_PER_GB_SECOND


def measure_idle() -> dict[str, float]:
    """Per idle claim, per liveness refresh and per sweep: units, requests, milliseconds, log bytes."""
    from chalicelib.services import sweeper

    meter = bench.METER
    names = [f"idle-{i:03d}" for i in range(IDLE_NODES)]
    sink = bench._CountingSink()
    with bench.moto_fleet() as fleet, contextlib.redirect_stdout(sink):  # type: ignore[type-var]
        fleet.register(*names)
        bench.settle(fleet)
        rounds = {}
        for label in ("refresh", "idle"):  # a never-seen node refreshes on its first claim only
            meter.reset()
            logged = sink.bytes
            with meter.counting():
                for name in names:
                    if fleet.claim(name, 1):
                        raise bench.ScenarioBroke(f"{name} had work")
                with meter.acting("esm"):
                    fleet.stream.drain()
            rounds[label] = (meter.tally, sink.bytes - logged)
        meter.reset()
        with meter.counting(), meter.acting("sweep"):
            started = time.perf_counter()
            sweeper.sweep()
            meter.invoked("sweep", time.perf_counter() - started)
        sweep = meter.tally
    refresh, idle = rounds["refresh"][0], rounds["idle"][0]
    n = len(names)
    return {
        "poll_read_units": sum(idle.read_units.values()) / n,
        "poll_write_units": sum(idle.write_units.values()) / n,
        "poll_billed_ms": idle.billed_ms["api"] / idle.invocations["api"],
        "poll_log_bytes": rounds["idle"][1] / n,
        "refresh_write_units": (sum(refresh.write_units.values()) - sum(idle.write_units.values())) / n,
        "refresh_read_units": (sum(refresh.read_units.values()) - sum(idle.read_units.values())) / n,
        "stream_billed_ms": (refresh.billed_ms["stream"] / refresh.invocations["stream"]
                             if refresh.invocations["stream"] else 0.0),
        "sweep_read_units": sum(sweep.read_units.values()),
        "sweep_billed_ms": float(sweep.billed_ms["sweep"]),
    }


def per_run_figures(path: Path | None) -> dict[str, Any]:
    if path is not None:
        loaded: dict[str, Any] = json.loads(path.read_text())
        return loaded
    sink = bench._CountingSink()
    with contextlib.redirect_stdout(sink):  # type: ignore[type-var]
        result = bench.run_node_runs(1000, 100)
    figures: dict[str, Any] = bench.as_json(bench.figures(result, [], 0.0, result.measured_seconds, None))
    figures["log_bytes_per_node_run"] = sink.bytes / result.nodes
    return figures


def month(nodes: int, node_runs: int, per_run: dict[str, Any], idle: dict[str, float], poll_seconds: float,
          sqs_consumers: int, functions: int, alarms: int) -> list[tuple[str, str, float]]:
    """(item, arithmetic, USD) lines of one month."""
    from chalicelib.services.liveness import refresh_seconds

    seen_refresh_seconds = refresh_seconds()
    sweep_read_units = idle["sweep_read_units"] * max(1.0, nodes / IDLE_NODES)  # the node pass grows with the fleet

    breakdown = per_run["usd_breakdown"]
    runs_m = node_runs / 1e6
    polls = nodes * SECONDS_PER_MONTH / poll_seconds
    refreshes = nodes * SECONDS_PER_MONTH / seen_refresh_seconds
    sweeps = SECONDS_PER_MONTH / 60
    stream_invocations = STREAM_POLLS_PER_SECOND * SECONDS_PER_MONTH
    run_api = per_run["api_requests_per_node_run"] * node_runs
    run_lambda = per_run["lambda_invocations_per_node_run"] * node_runs
    sqs_polls = sqs_consumers * SQS_POLLERS * SECONDS_PER_MONTH / SQS_LONG_POLL_SECONDS
    invocations = run_lambda + polls + sweeps + stream_invocations
    api_requests = run_api + polls
    log_gb = (invocations * PLATFORM_LOG_BYTES + polls * idle["poll_log_bytes"]
              + node_runs * per_run.get("log_bytes_per_node_run", 0)) / 1e9
    other_run_items = sum(v for k, v in breakdown.items() if k != "api_gateway") * runs_m
    lines = [
        ("node runs: DynamoDB, SQS, Lambda, KMS",
         f"{node_runs:,} x ${sum(v for k, v in breakdown.items() if k != 'api_gateway'):.2f}/M (bench/requests.py)",
         other_run_items),
        ("idle claims: Lambda",
         f"{polls:,.0f} polls ({nodes:,} nodes, every {poll_seconds:g} s) x ({idle['poll_billed_ms']:.0f} ms at "
         f"{bench.LAMBDA_MEMORY_GB:g} GB + 1 request)", lambda_usd(polls, idle["poll_billed_ms"])),
        ("idle claims: DynamoDB reads",
         f"{polls:,.0f} x {idle['poll_read_units']:.2f} RRU x ${bench.DDB_USD_PER_READ_UNIT * 1e6:.3f}/M",
         polls * idle["poll_read_units"] * bench.DDB_USD_PER_READ_UNIT),
        ("API Gateway (node runs + idle claims)",
         f"{api_requests:,.0f} requests, tiered $3.50/$2.80/$2.38 per M", apigw_usd(api_requests)),
        ("liveness: last_seen_at writes",
         f"{refreshes:,.0f} refreshes (every {seen_refresh_seconds} s) x {idle['refresh_write_units']:.2f} WRU",
         refreshes * (idle["refresh_write_units"] * bench.DDB_USD_PER_WRITE_UNIT
                      + idle["refresh_read_units"] * bench.DDB_USD_PER_READ_UNIT)),
        ("liveness: stream function",
         f"{stream_invocations:,.0f} invocations ({STREAM_POLLS_PER_SECOND}/s) x {idle['stream_billed_ms']:.0f} ms",
         lambda_usd(stream_invocations, idle["stream_billed_ms"])),
        ("sweeper", f"{sweeps:,.0f} sweeps x ({idle['sweep_billed_ms']:.0f} ms + {sweep_read_units:.1f} RRU)",
         lambda_usd(sweeps, idle["sweep_billed_ms"]) + sweeps * sweep_read_units * bench.DDB_USD_PER_READ_UNIT),
        ("SQS: Lambda's pollers",
         f"{sqs_consumers} queues x {SQS_POLLERS} pollers x 1 receive/{SQS_LONG_POLL_SECONDS} s = {sqs_polls:,.0f}",
         sqs_polls * bench.SQS_USD_PER_REQUEST),
        ("X-Ray traces", f"{XRAY_SAMPLED_SHARE:.0%} of {invocations:,.0f} invocations x $5.00/M",
         invocations * XRAY_SAMPLED_SHARE * XRAY_USD_PER_TRACE),
        ("CloudWatch Logs ingestion",
         f"{log_gb:,.1f} GB ({PLATFORM_LOG_BYTES} B/invocation + {idle['poll_log_bytes']:.0f} B app log/poll) "
         f"x ${LOGS_USD_PER_GB:.2f}", log_gb * LOGS_USD_PER_GB),
        ("fixed: KMS key, alarms", f"$1.00 + {alarms} alarms x $0.10 ({functions} functions)",
         KMS_KEY_USD_PER_MONTH + alarms * ALARM_USD_PER_MONTH),
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--figures", type=Path, help="`bench/requests.py --json` output (else it runs here)")
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--node-runs", type=int, default=100_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    bench.bootstrap()
    import warnings

    warnings.filterwarnings("ignore", message="The HMAC key is")
    per_run = per_run_figures(args.figures)
    idle = measure_idle()
    from chalice.app import SQSEventConfig

    import app as app_module
    from chalicelib import resources
    from fleetrun.agent.settings import DEFAULT_IDLE_POLL_MAX_SECONDS as POLL

    sqs_consumers = sum(isinstance(s, SQSEventConfig) for s in app_module.app.event_sources)
    functions = 1 + len(app_module.app.event_sources)
    alarms = len(resources.QUEUES) + 1 + 2 * functions + 2  # DLQs + stream DLQ, errors/throttles, iterator age, 5xx
    scenarios = {}
    for poll in sorted({1.0, 5.0, POLL, 60.0}):
        lines = month(args.nodes, args.node_runs, per_run, idle, poll, sqs_consumers, functions, alarms)
        scenarios[poll] = lines
    if args.json:
        print(json.dumps({"idle": idle, "per_run_usd_per_million": per_run["usd_per_million_node_runs"],
                          "months": {str(p): {name: round(usd, 2) for name, _, usd in lines}
                                     for p, lines in scenarios.items()}}))
        return 0
    print(f"fleetrun on AWS, one month: {args.nodes:,} nodes, {args.node_runs:,} node runs "
          f"(us-east-1 list prices as of {bench.PRICES_AS_OF}; free tiers ignored)")
    print(f"measured: {json.dumps({k: round(v, 3) for k, v in idle.items()})}")
    print(f"per node run (bench/requests.py): ${per_run['usd_per_million_node_runs']}/M node runs\n")
    lines = scenarios[POLL]
    width = max(len(name) for name, _, _ in lines)
    print(f"with idle agents polling every {POLL:g} s (the agent's default --idle-poll-max):")
    for name, arithmetic, usd in lines:
        print(f"  {name:<{width}}  {usd:>10,.2f}   {arithmetic}")
    print(f"  {'total':<{width}}  {sum(u for _, _, u in lines):>10,.2f}\n")
    print("total by idle poll interval: " + ", ".join(
        f"{p:g} s: ${sum(u for _, _, u in ls):,.0f}" for p, ls in scenarios.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
