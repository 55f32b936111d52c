"""Task types an admin defines, end to end: `fleetrun types` from a YAML file, `fleetrun agent
check` with a node token, and real agents running (or not finding) the steps of a defined type."""

from __future__ import annotations

import shutil
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest

from fleetrun.cli_fleet import DEMO_STEPS
from tests.e2e.stack import Stack, fleetrun

pytestmark = pytest.mark.e2e

_ECHO_STEP = "#!/bin/sh\necho \"$FLEETRUN_STEP of $FLEETRUN_TASK_TYPE\"\n"


def type_name() -> str:
    """A type name no other test of the session uses."""
    return f"cdn.purge-{uuid.uuid4().hex[:8]}"


def type_yaml(name: str, steps: str = "[purge, verify]") -> str:
    return textwrap.dedent(f"""\
        name: {name}
        description: Purge paths from the CDN cache.
        steps: {steps}
        parameters_schema:
          type: object
          properties:
            paths: {{type: array, items: {{type: string}}, minItems: 1}}
            credentials:
              type: object
              properties:
                password: {{type: string}}
          required: [paths]
        secret_parameters: [credentials.password]
        default_max_concurrency: 10
        """)


def steps_dir(root: Path, task_type: str, steps: dict[str, str], *, demo: bool = False) -> Path:
    """A steps directory with `steps` (name → script) for `task_type`, and the demo steps of the
    built-ins when `demo`."""
    if demo:
        shutil.copytree(DEMO_STEPS, root)
    for step, script in steps.items():
        path = root / task_type / step
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(script)
        path.chmod(0o755)
    return root


def define(stack: Stack, name: str, **fields: Any) -> None:
    body = {"name": name, "steps": ["purge", "verify"], "parameters_schema": {"type": "object"}, **fields}
    stack.admin.post("/v1/task-types", body)


def test_an_admin_defines_a_type_from_yaml_and_a_node_checks_its_steps(stack: Stack, tmp_path: Path) -> None:
    # GIVEN a definition in YAML
    env = stack.user_environment(tmp_path)
    name = type_name()
    definition = tmp_path / "cdn.yaml"
    definition.write_text(type_yaml(name))
    # WHEN an admin creates it with the CLI
    created = fleetrun("types", "create", "-f", str(definition), env=env)
    # THEN it is version 1, listed and shown
    assert created.returncode == 0, created.stderr
    assert f"{name} defined version 1" in created.stdout
    listed = fleetrun("types", env=env)
    assert listed.returncode == 0, listed.stderr
    # piped: the plain layout, every name whole
    assert name in [line.split()[0] for line in listed.stdout.splitlines()[1:]]
    shown = fleetrun("types", "show", name, env=env)
    assert "- credentials.password" in shown.stdout
    # AND a new version comes from the same file, changed
    definition.write_text(type_yaml(name, steps="[purge, verify, report]"))
    updated = fleetrun("types", "update", "-f", str(definition), env=env)
    assert f"{name} updated to version 2" in updated.stdout, updated.stderr

    # WHEN a node whose steps directory lacks `verify` and `report` checks it with its node token only
    node = stack.node_id("check")
    node_env = {**env, "FLEETRUN_NODE_TOKEN": stack.register(node)}
    del node_env["FLEETRUN_TOKEN"]
    partial = steps_dir(tmp_path / "partial", name, {"purge": _ECHO_STEP}, demo=True)
    checked = fleetrun("agent", "check", "--steps-dir", str(partial), env=node_env)
    # THEN it lists each step of the type with what it found, and fails
    assert checked.returncode == 1, checked.stderr
    rows = {tuple(line.split()[:3]) for line in checked.stdout.splitlines()}
    assert {(name, "purge", "ok"), (name, "verify", "missing"), (name, "report", "missing")} <= rows
    assert ("shell", "run", "ok") in rows
    assert max(len(line) for line in checked.stdout.splitlines()) <= 80

    # WHEN the directory has every step THEN the check passes
    steps_dir(partial, name, {"verify": _ECHO_STEP, "report": _ECHO_STEP})
    passed = fleetrun("agent", "check", "--steps-dir", str(partial), env=node_env)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "all " in passed.stdout

    # WHEN the type is retired THEN new tasks of it are refused
    retired = fleetrun("types", "retire", name, env=env)
    assert retired.returncode == 0, retired.stderr
    refused = fleetrun("submit", name, "-n", node, "--param", 'paths=["/a"]', env=env)
    assert refused.returncode == 1
    assert "unknown_task_type" in refused.stderr


def test_a_bad_definition_file_is_refused_with_the_path_of_each_problem(stack: Stack, tmp_path: Path) -> None:
    definition = tmp_path / "bad.yaml"
    definition.write_text(type_yaml(type_name(), steps="[purge, '..']").replace(
        "secret_parameters: [credentials.password]", "secret_parameters: [credentials.pin]"))
    done = fleetrun("types", "create", "-f", str(definition), env=stack.user_environment(tmp_path))
    assert done.returncode == 1
    assert "validation_error" in done.stderr
    assert "$.steps[1]:" in done.stderr


def test_a_missing_step_executable_fails_the_run_at_once(stack: Stack, tmp_path: Path) -> None:
    # GIVEN a defined type whose second step this agent does not have
    name = type_name()
    define(stack, name, max_attempts=3)
    node = stack.node_id("nostep")
    stack.start_agent(node, stack.register(node), tmp_path / "work",
                      steps_dir=steps_dir(tmp_path / "steps", name, {"purge": _ECHO_STEP}))
    # WHEN a task of the type runs on it
    task = stack.create_task({"type": name, "target_nodes": [node], "parameters": {}})
    # THEN the run fails on its first attempt, saying what is missing where
    assert stack.wait_task(task["task_id"])["status"] == "failed"
    run = stack.runs(task["task_id"])[node]
    assert (run["status"], run["attempt"]) == ("failed", 1)
    assert run["error_message"] == f"no executable for step verify of {name} on {node}"


def test_a_run_that_outlasts_its_types_run_timeout_is_stopped_and_fails(stack: Stack, tmp_path: Path) -> None:
    # GIVEN a type whose runs may take 2 s in all, and a step that takes 60
    name = type_name()
    define(stack, name, steps=["slow"], run_timeout_seconds=2)
    node = stack.node_id("slow")
    stack.start_agent(node, stack.register(node), tmp_path / "work",
                      steps_dir=steps_dir(tmp_path / "steps", name, {"slow": "#!/bin/sh\nsleep 60\n"}))
    # WHEN a task of it runs
    task = stack.create_task({"type": name, "target_nodes": [node], "parameters": {}})
    # THEN the agent stops the step and the run fails, saying why
    assert stack.wait_task(task["task_id"], timeout=30)["status"] == "failed"
    error = stack.runs(task["task_id"])[node]["error_message"]
    assert error.startswith("run timed out: its steps took longer than run_timeout_seconds (2 s) in step slow")
