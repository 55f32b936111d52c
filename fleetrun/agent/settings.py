"""What one agent process is configured with, and the fixed limits of the agent protocol."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: the safe demo steps shipped with the agent (`demo_steps/README.md`)
DEMO_STEPS_DIR = Path(__file__).resolve().parent / "demo_steps"
#: API.md: a run's output is at most 64 KiB; the agent keeps the last 64 KiB
OUTPUT_CAP_BYTES = 64 * 1024
#: API.md: an events call carries 1 to 100 events
MAX_EVENTS_PER_CALL = 100
#: the claim route accepts `max` up to 50
MAX_CLAIM = 50
#: a step without `timeout_seconds` may run this long
DEFAULT_STEP_TIMEOUT_SECONDS = 3600.0
#: SIGTERM to a step's process group, then SIGKILL this much later
KILL_GRACE_SECONDS = 5.0
#: how soon an agent asks for work again after an empty claim; doubles while it stays idle
IDLE_POLL_SECONDS = 1.0
#: the longest pause between an idle agent's claims (`--idle-poll-max`): the delay before new work
#: reaches an idle node, traded against the requests a fleet of idle agents costs (README "Cost")
DEFAULT_IDLE_POLL_MAX_SECONDS = 30.0
#: how long an agent that stops keeps trying to report its runs after the grace period
FINAL_REPORT_SECONDS = 10.0
#: the agent's HTTP timeout: a hung API must not stall a run's monitoring for long
REQUEST_TIMEOUT_SECONDS = 10.0
#: the agent's exit status when the service refused its token (rotated, or the node deregistered)
EXIT_TOKEN_REFUSED = 3


@dataclass(frozen=True)
class AgentSettings:
    api_url: str
    node: str
    token: str
    steps_dir: Path
    work_dir: Path
    slots: int = 1
    grace: float = 20.0
    idle_poll_max: float = DEFAULT_IDLE_POLL_MAX_SECONDS

    @property
    def sandbox(self) -> Path:
        """The fake machine the demo steps operate on (shared by every run of this agent)."""
        return self.work_dir / "sandbox"
