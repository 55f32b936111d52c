"""How `fleetrun monitor` draws a snapshot and a GPU trend."""

from __future__ import annotations

from rich.console import Console

from fleetrun.cli_monitor import snapshot_cards, sparkline, trend_table


def rendered(renderable: object) -> str:
    console = Console(width=160, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


def test_sparkline_spans_the_lowest_to_the_highest_value():
    assert sparkline([0, 50, 100], width=3) == "▁▅█"
    assert sparkline([7, 7, 7], width=5) == "▁▁▁"
    assert sparkline([], width=5) == ""
    assert len(sparkline([float(v) for v in range(1000)], width=40)) == 40


def test_trend_table_lists_each_series_with_last_min_avg_max():
    body = {"series": [
        {"host": "gpu-host-1", "metric": "DCGM_FI_DEV_GPU_UTIL", "unit": "percent",
         "points": [[1, 10.0], [2, 30.0], [3, 20.0]]},
        {"host": "gpu-host-1", "metric": "DCGM_FI_DEV_FB_USED", "unit": "MiB", "points": [[1, 4096.0]]},
    ]}
    text = rendered(trend_table(body))
    assert "GPU util" in text
    assert "20%" in text  # last and avg
    assert "30%" in text
    assert "4,096 MiB" in text


def test_snapshot_cards_show_every_status_seen():
    body = {"nodes": {"idle": 3, "allocated": 1, "maintenance": 0, "offline": 0, "draining": 2}, "total_nodes": 6,
            "running_tasks": 1, "active_tasks": {"pending": 0, "running": 1, "apply_pending": 0, "cancelling": 0},
            "node_runs_in_flight": 4, "node_runs": {"pending": 1, "running": 3, "apply_pending": 0},
            "as_of": "2026-11-22T21:00:00.000Z"}
    text = rendered(snapshot_cards(body))
    assert "draining" in text
    assert "in flight" in text
    assert "waiting" in text
    assert "as of" in text
