"""Fixed API answers for CLI tests, and a way to run a `fleetrun` command against them on a
terminal of a given width (or a pipe) without a server."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from rich.console import Console

from fleetrun.cli import cli
from fleetrun.cli_session import PIPE_WIDTH, Session
from fleetrun.client import Api, ApiError

SNAPSHOTS = Path(__file__).parent / "snapshots"
#: a task created at the same moment as its neighbours: the ids share their first characters
BIG_TASK_ID = "01JDX4K2M8Q7R5T3V9W1Y6ZBIG"
LONG_ERROR = ("salt-minion: Connection refused while contacting salt-1:4506 after 3 tries; giving up on this host, "
              "check the firewall between the node and the master")


def task_types() -> list[dict[str, Any]]:
    """The built-in types as `GET /v1/task-types` described them when the snapshots were taken."""
    items: list[dict[str, Any]] = json.loads((SNAPSHOTS / "task_types.json").read_text())["items"]
    return items


def tasks() -> list[dict[str, Any]]:
    shapes = [("slurm.scale_up", "scale the gpu partition by three hosts", "partial_failure", 100, 2, 3),
              ("shell", "uptime everywhere", "running", 45, 9, 20), ("machine.reclaim", "", "completed", 100, 1, 1),
              ("iac.plan_apply", "prod network", "apply_pending", 50, 0, 1),
              ("config.release", "release 41", "failed", 100, 0, 200)]
    return [{"task_id": f"01JDX4K2M8Q7R5T3V9W1Y6Z{index:03d}", "type": kind, "name": name, "status": status,
             "progress": progress, "node_counts": {"succeeded": succeeded},
             "dispatch": {"target_node_count": targets}, "created_at": f"2026-11-22T10:0{index}:00.123Z"}
            for index, (kind, name, status, progress, succeeded, targets) in enumerate(shapes)]


def big_task_runs() -> list[dict[str, Any]]:
    """200 nodes, listed by the API in text order: 3 failed, 12 running, 185 pending."""
    runs = []
    for number in sorted(range(1, 201), key=str):
        status = "failed" if number in (7, 42, 150) else "running" if number <= 13 else "pending"
        started = status != "pending"
        runs.append({"task_id": BIG_TASK_ID, "node": f"ghost-{number}", "status": status, "attempt": 1,
                     "progress": 40 if status == "running" else 0, "step": "deploy-minion" if started else None,
                     "started_at": "2026-11-22T10:00:01Z" if started else None, "completed_at": None,
                     "runner": None, "error_message": LONG_ERROR if status == "failed" else None})
    return runs


def big_task() -> dict[str, Any]:
    return {"task_id": BIG_TASK_ID, "type": "slurm.scale_up", "name": "grow the gpu partition", "owner": "alice",
            "status": "running", "stage": "deploy-minion", "progress": 12, "attempt": 1,
            "node_counts": {"pending": 185, "running": 12, "succeeded": 0, "failed": 3},
            "dispatch": {"triggered": True, "target_node_count": 200, "created_count": 200, "skipped_count": 0},
            "priority": 5, "max_concurrency": 20, "max_errors": "5%", "tags": ["gpu"], "runner_node": None,
            "concurrency_key": None,
            "parameters": {"ssh_user": "root", "salt_master": "salt-1", "partition": "gpu", "password": "***"},
            "created_at": "2026-11-22T10:00:00.000Z", "started_at": "2026-11-22T10:00:01.000Z",
            "completed_at": None, "error_message": None}


def nodes() -> list[dict[str, Any]]:
    return [{"node_id": f"edge-{number}", "status": "idle" if number % 3 else "allocated", "slots": 2,
             "labels": {"pool": "cdn", "region": "eu-west-1", "rack": f"r{number}"},
             "allocation": {"user": "alice"} if number % 3 == 0 else None,
             "last_seen_at": "2026-11-22T10:00:00Z", "created_at": "2026-11-01T09:00:00Z"}
            for number in sorted(range(1, 13), key=str)]


class CannedApi(Api):
    """Answers GET from `answers` (by path; a list is served as one page of items); a POST to a
    path in `refusals` raises that ApiError."""

    def __init__(self, answers: dict[str, Any], refusals: dict[str, ApiError] | None = None) -> None:
        super().__init__("http://fleetrun.test", "token")
        self.answers, self.refusals = answers, refusals or {}
        self.sent: list[tuple[str, str, Any]] = []

    def request(self, method: str, path: str, body: Any = None, **_: Any) -> tuple[int, Any, dict[str, str]]:
        self.sent.append((method, path, body))
        if path in self.refusals:
            raise self.refusals[path]
        answer = self.answers[path]
        return 200, {"items": answer, "next_cursor": None} if isinstance(answer, list) else answer, {}


@dataclass
class Printed:
    exit_code: int
    out: str
    err: str


def run(api: Api, *args: str, width: int | None) -> Printed:
    """`fleetrun ARGS` on a terminal `width` columns wide (40 lines), or piped when `width` is None."""
    out, err = io.StringIO(), io.StringIO()
    screen = Console(file=out, color_system=None, force_terminal=True, width=width, height=40) if width \
        else Console(file=out, color_system=None, width=PIPE_WIDTH)  # what make_console gives a pipe
    session = Session(out=screen, err=Console(file=err, color_system=None, width=PIPE_WIDTH), client=api)
    done = CliRunner().invoke(cli, list(args), obj=session, catch_exceptions=False)
    return Printed(done.exit_code, out.getvalue() + done.stdout, err.getvalue())


def lines(text: str) -> list[str]:
    return [line.rstrip() for line in text.splitlines()]
