"""CLI tables against the local runtime: on an 80-column terminal (a pseudo-terminal) and piped."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys

import pytest

from tests.e2e.stack import REPO, Stack, fleetrun
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e

_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def on_terminal(*args: str, env: dict[str, str], columns: int) -> list[str]:
    """`fleetrun ARGS` with its stdout on a pseudo-terminal `columns` wide: the lines a user sees."""
    leader, follower = pty.openpty()
    try:
        done = subprocess.run([sys.executable, "-m", "fleetrun", *args], env={**env, "COLUMNS": str(columns)},
                              stdout=follower, stderr=subprocess.PIPE, timeout=30, check=False, cwd=REPO)
        os.close(follower)
        assert done.returncode == 0, done.stderr
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal is closed and drained
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(leader)
    text = _ESCAPES.sub("", b"".join(chunks).decode())
    return [line.rstrip() for line in text.replace("\r\n", "\n").splitlines()]


def test_the_tours_first_command_fits_80_columns_with_every_type_whole(env: dict[str, str]) -> None:
    shown = on_terminal("task-types", env=env, columns=80)
    assert max(len(line) for line in shown) <= 80
    names = {line.split()[0] for line in shown[1:] if line and not line.startswith(" ")}
    assert {"shell", "slurm.scale_up", "iac.plan_apply", "machine.reclaim"} <= names
    assert "ssh_user*," in " ".join(shown).split()  # parameters wrap, never cut


def test_show_piped_summarises_then_lists_nodes_in_natural_order(stack: Stack, env: dict[str, str]) -> None:
    # GIVEN a task on 12 nodes without agents: every run waits
    prefix = stack.node_id("ghost")
    nodes = [f"{prefix}-{number}" for number in range(1, 13)]
    submitted = fleetrun("submit", "shell", *(f"-n{node}" for node in nodes), "--param", 'command=["true"]', env=env)
    assert submitted.returncode == 0, submitted.stderr
    task_id = submitted.stdout.split()[0]
    try:
        # (its runs are made and counted after the answer: the dispatch job, then the stream)
        wait_for(lambda: stack.task(task_id)["node_counts"].get("pending") == len(nodes), 30,
                 "the task's 12 runs to be made and counted")
        # WHEN it is shown into a pipe
        shown = fleetrun("show", task_id, env=env)
        # THEN the summary comes first, then the plain table in natural order, every id whole
        assert shown.returncode == 0, shown.stderr
        lines = [line.rstrip() for line in shown.stdout.splitlines()]
        assert "12 nodes: 12 pending" in lines
        listed = [line.split("  ")[0] for line in lines if line.startswith(prefix)]
        assert listed == nodes
        assert f"task             {task_id}" in lines
    finally:
        assert fleetrun("cancel", task_id, env=env).returncode == 0


def test_a_text_where_the_type_wants_an_array_is_answered_with_the_working_form(env: dict[str, str]) -> None:
    done = fleetrun("submit", "shell", "-n", "nowhere", "--param", "command=uptime", env=env)
    assert done.returncode == 1
    assert "$.parameters.command: must be of type array" in done.stderr
    assert "hint: --param 'command=[\"uptime\"]' (a JSON array)" in done.stderr
