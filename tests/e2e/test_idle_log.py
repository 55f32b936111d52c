"""The stack's log at rest (issue 15): `make run` with its three demo agents, idle for a minute,
keeps the banner on screen. Idle agents claim every 2 s; neither their claims nor an idle sweep
is a line at the default level."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from chalicelib.clock import parse_rfc3339
from tests.e2e.runtime_process import Processes, RuntimeProcess
from tests.waiting import wait_for

#: the banner's last line (fleetrun/local/runtime.py)
BANNER_END = "Ctrl-C stops everything."
IDLE_SECONDS = 60
MAX_LINES = 20


@pytest.fixture
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RuntimeProcess]:
    # `make run`'s settings (sweep every 10 s, three demo agents), on free ports
    processes = Processes()
    started = RuntimeProcess(tmp_path_factory.mktemp("idle") / "data", processes,
                             {"FLEETRUN_DEMO_AGENTS": "3", "FLEETRUN_SWEEP_SECONDS": "10"})
    started.start()
    yield started
    started.stop()
    processes.close()


def _after_banner(log: str) -> list[str] | None:
    lines = log.splitlines()
    ends = [n for n, line in enumerate(lines) if line.endswith(BANNER_END)]
    return lines[ends[0] + 1:] if ends else None


@pytest.mark.slow
def test_a_minute_of_an_idle_stack_prints_fewer_than_20_lines_after_the_banner(runtime: RuntimeProcess) -> None:
    # GIVEN the stack up, its banner printed
    wait_for(lambda: _after_banner(runtime.log()) is not None, 30, "the banner")
    already = len(_after_banner(runtime.log()) or [])
    # WHEN it idles for a minute
    time.sleep(IDLE_SECONDS)
    # THEN the agents were polling all along (a dead agent is quiet too), and the log barely grew
    nodes = {node["node_id"]: node for node in runtime.admin.pages("/v1/nodes")}
    seen = [parse_rfc3339(nodes[f"demo-{n}"]["last_seen_at"]) for n in (1, 2, 3)]
    assert min(seen) > time.time() - 40, "a demo agent stopped claiming (last_seen_at is refreshed every 30 s)"
    after = _after_banner(runtime.log()) or []
    print(f"{len(after)} lines after the banner in {IDLE_SECONDS} s ({already} of them at once):", *after, sep="\n")
    assert len(after) < MAX_LINES
    assert not [line for line in after if "/claim" in line or "sweep done" in line]
