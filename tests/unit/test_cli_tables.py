"""Every table of the CLI fits the terminal it is printed on, and reads plainly in a pipe.

The commands run against fixed API answers (tests/unit/cli_answers.py) on terminals 80, 120 and
200 columns wide and piped. The 80-column layouts of `task-types`, `tasks`, `show` and the
`--watch` area of a 200-node task are compared with tests/unit/snapshots/*.txt; after a change
of layout that is meant, `UPDATE_CLI_SNAPSHOTS=1` writes them again (then read the diff).
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from typing import Any

import pytest
from rich.console import Console

from fleetrun.cli_runs import ranked, runs_summary, watch_view
from fleetrun.cli_table import Column, fit, natural_key, render, short_ids
from fleetrun.cli_watch import Snapshot, watch
from tests.unit.cli_answers import (
    BIG_TASK_ID,
    SNAPSHOTS,
    CannedApi,
    big_task,
    big_task_runs,
    lines,
    nodes,
    run,
    task_types,
    tasks,
)

WIDTHS = (80, 120, 200)
ANSWERS: dict[str, Any] = {
    "/v1/task-types": task_types(), "/v1/tasks": {"items": tasks(), "next_cursor": None},
    f"/v1/tasks/{BIG_TASK_ID}": big_task(), f"/v1/tasks/{BIG_TASK_ID}/nodes": big_task_runs(), "/v1/nodes": nodes(),
    "/v1/nodes/edge-3": nodes()[0],
}
#: each table command, and the values of its columns that are never cut (status, type, node, name)
TABLES: dict[str, tuple[list[str], Callable[[], list[str]]]] = {
    "task-types": (["task-types"], lambda: [t["name"] for t in task_types()]),
    "types": (["types"], lambda: [t["name"] for t in task_types()]),
    "tasks": (["tasks"], lambda: [v for t in tasks() for v in (t["type"], t["status"])]),
    "show": (["show", BIG_TASK_ID], lambda: ["ghost-7", "failed", "running", "pending"]),
    "runs": (["runs", BIG_TASK_ID], lambda: [v for r in big_task_runs() for v in (r["node"], r["status"])]),
    "nodes": (["nodes"], lambda: [v for n in nodes() for v in (n["node_id"], n["status"])]),
}


def words(text: str) -> set[str]:
    return {word.strip(",") for word in text.split()}


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("table", sorted(TABLES))
def test_every_line_of_a_table_fits_the_terminal_and_no_status_or_type_is_cut(table: str, width: int) -> None:
    # GIVEN a terminal `width` columns wide
    args, whole_values = TABLES[table]
    # WHEN the command prints its table
    printed = run(CannedApi(ANSWERS), *args, width=width)
    # THEN every line fits, and every status, type and node name is there whole
    assert printed.exit_code == 0, printed.err
    assert max(len(line) for line in lines(printed.out)) <= width
    assert set(whole_values()) <= words(printed.out)


@pytest.mark.parametrize("table", sorted(TABLES))
def test_a_piped_table_is_plain_with_every_value_whole(table: str) -> None:
    args, whole_values = TABLES[table]
    printed = run(CannedApi(ANSWERS), *args, width=None)
    assert printed.exit_code == 0, printed.err
    assert "…" not in printed.out.replace("… and", "")  # nothing cut (the line saying more exist aside)
    assert "\x1b[" not in printed.out  # no colour
    assert not set("─│┃━╸") & set(printed.out)  # no box drawing, no bars
    assert set(whole_values()) <= words(printed.out)


def test_piped_tasks_keep_whole_ids_and_names_for_scripts() -> None:
    printed = run(CannedApi(ANSWERS), "tasks", width=None)
    rows = [line.split("  ") for line in lines(printed.out)[1:]]
    assert [row[0] for row in rows] == [task["task_id"] for task in tasks()]
    assert "scale the gpu partition by three hosts" in printed.out


def test_tasks_on_a_terminal_show_ids_by_their_unique_ending_and_wide_shows_them_whole() -> None:
    narrow = run(CannedApi(ANSWERS), "tasks", width=80)
    assert "…Y6Z000" in narrow.out
    assert tasks()[0]["task_id"] not in narrow.out
    wide = run(CannedApi(ANSWERS), "tasks", "--wide", width=200)
    assert all(task["task_id"] in wide.out for task in tasks())
    assert "scale the gpu partition by three hosts" in wide.out  # every column, the name too
    folded = run(CannedApi(ANSWERS), "tasks", "--wide", width=80)  # what does not fit folds, nothing is cut
    assert "…" not in folded.out
    assert max(len(line) for line in lines(folded.out)) <= 80


def test_a_long_error_is_cut_to_the_width_and_keeps_the_progress_column() -> None:
    for width in (80, 120):
        printed = run(CannedApi(ANSWERS), "runs", BIG_TASK_ID, width=width)
        failed = next(line for line in lines(printed.out) if line.startswith("ghost-7 "))
        assert failed.split()[:3] == ["ghost-7", "failed", "0%"]
        assert "salt-minion: Conn" in failed
        assert "…" in failed
        assert len(failed) <= width


def test_show_of_a_large_task_summarises_then_lists_failed_then_running_then_the_rest() -> None:
    printed = lines(run(CannedApi(ANSWERS), "show", BIG_TASK_ID, width=120).out)
    summary = printed.index("200 nodes: 3 failed, 12 running, 185 pending")
    rows = [line.split()[:2] for line in printed[summary + 2:] if line.startswith("ghost-")]
    assert [node for node, _ in rows[:3]] == ["ghost-7", "ghost-42", "ghost-150"]
    assert {status for _, status in rows[3:15]} == {"running"}
    assert [node for node, _ in rows[15:18]] == ["ghost-14", "ghost-15", "ghost-16"]
    assert printed[-1] == f"… and 170 more (fleetrun show {BIG_TASK_ID} --all lists them)"
    every = lines(run(CannedApi(ANSWERS), "show", BIG_TASK_ID, "--all", width=120).out)
    assert sum(line.startswith("ghost-") for line in every) == 200


@pytest.mark.parametrize("width", WIDTHS)
def test_the_watch_area_of_a_200_node_task_fits_and_puts_failures_first(width: int) -> None:
    console = Console(file=io.StringIO(), force_terminal=True, color_system=None, width=width, height=40)
    console.print(watch_view(big_task(), big_task_runs(), console))
    shown = lines(console.file.getvalue())  # type: ignore[attr-defined]
    assert max(len(line) for line in shown) <= width
    assert shown[2] == "200 nodes: 3 failed, 12 running, 185 pending"
    assert [line.split()[0] for line in shown[3:6]] == ["ghost-7", "ghost-42", "ghost-150"]
    assert all(line.split()[2] == "0%" for line in shown[3:6])  # the % column stays, the error is cut
    assert shown[-1].startswith("… and ")


def test_watch_on_a_terminal_redraws_the_area_until_the_task_ends() -> None:
    # GIVEN a task that runs, then completes on every node
    done_runs = [{**run, "status": "succeeded", "progress": 100, "error_message": None} for run in big_task_runs()]
    snapshots = [Snapshot(big_task(), big_task_runs()),
                 Snapshot({**big_task(), "status": "completed", "progress": 100}, done_runs)]
    console = Console(file=io.StringIO(), force_terminal=True, color_system=None, width=80, height=40)
    # WHEN it is watched on an 80-column terminal
    status = watch(CannedApi({}), BIG_TASK_ID, console, source=lambda _api, _task, _after: iter(snapshots))
    # THEN the area showed the failures first, then the end; the exit status is the task's
    printed = console.file.getvalue()  # type: ignore[attr-defined]
    assert status == 0
    assert "200 nodes: 3 failed, 12 running, 185 pending" in printed
    assert "200 nodes: 200 succeeded" in printed
    assert f"task {BIG_TASK_ID} completed" in printed


@pytest.mark.parametrize("name", ["task-types", "tasks", "show", "watch"])
def test_the_80_column_layout_matches_its_snapshot(name: str) -> None:
    if name == "watch":
        console = Console(file=io.StringIO(), force_terminal=True, color_system=None, width=80, height=40)
        console.print(watch_view(big_task(), big_task_runs(), console))
        text = console.file.getvalue()  # type: ignore[attr-defined]
    else:
        text = run(CannedApi(ANSWERS), *TABLES[name][0], width=80).out
    rendered = "\n".join(lines(text)) + "\n"
    snapshot = SNAPSHOTS / f"{name}-80.txt"
    if os.environ.get("UPDATE_CLI_SNAPSHOTS") == "1":
        snapshot.write_text(rendered, encoding="utf-8")
    assert rendered == snapshot.read_text(encoding="utf-8")


# --- the layout rules ----------------------------------------------------------------------------
def test_the_least_important_columns_shrink_first_then_go() -> None:
    columns = [Column("id"), Column("status"), Column("note", priority=1, min_width=10, overflow="ellipsis"),
               Column("extra", priority=2)]
    widths = [10, 9, 40, 20]
    assert fit(columns, widths, [4, 4, 10, 4], 80) == [0, 1, 2, 3]
    assert widths == [10, 9, 35, 20]  # the note gave up what was missing
    widths = [10, 9, 40, 20]
    assert fit(columns, widths, [4, 4, 10, 4], 50) == [0, 1, 2]  # extra went, the note has the room it left
    assert widths[2] == 27


def test_columns_of_priority_zero_stay_even_when_nothing_fits() -> None:
    columns = [Column("id"), Column("type"), Column("more", priority=1)]
    widths = [30, 30, 10]
    assert fit(columns, widths, [4, 4, 4], 20) == [0, 1]


def test_wide_keeps_every_column_and_folds_what_does_not_fit() -> None:
    console = Console(file=io.StringIO(), force_terminal=True, color_system=None, width=40)
    columns = [Column("id"), Column("note", priority=1, overflow="ellipsis"), Column("extra", priority=2)]
    row = ["q" * 20, "w" * 30, "k" * 10]
    console.print(render(columns, [row], console, wide=True))
    printed = console.file.getvalue()  # type: ignore[attr-defined]
    assert "…" not in printed
    assert max(len(line) for line in lines(printed)) <= 40
    assert printed.count("q") == 20
    assert printed.count("w") == 30
    assert "k" * 10 in printed


def test_an_id_shows_its_shortest_unique_ending_of_at_least_six_characters() -> None:
    assert short_ids(["01JDX4K2M8Q7R5T3V9W1Y6Z000", "01JDX4K2M8Q7R5T3V9W1Y6Z001"]) == {
        "01JDX4K2M8Q7R5T3V9W1Y6Z000": "…Y6Z000", "01JDX4K2M8Q7R5T3V9W1Y6Z001": "…Y6Z001"}
    assert short_ids(["AAAAAAA123456", "BBBBBBB123456"]) == {"AAAAAAA123456": "…A123456", "BBBBBBB123456": "…B123456"}
    assert short_ids(["short"]) == {"short": "short"}


def test_node_names_sort_naturally() -> None:
    assert sorted(["ghost-10", "ghost-2", "ghost-100", "ghost-1", "Ghost-3"], key=natural_key) == [
        "ghost-1", "ghost-2", "Ghost-3", "ghost-10", "ghost-100"]


def test_runs_rank_failed_then_running_then_the_rest_and_the_summary_counts_them() -> None:
    runs = [{"node": "n-10", "status": "succeeded"}, {"node": "n-2", "status": "pending"},
            {"node": "n-3", "status": "running"}, {"node": "n-11", "status": "timed_out"},
            {"node": "n-1", "status": "failed"}]
    assert [run["node"] for run in ranked(runs)] == ["n-1", "n-11", "n-3", "n-2", "n-10"]
    assert runs_summary(runs) == "5 nodes: 1 failed, 1 timed_out, 1 running, 1 pending, 1 succeeded"
