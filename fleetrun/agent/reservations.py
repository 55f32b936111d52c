"""Plans this agent holds: the `apply_pending` runs whose plan context is in its work directory.

After a plan phase succeeds, the run waits for confirmation and this agent keeps its work
directory (`<work dir>/runs/<task>/<node>`) and holds the reservation by heartbeating it
while idle. When the service confirms, the apply phase arrives through an ordinary claim
and runs in that same directory. When the directory disappears the agent reports
`plan-lost` at once (the service plans again); when a heartbeat is refused the plan is
stale, and its directory is removed so nothing can ever apply it.

Each reservation is also written to `<work dir>/reservations/<run id>.json` (never the
parameters), so an agent restarted with its work directory keeps holding its plans, and
one restarted without the plan directories reports them lost.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from fleetrun.agent.backoff import Backoff
from fleetrun.agent.journal import Journal, run_tag
from fleetrun.agent.protocol import AgentApi, LeaseLost, Rejected, Revoked, Unavailable

_MIN_INTERVAL = 1.0


@dataclass
class Held:
    run_id: str
    task_id: str
    node: str
    attempt: int
    work_dir: str
    #: monotonic time of the next heartbeat (not persisted)
    due: float = 0.0
    interval: float = _MIN_INTERVAL

    @property
    def tag(self) -> str:
        return run_tag(self.task_id, self.node)

    def record(self) -> dict[str, object]:
        return {k: v for k, v in asdict(self).items() if k not in ("due", "interval")}


class Reservations:
    def __init__(self, api: AgentApi, state_dir: Path, journal: Journal) -> None:
        self._api, self._dir, self._journal = api, state_dir, journal
        self._held: dict[str, Held] = {}
        self._lock = threading.Lock()
        self._backoff = Backoff()

    def load(self) -> int:
        """Take back the reservations a previous process of this agent held. Returns how many."""
        if not self._dir.is_dir():
            return 0
        for path in sorted(self._dir.glob("*.json")):
            try:
                held = Held(**json.loads(path.read_text()))
            except (OSError, ValueError, TypeError):
                self._journal.agent(f"unreadable reservation {path.name}; ignored")
                path.unlink(missing_ok=True)
                continue
            with self._lock:
                self._held[held.run_id] = held
            self._journal.run(held.tag, "plan", f"holding the plan of attempt {held.attempt} again after a restart")
        return len(self._held)

    def hold(self, run_id: str, task_id: str, node: str, attempt: int, work_dir: Path) -> None:
        """The plan of `run_id` succeeded: keep its directory and heartbeat the reservation."""
        held = Held(run_id, task_id, node, attempt, str(work_dir), due=time.monotonic())
        self._dir.mkdir(parents=True, exist_ok=True)
        path = self._path(run_id)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(held.record()))
        temporary.replace(path)
        with self._lock:
            self._held[run_id] = held
        self._journal.run(held.tag, "plan", f"holding the plan of attempt {attempt} until it is confirmed")

    def take(self, run_id: str) -> bool:
        """The apply phase was claimed: its lease takes over. Returns whether the plan was held."""
        with self._lock:
            held = self._held.pop(run_id, None)
        self._path(run_id).unlink(missing_ok=True)
        return held is not None

    def held(self) -> list[str]:
        with self._lock:
            return sorted(self._held)

    def tick(self) -> None:
        """Heartbeat what is due; report plans whose directory is gone. Called by the main loop."""
        now = time.monotonic()
        with self._lock:
            due = [h for h in self._held.values() if h.due <= now]
        for held in due:
            if not _has_plan_context(Path(held.work_dir)):
                self._report_lost(held)
            else:
                self._heartbeat(held)

    def _heartbeat(self, held: Held) -> None:
        try:
            answer = self._api.hold(held.run_id, held.attempt)
        except Revoked:  # the agent stops; one restarted with the node's new token holds the plan again
            return
        except Unavailable as error:
            held.due = time.monotonic() + min(self._backoff.next_delay(error.retry_after), held.interval)
            self._journal.run(held.tag, "plan", f"reservation heartbeat failed ({error}); retrying")
            return
        except (LeaseLost, Rejected) as error:
            self._drop(held, f"reservation lost ({error}); the stale plan is removed", remove=True)
            return
        self._backoff.reset()
        held.interval = max(_MIN_INTERVAL, (answer.lease_expires_at - time.time()) / 3)
        held.due = time.monotonic() + held.interval

    def _report_lost(self, held: Held) -> None:
        try:
            self._api.plan_lost(held.run_id, held.attempt)
        except Revoked:
            return
        except Unavailable as error:
            held.due = time.monotonic() + self._backoff.next_delay(error.retry_after)
            self._journal.run(held.tag, "plan", f"plan-lost report failed ({error}); retrying")
            return
        except (LeaseLost, Rejected) as error:
            self._drop(held, f"plan context gone and the reservation already ended ({error})", remove=False)
            return
        self._drop(held, "plan context gone: reported plan-lost, the service plans again", remove=False)

    def _drop(self, held: Held, why: str, *, remove: bool) -> None:
        with self._lock:
            self._held.pop(held.run_id, None)
        self._path(held.run_id).unlink(missing_ok=True)
        if remove:
            with contextlib.suppress(OSError):
                shutil.rmtree(held.work_dir)
        self._journal.run(held.tag, "plan", why)

    def _path(self, run_id: str) -> Path:
        return self._dir / f"{run_id.replace('/', '_')}.json"


def _has_plan_context(work_dir: Path) -> bool:
    """The plan context is the run's directory with something in it."""
    try:
        return work_dir.is_dir() and any(work_dir.iterdir())
    except OSError:
        return False
