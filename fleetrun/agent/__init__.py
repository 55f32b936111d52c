"""The fleetrun node agent: claims runs for its node, executes their steps, reports back.

`fleetrun agent --api URL --node ID --token T --steps-dir DIR [--slots K] [--work-dir DIR] [--grace S]
[--idle-poll-max S]`
(also `python -m fleetrun.agent ...`). See API.md "Agents and nodes" for the protocol and
`demo_steps/README.md` for the demo steps shipped with it.
"""

from __future__ import annotations

from pathlib import Path

from fleetrun.agent.arguments import parse_arguments
from fleetrun.agent.journal import Journal
from fleetrun.agent.loop import Agent
from fleetrun.agent.settings import DEFAULT_IDLE_POLL_MAX_SECONDS, DEMO_STEPS_DIR, AgentSettings

__all__ = ["DEMO_STEPS_DIR", "main", "run"]


def run(api_url: str, node: str, token: str, steps_dir: Path, *, slots: int = 1, work_dir: Path | None = None,
        grace: float = 20.0, idle_poll_max: float = DEFAULT_IDLE_POLL_MAX_SECONDS) -> int:
    """Serve `node` until SIGTERM/SIGINT; returns the exit status (0 after a clean stop, 2 on bad settings,
    3 once the service refused the node's token: rotated, or the node deregistered)."""
    journal = Journal()
    steps_dir = Path(steps_dir).resolve()
    if not steps_dir.is_dir():
        journal.agent(f"steps directory {steps_dir} does not exist")
        return 2
    if slots < 1 or grace < 0 or idle_poll_max < 1:
        journal.agent("--slots and --idle-poll-max must be at least 1 and --grace at least 0")
        return 2
    work_dir = Path(work_dir if work_dir is not None else Path(".fleetrun") / "agents" / node).resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    settings = AgentSettings(api_url=api_url.rstrip("/"), node=node, token=token, steps_dir=steps_dir,
                             work_dir=work_dir, slots=slots, grace=grace, idle_poll_max=idle_poll_max)
    return Agent(settings, journal).serve()


def main(argv: list[str] | None = None) -> int:
    """`python -m fleetrun.agent --api URL --node ID --token T --steps-dir DIR ...`."""
    args = parse_arguments(argv)
    return run(args.api, args.node, args.token, args.steps_dir, slots=args.slots, work_dir=args.work_dir,
               grace=args.grace, idle_poll_max=args.idle_poll_max)
