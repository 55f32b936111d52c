"""The task page's node grid fed by pushed run changes (issue 15: "the grid lags the summary"), in
headless Chromium against the local runtime and a real agent: during a 50-node task, after every
push the page applies, the header's node counts, the grid's legend and the grid's squares say
the same, and they end as the API's node_counts."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.e2e import browser
from tests.e2e.stack import Stack
from tests.e2e.test_dashboard_browser import live_state, sign_in, text_of, wait

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(browser.available() is not None, reason=str(browser.available()))]

NODES = 50
FAILING = 5
SLOTS = 8

#: after each message the page applied (and after each change of the counts, from whatever
#: source): what the header, the legend and the squares say
RECORDER = """
const read = (source, taskCounts = null) => {
  const squares = {};
  for (const cell of document.querySelectorAll('#node-grid > i')) {
    const status = [...cell.classList].find((c) => c.startsWith('s-'));
    if (status) squares[status.slice(2)] = (squares[status.slice(2)] || 0) + 1;
  }
  const header = document.getElementById('task-node-counts');
  window.__gridRecords.push({
    source,
    header: header ? header.textContent : null,
    legend: [...document.querySelectorAll('#node-legend [data-run-status]')].map((e) => e.textContent),
    squares,
    task_counts: taskCounts,
  });
};
window.__gridRecords = [];
const live = window.fleetrunDashboard.live;
const applied = live.onMessage;
live.onMessage = (message) => { applied(message); read(message.type, message.task ? message.task.node_counts : null); };
const observer = new MutationObserver(() => read('mutation'));
for (const id of ['task-node-counts', 'node-legend']) {
  observer.observe(document.getElementById(id), { childList: true, subtree: true, characterData: true });
}
window.__gridObserver = observer;
"""
#: how many squares the grid has once every page was read (false before)
GRID_DRAWN = ("return document.getElementById('view').dataset.complete === 'true'"
              " && document.querySelectorAll('#node-grid > i').length")


def header_counts(text: str | None) -> dict[str, int]:
    """`"45 succeeded, 5 failed"` → counts by status ("—": none)."""
    counts: dict[str, int] = {}
    for part in (text or "").split(", "):
        matched = re.fullmatch(r"(\d+) ([a-z ]+)", part.strip())
        if matched:
            counts[matched.group(2).replace(" ", "_")] = int(matched.group(1))
    return counts


def legend_counts(entries: list[str]) -> dict[str, int]:
    """`["running 3", "apply pending 1"]` → counts by status."""
    counts: dict[str, int] = {}
    for entry in entries:
        label, _, number = entry.strip().rpartition(" ")
        counts[label.replace(" ", "_")] = int(number)
    return counts


def test_the_grid_counts_equal_the_header_counts_at_every_push_of_a_50_node_task(stack: Stack, chromium: Any,
                                                                                  tmp_path: Path) -> None:
    # (the local runtime always serves its WebSocket API: a page left polling is a failure)
    assert live_state(stack) == "live", "GET /v1/health advertises no websocket_url"
    # GIVEN 50 registered nodes, a delegate runner with 8 slots (not started yet), and a task on
    # them whose runs fail on 5 nodes
    targets = sorted(stack.node_id("grid") for _ in range(NODES))
    for node in targets:
        stack.register(node)
    failing = targets[::NODES // FAILING][:FAILING]
    runner = stack.node_id("grid-runner")
    runner_token = stack.register(runner, slots=SLOTS)
    script = 'sleep 0.3; case " $FAILING " in *" $FLEETRUN_TARGET_NODE "*) exit 3;; esac'
    task_id = stack.create_task({
        "type": "shell", "name": "grid", "target_nodes": targets, "runner_node": runner, "max_errors": FAILING,
        "parameters": {"command": ["sh", "-c", script.replace("$FAILING", " ".join(failing))]},
    })["task_id"]
    # AND its page, live, with the whole grid drawn, recording after every applied push
    sign_in(chromium, stack, stack.admin_token)
    chromium.get(f"{stack.url}/#/tasks/{task_id}")
    wait(chromium, 15, lambda d: text_of(d, "#live-state") == "live" and d.execute_script(GRID_DRAWN) == NODES)
    chromium.execute_script(RECORDER)

    # WHEN the runner runs the task to its end
    stack.start_agent(runner, runner_token, tmp_path, slots=SLOTS)
    final = stack.wait_task(task_id, timeout=120)
    expected = {status: count for status, count in final["node_counts"].items() if count}
    wait(chromium, 15, lambda d: header_counts(text_of(d, "#task-node-counts")) == expected)
    records = chromium.execute_script("window.__gridObserver.disconnect(); return window.__gridRecords")

    # THEN at every recorded moment the header, the legend and the squares agree
    assert expected == {"succeeded": NODES - FAILING, "failed": FAILING}
    pushes = Counter(record["source"] for record in records)
    print(f"{len(records)} moments recorded: {dict(pushes)}")
    assert pushes["runs"] >= 5, pushes  # the grid followed run pushes, not re-reads
    assert pushes["task"] >= 2, pushes
    lagging = [r for r in records if r["task_counts"] is not None
               and {k: v for k, v in r["task_counts"].items() if v} != legend_counts(r["legend"])]
    print(f"task pushes whose node_counts differed from the runs pushed so far: {len(lagging)} of {pushes['task']}")
    for number, record in enumerate(records):
        header, legend = header_counts(record["header"]), legend_counts(record["legend"])
        assert header == legend, (number, record)
        assert record["squares"] == legend, (number, record)
        assert sum(legend.values()) == NODES, (number, record)
    # AND the moments ran through the task's life, ending as the API counts
    assert any(legend_counts(r["legend"]).get("running") for r in records)
    assert legend_counts(records[-1]["legend"]) == expected
