"""The sweeper's log line (issue 15): a pass that changed nothing is a DEBUG line, one that did
something is an INFO line naming what."""

from __future__ import annotations

import json
from typing import Any

from chalicelib import clock, config
from chalicelib.services import sweeper
from tests.harness import Fleet


def _sweep_lines(out: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("message") == "sweep done"]


def test_an_idle_sweep_logs_nothing_at_info(fleet: Fleet, capsys):
    # GIVEN a fleet with an agent that just claimed nothing
    fleet.register("quiet-1")
    assert fleet.claim("quiet-1") == []
    capsys.readouterr()
    # WHEN the sweeper passes with nothing to do
    report = sweeper.sweep()
    # THEN it says nothing at INFO (the local runtime sweeps every 10 s)
    assert not report.changed()
    assert _sweep_lines(capsys.readouterr().out) == []


def test_a_sweep_that_changed_something_is_an_info_line(fleet: Fleet, capsys):
    # GIVEN an agent that fell silent
    fleet.register("silent-1")
    assert fleet.claim("silent-1") == []
    capsys.readouterr()
    # WHEN the sweeper passes after the offline threshold
    report = sweeper.sweep(now=clock.now_epoch() + config.node_offline_seconds() + 1)
    # THEN the line is at INFO and names the node it marked offline
    assert "silent-1" in report.nodes_offline
    [line] = _sweep_lines(capsys.readouterr().out)
    assert line["level"] == "INFO"
    assert "silent-1" in line["nodes_offline"]
