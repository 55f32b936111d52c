"""The demo steps as the agent runs them: real processes on a sandbox directory (no API needed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.stack import DEMO_STEPS
from tests.processes import clean_environment

TASK_TYPES = {
    "shell": ["run"],
    "slurm.scale_up": ["deploy-minion", "register-node", "slurm-scale"],
    "config.release": ["apply_config"],
    "iac.plan_apply": ["plan", "apply"],
    "machine.reclaim": ["stop-processes", "clean-home", "remove-containers", "reset-ssh-keys"],
}
ALL_STEPS = [(task_type, step) for task_type, steps in TASK_TYPES.items() for step in steps]


def run_step(task_type: str, step: str, parameters: dict[str, Any], root: Path, *, target: str = "edge-1",
             attempt: int = 1, **env: str) -> subprocess.CompletedProcess[str]:
    work_dir = root / "runs" / "task-1" / target
    work_dir.mkdir(parents=True, exist_ok=True)
    context = {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "FLEETRUN_TARGET_NODE": target, "FLEETRUN_NODE": target, "FLEETRUN_STEP": step, "FLEETRUN_TASK_ID": "task-1",
        "FLEETRUN_ATTEMPT": str(attempt), "FLEETRUN_SANDBOX": str(root / "sandbox"),
        "FLEETRUN_WORK_DIR": str(work_dir), "FLEETRUN_DEMO_STEP_SECONDS": "0", **env,
    }
    return subprocess.run([str(DEMO_STEPS / task_type / step)], input=json.dumps(parameters), text=True,
                          capture_output=True, env=clean_environment(**context), cwd=work_dir, timeout=30, check=False)


@pytest.mark.parametrize(("task_type", "step"), ALL_STEPS)
def test_every_demo_step_is_executable_and_fails_on_request(task_type: str, step: str, tmp_path: Path) -> None:
    assert os.access(DEMO_STEPS / task_type / step, os.X_OK)
    # GIVEN a node listed in the sandbox's fail-nodes file WHEN any step runs for it THEN it fails
    (tmp_path / "sandbox").mkdir()
    (tmp_path / "sandbox" / "fail-nodes").write_text("# broken on purpose\nedge-9\n")
    failed = run_step(task_type, step, {"command": ["true"], "user": "alice"}, tmp_path, target="edge-9")
    assert (failed.returncode, failed.stdout) == (1, "demo failure requested for edge-9\n")
    # AND the environment switch does the same
    failed = run_step(task_type, step, {}, tmp_path, target="edge-3", FLEETRUN_DEMO_FAIL_NODES="edge-2, edge-3")
    assert (failed.returncode, failed.stdout) == (1, "demo failure requested for edge-3\n")


def test_shell_runs_the_command_in_the_sandbox_with_its_exit_status(tmp_path: Path) -> None:
    done = run_step("shell", "run", {"command": ["sh", "-c", "pwd; echo oops >&2; exit 4"]}, tmp_path)
    assert done.returncode == 4
    assert done.stdout.strip() == str((tmp_path / "sandbox").resolve())
    missing = run_step("shell", "run", {"command": ["no-such-command-x"]}, tmp_path)
    assert (missing.returncode, missing.stdout) == (127, "command not found: no-such-command-x\n")


def test_slurm_scale_up_refuses_a_partition_name_that_leaves_the_sandbox(tmp_path: Path) -> None:
    parameters = {"ssh_user": "root", "salt_master": "salt-1", "partition": ".."}
    assert run_step("slurm.scale_up", "deploy-minion", parameters, tmp_path).returncode == 0
    assert run_step("slurm.scale_up", "register-node", parameters, tmp_path).returncode == 0
    refused = run_step("slurm.scale_up", "slurm-scale", parameters, tmp_path)
    assert (refused.returncode, refused.stdout) == (2, "refusing unsafe name '..'\n")
    assert sorted(p.name for p in (tmp_path / "sandbox" / "slurm").iterdir()) == ["nodes"]


def test_config_release_writes_the_versioned_config(tmp_path: Path) -> None:
    done = run_step("config.release", "apply_config", {"website_id": 41, "config_version": "v7"}, tmp_path)
    assert done.returncode == 0, done.stdout
    config = json.loads((tmp_path / "sandbox" / "cdn" / "41" / "config-v7.json").read_text())
    assert (config["website_id"], config["node"]) == (41, "edge-1")
    assert "::progress 100 website 41 serves config v7" in done.stdout


def test_iac_apply_refuses_without_a_plan_and_applies_the_plan_of_its_work_dir(tmp_path: Path) -> None:
    parameters = {"workspace": "prod", "source": "git::infra", "secret_variables": {"token": "s3cr3t"}}
    refused = run_step("iac.plan_apply", "apply", parameters, tmp_path)
    assert (refused.returncode, refused.stdout) == (3, "no plan file\n")

    assert run_step("iac.plan_apply", "plan", parameters, tmp_path).returncode == 0
    applied = run_step("iac.plan_apply", "apply", parameters, tmp_path, attempt=2)

    assert applied.returncode == 0, applied.stdout
    work_dir = tmp_path / "runs" / "task-1" / "edge-1"
    plan = json.loads((work_dir / "plan.json").read_text())
    assert "s3cr3t" not in (work_dir / "plan.json").read_text()
    assert json.loads((work_dir / "applied.json").read_text())["plan_hash"] == plan["hash"]
    log = (work_dir / "steps.log").read_text().splitlines()
    assert [line.split()[0:2] for line in log] == [["apply-refused", "1"], ["plan", "1"], ["apply", "2"]]
    assert log[2].endswith(f"plan={plan['hash']}")
    # the agent-wide log outlives the run's directory and says the same
    shared = (tmp_path / "sandbox" / "iac.log").read_text().splitlines()
    assert [line.split()[0:2] for line in shared] == [["apply-refused", "1"], ["plan", "1"], ["apply", "2"]]


def test_machine_reclaim_empties_what_the_user_left_in_the_sandbox(tmp_path: Path) -> None:
    # GIVEN a sandbox machine used by alice (and a container of bob's)
    sandbox = tmp_path / "sandbox"
    (sandbox / "proc" / "alice").mkdir(parents=True)
    (sandbox / "proc" / "alice" / "train.pid").write_text("4242\n")
    (sandbox / "home" / "alice" / ".ssh").mkdir(parents=True)
    (sandbox / "home" / "alice" / ".ssh" / "authorized_keys").write_text("ssh-ed25519 AAAA alice\n")
    (sandbox / "home" / "alice" / "data").mkdir()
    (sandbox / "home" / "alice" / "data" / "weights.bin").write_bytes(b"\0" * 10)
    (sandbox / "containers").mkdir()
    (sandbox / "containers" / "jupyter.json").write_text(json.dumps({"user": "alice"}))
    (sandbox / "containers" / "db.json").write_text(json.dumps({"user": "bob"}))

    # WHEN every reclaim step runs for alice
    for step in TASK_TYPES["machine.reclaim"]:
        done = run_step("machine.reclaim", step, {"user": "alice"}, tmp_path)
        assert done.returncode == 0, (step, done.stdout)

    # THEN her processes, files, containers and keys are gone; bob's container stays
    assert list((sandbox / "proc" / "alice").iterdir()) == []
    assert [p.name for p in (sandbox / "home" / "alice").iterdir()] == [".ssh"]
    assert (sandbox / "home" / "alice" / ".ssh" / "authorized_keys").read_text() == ""
    assert [p.name for p in (sandbox / "containers").iterdir()] == ["db.json"]
