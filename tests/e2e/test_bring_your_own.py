"""Issue 14's acceptance, end to end with real agent processes and the local runtime: an admin
defines a task type from a YAML file with the CLI, agents labelled `pool=cdn` run it from a
directory of shell scripts, an operator targets it by label, a node added to the group later is
backfilled, and the secret parameter is seen by the agents' claims only."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from chalicelib.auth import mint_token
from fleetrun.client import Api, ApiError
from tests.e2e.stack import JWT_SECRET, Stack, fleetrun
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e

SECRET = "cdn-api-token-5b1f0e"  # a test value the whole stack must keep out of sight

CDN_PURGE = """\
name: cdn.purge
description: Purge paths from the CDN cache, then check they are gone.
steps: [purge, verify]
parameters_schema:
  type: object
  properties:
    paths:
      type: array
      items: {type: string, pattern: "^/"}
      minItems: 1
    api_token: {type: string, minLength: 8}
  required: [paths, api_token]
  additionalProperties: false
secret_parameters: [api_token]
default_max_concurrency: 10
max_attempts: 2
"""

#: each step echoes the secret every way an agent can send it back: output, an event, an event's data
_PURGE = """#!/bin/sh
echo "purging $FLEETRUN_PARAM_PATHS with token $FLEETRUN_PARAM_API_TOKEN"
echo "::event info purge token $FLEETRUN_PARAM_API_TOKEN"
echo "::progress 50 purged"
echo "$FLEETRUN_TARGET_NODE" >> "$PURGED_LOG"
"""
_VERIFY = """#!/bin/sh
cat  # the parameters on stdin, secret included
echo "::progress 100 verified"
"""


def _steps_dir(root: Path) -> Path:
    for step, script in (("purge", _PURGE), ("verify", _VERIFY)):
        path = root / "cdn.purge" / step
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(script)
        path.chmod(0o755)
    return root


def _start_cdn_agent(stack: Stack, node: str, steps: Path, work: Path, purged: Path) -> None:
    stack.start_agent(node, stack.register(node, {"pool": "cdn", "site": node}), work / node,
                      {"PURGED_LOG": str(purged)}, steps_dir=steps)


def test_a_defined_type_runs_on_a_label_group_and_reaches_a_node_added_later(
        stack: Stack, env: dict[str, str], tmp_path: Path) -> None:
    # GIVEN an admin who defines cdn.purge from a YAML file with the CLI
    definition = tmp_path / "cdn.yaml"
    definition.write_text(CDN_PURGE)
    created = fleetrun("types", "create", "-f", str(definition), env=env)
    assert created.returncode == 0, created.stdout + created.stderr
    assert stack.admin.get("/v1/task-types/cdn.purge")["version"] >= 1
    # AND three agents labelled pool=cdn whose steps directory holds the type's shell scripts
    steps, purged = _steps_dir(tmp_path / "steps"), tmp_path / "purged.log"
    group = [stack.node_id("cdn") for _ in range(3)]
    for node in group:
        _start_cdn_agent(stack, node, steps, tmp_path, purged)
    operator = Api(stack.url, mint_token("olivia", ["operator"], JWT_SECRET), timeout=10)

    # WHEN an operator submits it to the group by label
    parameters = {"paths": ["/img/*"], "api_token": SECRET}
    task = operator.post("/v1/tasks", {"type": "cdn.purge", "target_selector": {"labels": {"pool": "cdn"}},
                                       "parameters": parameters, "name": "purge images"})

    # THEN the task targets the group's nodes (no other test of this module labels a node pool=cdn)
    assert sorted(task["target_nodes"]) == sorted(group)
    assert task["target_selector"] == {"labels": {"pool": "cdn"}}
    assert task["warnings"] == []
    done = stack.wait_task(task["task_id"], timeout=60)
    assert done["status"] == "completed", done
    assert sorted(purged.read_text().split()) == sorted(group)

    # WHEN a fourth node joins the group afterwards and the release is dispatched to the selector
    late = stack.node_id("cdn-late")
    _start_cdn_agent(stack, late, steps, tmp_path, purged)
    answer = operator.post(f"/v1/tasks/{task['task_id']}/dispatch", {"selector": True})

    # THEN only the new node gets a run, and it runs
    counts = answer["dispatch"]
    assert (counts["created_count"], counts["skipped_count"]) == (1, 3), counts
    stack.wait_run(task["task_id"], late, ["succeeded"], timeout=60)
    assert stack.wait_task(task["task_id"], timeout=60)["status"] == "completed"
    assert sorted(purged.read_text().split()) == sorted([*group, late])

    # AND the secret appears nowhere but in the claims: no answer, event, output or stored byte
    _assert_secret_nowhere(stack, operator, task["task_id"], [*group, late])


def _assert_secret_nowhere(stack: Stack, operator: Api, task_id: str, nodes: list[str]) -> None:
    seen = {
        "task": operator.get(f"/v1/tasks/{task_id}"),
        "runs": operator.pages(f"/v1/tasks/{task_id}/nodes"),
        "events": operator.pages(f"/v1/tasks/{task_id}/events"),
        "outputs": [operator.get(f"/v1/tasks/{task_id}/nodes/{node}/output") for node in nodes],
    }
    assert any("purging" in output["data"] for output in seen["outputs"]), seen["outputs"]
    for name, answer in seen.items():
        assert SECRET not in json.dumps(answer), f"the secret is in the {name} answer"
    stored = [path for path in stack.data_dir.rglob("*") if path.is_file() and _holds(path, SECRET.encode())]
    assert stored == [], f"the secret is stored in clear in {stored}"


def _holds(path: Path, needle: bytes) -> bool:
    try:
        return needle in path.read_bytes()
    except OSError:  # a file the runtime is rotating away
        return False


def test_a_running_task_keeps_the_version_it_was_created_with(
        stack: Stack, env: dict[str, str], tmp_path: Path) -> None:
    # GIVEN a defined type whose version 1 has a step that waits for a file before it ends
    name = f"slow.check-{os.getpid()}"
    v1 = {"name": name, "description": "v1", "steps": ["wait"],
          "parameters_schema": {"type": "object", "properties": {"level": {"type": "integer"}},
                                "required": ["level"], "additionalProperties": False}}
    stack.admin.post("/v1/task-types", v1)
    release = tmp_path / "release"
    steps = tmp_path / "steps"
    (steps / name).mkdir(parents=True)
    for step, script in (("wait", f'#!/bin/sh\nwhile [ ! -e "{release}" ]; do sleep 0.1; done\necho v1-step\n'),
                         ("wait2", "#!/bin/sh\necho v2-step\n")):
        (steps / name / step).write_text(script)
        (steps / name / step).chmod(0o755)
    node = stack.node_id("pinned")
    stack.start_agent(node, stack.register(node), tmp_path / "work", steps_dir=steps)
    task_id = stack.create_task({"type": name, "target_nodes": [node], "parameters": {"level": 1}})["task_id"]
    stack.wait_run(task_id, node, ["running"])

    # WHEN version 2 changes the steps and the schema while the task runs
    v2 = {**v1, "description": "v2", "steps": ["wait2"],
          "parameters_schema": {"type": "object", "properties": {"mode": {"type": "string"}},
                                "required": ["mode"], "additionalProperties": False}}
    assert stack.admin.request("PUT", f"/v1/task-types/{name}", v2)[1]["version"] == 2
    release.touch()

    # THEN the running task ends on version 1's steps and schema
    done = stack.wait_task(task_id)
    assert (done["status"], done["type_version"]) == ("completed", 1), done
    assert wait_for(lambda: "v1-step" in stack.admin.get(f"/v1/tasks/{task_id}/nodes/{node}/output")["data"],
                    10, "v1's step output")
    # AND a new task is checked against version 2's schema
    with pytest.raises(ApiError) as refused:
        stack.create_task({"type": name, "target_nodes": [node], "parameters": {"level": 1}})
    assert (refused.value.status, refused.value.code) == (400, "validation_error")
