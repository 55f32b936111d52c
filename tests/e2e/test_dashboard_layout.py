"""The dashboard's reading of a task and its layout (issue 15, item 2), in headless Chromium at
1280x800 and 1920x1080 against the local runtime: a progress bar coloured by how the task ended,
parameters (masked), tags, durations and a copyable id on the task page, the run detail's timings
and output, a confirmation dialog before cancel / retry / discard, a "why is this waiting" line
(a held concurrency key, a runner that is not registered or never seen, the max_concurrency
window), readable chart text (≥ 11 px), statistics cards without an orphan and no horizontal
overflow on any page. Screenshots are written to test-output/dashboard-*.png; `-s` prints the
measured figures."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e import browser
from tests.e2e.stack import REPO, Stack
from tests.e2e.test_dashboard_browser import SLURM_PARAMS, sign_in, start_agents, text_of, wait
from tests.waiting import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(browser.available() is not None, reason=str(browser.available()))]

OUTPUT = REPO / "test-output"
SIZES = [(1280, 800), (1920, 1080)]
AMBER, GREEN = "rgb(226, 185, 59)", "rgb(39, 174, 96)"  # --partial_failure, --completed in style.css


@pytest.fixture(scope="module")
def nodes(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two registered nodes and their agents' work directories (agents start per test)."""
    work = tmp_path_factory.mktemp("layout-agents")
    found = {stack.node_id("lay"): work / "a", stack.node_id("lay"): work / "b"}
    for node, directory in found.items():
        (directory / "sandbox").mkdir(parents=True)
        directory.joinpath("token").write_text(stack.register(node))
    return found


@pytest.fixture(scope="module")
def finished(stack: Stack, nodes: dict[str, Path]) -> dict[str, str]:
    """A completed task and a partial_failure one (the second node fails), both tagged."""
    broken, broken_dir = sorted(nodes.items())[1]
    body = {"type": "slurm.scale_up", "name": "scale gpu", "target_nodes": sorted(nodes), "parameters": SLURM_PARAMS,
            "tags": ["cdn", "gpu"]}
    start_agents(stack, nodes)
    try:
        completed = stack.create_task(body)["task_id"]
        assert stack.wait_task(completed)["status"] == "completed"
        fail_file = broken_dir / "sandbox" / "fail-nodes"
        fail_file.write_text(f"{broken}\n")
        partial = stack.create_task({**body, "max_errors": 1})["task_id"]
        assert stack.wait_task(partial)["status"] == "partial_failure"
        fail_file.unlink()
    finally:
        stack.stop_agents()
    return {"completed": completed, "partial": partial, "broken": broken}


def viewport(driver: Any, width: int, height: int) -> None:
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})


def open_page(driver: Any, stack: Stack, hash_path: str) -> None:
    driver.get(f"{stack.url}/{hash_path}")


def shot(driver: Any, name: str) -> Path:
    OUTPUT.mkdir(exist_ok=True)
    path = OUTPUT / f"dashboard-{name}.png"
    driver.save_screenshot(str(path))
    assert path.stat().st_size > 10_000
    print(f"screenshot: {path}")
    return path


def overflow(driver: Any) -> int:
    """How many CSS px the page is wider than the viewport (0: no horizontal scroll bar)."""
    return int(driver.execute_script(
        "const e = document.documentElement;"
        " return Math.max(e.scrollWidth, document.body.scrollWidth) - e.clientWidth"))


def colour_of(driver: Any, css: str) -> str | None:
    return driver.execute_script(
        "const e = document.querySelector(arguments[0]); return e && getComputedStyle(e).backgroundColor", css)


def dialog_open(driver: Any) -> bool:
    return bool(driver.execute_script("const d = document.getElementById('confirm-dialog'); return !!(d && d.open)"))


def click(driver: Any, css: str) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.CSS_SELECTOR, css).click()


# --- the task page ---------------------------------------------------------------------------
def test_a_partial_failure_shows_an_amber_bar_parameters_tags_durations_and_a_copyable_id(stack, finished, chromium):
    # GIVEN a partial_failure task and a completed one, on a 1280x800 screen
    viewport(chromium, 1280, 800)
    sign_in(chromium, stack, stack.admin_token)
    task_id = finished["partial"]
    # WHEN the task list shows them THEN the partial one's bar is amber, the completed one's green
    wait(chromium, 10, lambda d: text_of(d, f'tr[data-task-id="{task_id}"]'))
    assert colour_of(chromium, f'tr[data-task-id="{task_id}"] .bar > span') == AMBER
    assert colour_of(chromium, f'tr[data-task-id="{finished["completed"]}"] .bar > span') == GREEN
    # WHEN the partial task's page opens
    open_page(chromium, stack, f"#/tasks/{task_id}")
    wait(chromium, 10, lambda d: text_of(d, "#task-status [data-testid=status]") == "partial failure")
    # THEN its 100 % bar is amber, not green
    wait(chromium, 5, lambda d: text_of(d, "#task-progress [data-testid=progress]") == "100%")
    assert colour_of(chromium, "#task-progress .bar > span") == AMBER
    # AND its parameters show, the secret one masked (never the value), and its tags
    wait(chromium, 5, lambda d: text_of(d, "#task-params [data-param=password]") == "***")
    wait(chromium, 5, lambda d: text_of(d, "#task-params [data-param=partition]") == "gpu")
    assert "hunter2" not in chromium.find_element("tag name", "body").text
    facts = wait(chromium, 5, lambda d: text_of(d, "#task-facts"))
    assert "cdn" in facts
    assert "gpu" in facts
    # AND how long it took (started → completed)
    took = wait(chromium, 5, lambda d: text_of(d, "#task-duration"))
    assert took.endswith((" s", " min", " h")), took
    assert "so far" not in took
    # AND its id on one line (never wrapped mid-string), with a button that copies it
    wait(chromium, 5, lambda d: text_of(d, "#task-id") == task_id)
    lines = chromium.execute_script("const r = document.createRange();"
                                    " r.selectNodeContents(document.getElementById('task-id'));"
                                    "return new Set([...r.getClientRects()].map((b) => Math.round(b.top))).size")
    assert lines == 1
    chromium.execute_script("window.__copied = [];"
                            " navigator.clipboard.writeText = async (t) => { window.__copied.push(t); };")
    click(chromium, "#copy-task-id")
    wait(chromium, 5, lambda d: text_of(d, "#copy-task-id") == "Copied")
    assert chromium.execute_script("return window.__copied") == [task_id]
    # WHEN the failed node is clicked THEN its run shows its timings, its error and its output
    wait(chromium, 10, lambda d: d.find_elements("css selector", f'#node-grid [data-node="{finished["broken"]}"]'))
    click(chromium, f'#node-grid [data-node="{finished["broken"]}"]')
    times = wait(chromium, 5, lambda d: text_of(d, "#run-times"))
    for part in ("started", "completed", "took"):
        assert part in times, times
    assert "so far" not in times
    wait(chromium, 10, lambda d: d.find_elements("css selector", "#run-output"))
    assert overflow(chromium) == 0
    shot(chromium, "partial-failure")


# --- confirmations ---------------------------------------------------------------------------
def test_cancel_retry_and_discard_ask_in_a_dialog_first(stack, finished, nodes, chromium, tmp_path):
    from tests.e2e.test_two_phase import iac_task

    viewport(chromium, 1280, 800)
    sign_in(chromium, stack, stack.admin_token)
    # GIVEN a pending task (its runner is not a node) WHEN Cancel is clicked
    pending = stack.shell_task(stack.node_id("ghost"), ["true"])
    open_page(chromium, stack, f"#/tasks/{pending}")
    wait(chromium, 10, lambda d: d.find_elements("css selector", "button[data-action=cancel]"))
    click(chromium, "button[data-action=cancel]")
    # THEN a dialog asks first, and "Keep it" leaves the task alone
    wait(chromium, 5, lambda d: dialog_open(d))
    assert "Cancel this task?" in (text_of(chromium, "#confirm-dialog") or "")
    shot(chromium, "confirm-cancel")
    click(chromium, "#confirm-dialog [data-confirm=keep]")
    wait(chromium, 5, lambda d: not dialog_open(d))
    time.sleep(0.5)
    assert stack.task(pending)["status"] in ("pending", "running")
    # WHEN it is confirmed THEN the task is cancelled
    click(chromium, "button[data-action=cancel]")
    wait(chromium, 5, lambda d: dialog_open(d))
    click(chromium, "#confirm-dialog [data-confirm=confirm]")
    wait(chromium, 10, lambda d: text_of(d, "#task-status [data-testid=status]") == "cancelled")

    # GIVEN the partial_failure task WHEN Retry all / Retry failed are clicked and kept THEN nothing is retried
    open_page(chromium, stack, f"#/tasks/{finished['partial']}")
    for action in ("retry-all", "retry-failed"):
        wait(chromium, 10, lambda d, a=action: d.find_elements("css selector", f"button[data-action={a}]"))
        click(chromium, f"button[data-action={action}]")
        wait(chromium, 5, lambda d: dialog_open(d))
        click(chromium, "#confirm-dialog [data-confirm=keep]")
        wait(chromium, 5, lambda d: not dialog_open(d))
    time.sleep(0.5)
    task = stack.task(finished["partial"])
    assert (task["status"], task["attempt"]) == ("partial_failure", 1)

    # GIVEN a plan waiting for confirmation WHEN Discard plan is clicked and confirmed THEN it is discarded
    runner, work = sorted(nodes.items())[0]
    start_agents(stack, {runner: work})
    plan = iac_task(stack, runner, f"layout-{time.monotonic_ns()}")
    stack.wait_task(plan, ["apply_pending"])
    open_page(chromium, stack, f"#/tasks/{plan}")
    wait(chromium, 10, lambda d: d.find_elements("css selector", "button[data-action=discard]"))
    wait(chromium, 5, lambda d: "the plan waits for a confirm or a discard" in (text_of(d, "#waiting-reason") or ""))
    click(chromium, "button[data-action=discard]")
    wait(chromium, 5, lambda d: dialog_open(d))
    assert stack.task(plan)["status"] == "apply_pending"
    click(chromium, "#confirm-dialog [data-confirm=confirm]")
    wait(chromium, 10, lambda d: text_of(d, "#task-status [data-testid=status]") == "discarded")
    assert stack.task(plan)["status"] == "discarded"


# --- why is this waiting ---------------------------------------------------------------------
def test_a_task_that_cannot_move_says_why(stack, nodes, chromium):
    viewport(chromium, 1280, 800)
    sign_in(chromium, stack, stack.admin_token)
    # GIVEN a task holding a key on a node no agent serves, and a second task with the same key
    key, idle = f"workspace-{time.monotonic_ns()}", stack.node_id("idle")
    stack.register(idle)
    holder = stack.shell_task(idle, ["true"], concurrency_key=key)
    stack.wait_task(holder, ["running"])
    waiting = stack.shell_task(idle, ["true"], concurrency_key=key)
    ghost = stack.shell_task(stack.node_id("ghost"), ["true"])
    try:
        # WHEN the waiting task's page opens (once its dispatch found the key held: on the fidelity
        # layer's shards and throttles that can take a few seconds) THEN it says the key is held,
        # by whom, with a link
        wait_for(lambda: (stack.task(waiting).get("waiting_for") or {}).get("task_id") == holder or None, 30,
                 "the waiting task to name its holder")
        open_page(chromium, stack, f"#/tasks/{waiting}")
        reason = wait(chromium, 10, lambda d: text_of(d, "#waiting-reason [data-reason=concurrency_key]"))
        for part in (holder, key, "(admin)"):
            assert part in reason, reason
        link = chromium.find_element("css selector", "#waiting-reason [data-reason=concurrency_key] a")
        assert link.get_attribute("href").endswith(f"#/tasks/{holder}")
        shot(chromium, "waiting-key")
        # WHEN the holder's page opens THEN it says no agent serves its runner
        open_page(chromium, stack, f"#/tasks/{holder}")
        reason = wait(chromium, 10, lambda d: text_of(d, "#waiting-reason [data-reason=runner]"))
        assert reason.startswith(f"runner {idle} "), reason
        assert "has never been seen" in reason or "offline" in reason, reason
        # AND a task whose runner is not a registered node says so, on the task and on its run
        open_page(chromium, stack, f"#/tasks/{ghost}")
        reason = wait(chromium, 10, lambda d: text_of(d, "#waiting-reason [data-reason=runner]"))
        assert reason.endswith("is not a registered node"), reason
        chromium.find_element("css selector", "#node-grid > i").click()
        assert "is not a registered node" in (wait(chromium, 5, lambda d: text_of(d, "[data-run-waiting]")) or "")
    finally:
        for task_id in (holder, waiting, ghost):
            stack.admin.post(f"/v1/tasks/{task_id}/cancel")

    # GIVEN two nodes served by agents and a task that runs one at a time (max_concurrency 1)
    start_agents(stack, nodes)
    window = stack.shell_task(sorted(nodes)[0], ["sleep", "60"], max_concurrency=1,
                              target_nodes=sorted(nodes))
    try:
        # (once an agent has claimed one run and the stream has counted it: agents starting on a
        # busy machine can take several seconds)
        wait_for(lambda: (stack.task(window).get("node_counts") or {}).get("running") == 1 or None, 30,
                 "one of the window's runs to be counted running")
        # WHEN its page opens while one node runs THEN it says it waits for a slot
        open_page(chromium, stack, f"#/tasks/{window}")
        reason = wait(chromium, 20, lambda d: text_of(d, "#waiting-reason [data-reason=window]"))
        assert reason.startswith("waiting for a slot: 1 of max_concurrency 1 running"), reason
        shot(chromium, "waiting-window")
    finally:
        stack.admin.post(f"/v1/tasks/{window}/cancel")


# --- layout at two screen sizes ---------------------------------------------------------------
@pytest.mark.parametrize(("width", "height"), SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
def test_no_page_overflows_chart_text_is_readable_and_no_card_is_alone(stack, finished, chromium, width, height):
    from selenium.webdriver.common.by import By

    # GIVEN a screen of this size
    viewport(chromium, width, height)
    sign_in(chromium, stack, stack.admin_token)
    size = f"{width}x{height}"
    # WHEN each page shows THEN none is wider than the screen
    wait(chromium, 10, lambda d: d.find_elements(By.CSS_SELECTOR, "#task-rows tr"))
    assert overflow(chromium) == 0
    shot(chromium, f"tasks-{size}")
    open_page(chromium, stack, f"#/tasks/{finished['partial']}")
    wait(chromium, 10, lambda d: d.find_element(By.ID, "view").get_attribute("data-complete") == "true")
    assert overflow(chromium) == 0
    shot(chromium, f"task-{size}")
    open_page(chromium, stack, "#/fleet")
    wait(chromium, 10, lambda d: text_of(d, "#fleet-nodes") and text_of(d, "#gpu-trend"))
    assert overflow(chromium) == 0
    shot(chromium, f"fleet-{size}")
    open_page(chromium, stack, "#/stats")
    wait(chromium, 10, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#stat-charts svg.chart")) == 3)
    # AND every chart label is at least 11 px tall as drawn
    heights = lambda d: d.execute_script(  # noqa: E731
        "return [...document.querySelectorAll('svg.chart text')].map((t) => t.getBoundingClientRect().height)")
    wait(chromium, 5, lambda d: heights(d) and min(heights(d)) >= 11)
    drawn = chromium.execute_script(
        "return [...document.querySelectorAll('svg.chart text')].map((t) => parseFloat(getComputedStyle(t).fontSize)"
        " * t.ownerSVGElement.getBoundingClientRect().width / t.ownerSVGElement.viewBox.baseVal.width)")
    assert min(drawn) >= 11, drawn
    # AND the statistics cards fill their rows evenly: no card alone on a row
    tops = chromium.execute_script(
        "return [...document.querySelectorAll('#stat-cards .stat')]"
        ".map((c) => Math.round(c.getBoundingClientRect().top))")
    rows = [tops.count(top) for top in sorted(set(tops))]
    assert len(tops) == 8
    assert min(rows) >= 2, rows
    assert len(set(rows)) == 1, rows
    assert overflow(chromium) == 0
    print(f"{size}: chart labels {min(heights(chromium)):.1f}-{max(heights(chromium)):.1f} px tall "
          f"(font {min(drawn):.1f} px as drawn), statistics cards per row {rows}")
    shot(chromium, f"stats-{size}")
    chromium.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
