"""The agent's command line (the same flags `fleetrun agent` takes)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from fleetrun.agent.settings import DEFAULT_IDLE_POLL_MAX_SECONDS, DEMO_STEPS_DIR


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fleetrun agent", description="Claim and execute this node's runs from a fleetrun API.",
    )
    parser.add_argument("--api", default=os.environ.get("FLEETRUN_URL"), required="FLEETRUN_URL" not in os.environ,
                        help="base URL of the API (env FLEETRUN_URL)")
    parser.add_argument("--node", required=True, help="this agent's node id")
    parser.add_argument("--token", default=os.environ.get("FLEETRUN_NODE_TOKEN"),
                        required="FLEETRUN_NODE_TOKEN" not in os.environ,
                        help="the node token from POST /v1/nodes (env FLEETRUN_NODE_TOKEN keeps it out of `ps`)")
    parser.add_argument("--steps-dir", type=Path, default=DEMO_STEPS_DIR,
                        help="where <type>/<step> executables live (default: the bundled demo steps)")
    parser.add_argument("--slots", type=int, default=1, help="runs executed at once (default 1)")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="per-run directories and the demo sandbox (default .fleetrun/agents/<node>)")
    parser.add_argument("--grace", type=float, default=20.0,
                        help="seconds running steps get to finish after SIGTERM (default 20)")
    parser.add_argument("--idle-poll-max", type=float,
                        default=float(os.environ.get("FLEETRUN_AGENT_IDLE_POLL_MAX", DEFAULT_IDLE_POLL_MAX_SECONDS)),
                        help="longest pause between claims while idle, in seconds: the pause starts at 1 s and "
                             "doubles while nothing comes (env FLEETRUN_AGENT_IDLE_POLL_MAX; default 30)")
    return parser


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)
