"""Runs that can't hang, through the local runtime (a sweep every second): a task on a runner
that is not a registered node is accepted with a warning, and its run ends `timed_out` with the
reason within `claim_timeout_seconds` + one sweep + 5 s; a registered node whose agent never
came is named offline. Both tasks start together, so the module waits about 35 s once."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import pytest

from tests.e2e.stack import SWEEP_SECONDS, Stack
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e

CLAIM_TIMEOUT = 30
OFFLINE_SECONDS = 5


@pytest.fixture(scope="module")
def stack_env() -> dict[str, str]:
    return {"FLEETRUN_NODE_OFFLINE_SECONDS": str(OFFLINE_SECONDS)}


@dataclass(frozen=True)
class Created:
    answer: dict[str, Any]
    node: str
    #: time.monotonic() when the create answer came
    at: float


@pytest.fixture(scope="module")
def tasks(stack: Stack) -> dict[str, Created]:
    """A task on a node nobody registered, and one on a registered node whose agent never runs."""
    unknown, silent = stack.node_id("edge-unknown"), stack.node_id("edge-silent")
    stack.register(silent)
    created = {}
    for name, node in (("unknown", unknown), ("silent", silent)):
        answer = stack.create_task({"type": "shell", "target_nodes": [node], "parameters": {"command": ["true"]},
                                    "claim_timeout_seconds": CLAIM_TIMEOUT})
        created[name] = Created(answer, node, time.monotonic())
    return created


def ended_run(stack: Stack, created: Created) -> dict[str, Any]:
    """The task's run once it is timed out, waited for no longer than the acceptance deadline."""
    deadline = created.at + CLAIM_TIMEOUT + SWEEP_SECONDS + 5
    task_id = created.answer["task_id"]

    def timed_out() -> dict[str, Any] | None:
        run = stack.runs(task_id).get(created.node)
        return run if run is not None and run["status"] == "timed_out" else None

    return wait_for(timed_out, max(0.0, deadline - time.monotonic()), f"the run of {task_id} to time out",
                    interval=0.5)


def test_a_task_on_an_unregistered_runner_is_warned_about_and_ends_with_the_reason(stack, tasks):
    created = tasks["unknown"]
    # the create answer carried the warning (the task was created all the same)
    (warning,) = created.answer["warnings"]
    assert (warning["code"], warning["nodes"], warning["count"]) == ("unknown_runners", [created.node], 1)
    # the run ends timed_out in time, saying why; the task, whose only run timed out, fails
    run = ended_run(stack, created)
    assert f"runner {created.node} is not a registered node" in run["error_message"]
    task = stack.wait_task(created.answer["task_id"], timeout=10)
    assert task["status"] == "failed"
    assert task["node_counts"]["timed_out"] == 1


def test_a_registered_node_whose_agent_never_came_is_named_offline(stack, tasks):
    created = tasks["silent"]
    assert created.answer["warnings"] == []
    run = ended_run(stack, created)
    assert run["error_message"].startswith(f"runner {created.node} offline since 20"), run["error_message"]
