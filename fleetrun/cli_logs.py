"""`fleetrun logs TASK NODE`: a node run's output, whole, optionally followed while it runs.

Reads `GET /v1/tasks/{task}/nodes/{node}/output` page by page from offset 0. `--follow` keeps
reading from `next_offset` until the answer says `complete` (the attempt is over and everything
it sent has been read): pages are ordered by offset, so nothing is printed twice or out of order.
While no new output comes it asks again every `FOLLOW_POLL_SECONDS`; while output flows, at once.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click

from fleetrun.cli_session import Session, pass_session
from fleetrun.client import Api

#: how soon `--follow` asks again when the last page brought nothing new
FOLLOW_POLL_SECONDS = 0.5


@click.command("logs")
@click.argument("task_id")
@click.argument("node")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new output until the attempt ends.")
@click.option("--attempt", type=click.IntRange(min=1), help="Which attempt (default: the run's current one).")
@click.option("--json", "as_json", is_flag=True, help="Each page the API answers as one JSON object per line.")
@pass_session
def logs(session: Session, task_id: str, node: str, follow: bool, attempt: int | None, as_json: bool) -> None:
    """Print the output of NODE's run of TASK_ID (every step of the attempt, in order)."""
    api = session.api()
    offset = 0
    while True:
        page = read_page(api, task_id, node, attempt, offset)
        attempt = int(page["attempt"])  # the current attempt stays the one followed
        if as_json:
            click.echo(json.dumps(page, ensure_ascii=False))
        elif page["data"]:
            sys.stdout.write(page["data"])
            sys.stdout.flush()
        moved, offset = page["next_offset"] != offset, int(page["next_offset"])
        if page["complete"] or (not follow and not moved):
            return
        if not moved:
            time.sleep(FOLLOW_POLL_SECONDS)


def read_page(api: Api, task_id: str, node: str, attempt: int | None, offset: int) -> dict[str, Any]:
    """One page of the output from `offset`. Raises ApiError (404: no such task, node or attempt)."""
    page: dict[str, Any] = api.get(f"/v1/tasks/{task_id}/nodes/{node}/output", attempt=attempt, offset=offset)
    return page


COMMANDS = (logs,)
