"""GPU utilisation and memory per host over time, from Prometheus (DCGM exporter metrics).

The route's query string is validated into a `TrendQuery` (bounded points per series, a
host that is a node id, so it is safe inside a PromQL string); each metric is one range
query aggregated by the `Hostname` label. Nothing is invented: Prometheus down is a 503.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from chalicelib import clock, prometheus
from chalicelib.errors import ValidationFailed

#: Prometheus rejects range queries of more than 11,000 points per series
MAX_POINTS_PER_SERIES: Final = 11_000
#: what one answer may carry in all (Lambda answers are limited to 6 MB)
MAX_POINTS_PER_ANSWER: Final = 200_000
MAX_RANGE_SECONDS: Final = 31 * 86_400
MIN_STEP_SECONDS: Final = 1
MAX_STEP_SECONDS: Final = 86_400
DEFAULT_RANGE: Final = "6h"
DEFAULT_STEP_SECONDS: Final = 300
HOST_LABEL: Final = "Hostname"
_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
_RANGE: Final = re.compile(r"([1-9][0-9]{0,5})([smhdw])")
_STEP: Final = re.compile(r"[1-9][0-9]{0,5}")
#: the node-id alphabet: nothing in it needs escaping in a PromQL string
_HOST: Final = re.compile(r"[A-Za-z0-9._:-]{1,128}")


@dataclass(frozen=True)
class Metric:
    name: str
    #: how a host's GPUs combine into one series
    aggregation: str
    unit: str


#: utilisation is averaged over a host's GPUs, framebuffer memory used is summed
METRICS: Final = (
    Metric("DCGM_FI_DEV_GPU_UTIL", "avg", "percent"),
    Metric("DCGM_FI_DEV_FB_USED", "sum", "MiB"),
)


@dataclass(frozen=True)
class TrendQuery:
    range_seconds: int
    step: int
    host: str | None

    def promql(self, metric: Metric) -> str:
        selector = f'{{{HOST_LABEL}="{promql_string(self.host)}"}}' if self.host else ""
        return f"{metric.aggregation} by ({HOST_LABEL}) ({metric.name}{selector})"

    def window(self, now: float) -> tuple[int, int]:
        """[start, end]: the last point is now (whole seconds), the first `range` before it."""
        end = math.floor(now)
        return end - self.range_seconds // self.step * self.step, end


def promql_string(value: str) -> str:
    """`value` escaped for a double-quoted PromQL string (validation already keeps hosts plain)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def parse_query(params: Mapping[str, str]) -> TrendQuery:
    """`range`, `step` and `host` of the query string; raises ValidationFailed listing every problem."""
    details: list[dict[str, str]] = []
    # a parameter given empty is given: `?host=` is no host, not every host
    raw_range = params.get("range", DEFAULT_RANGE)
    range_seconds = 0
    if (found := _RANGE.fullmatch(raw_range)) is None:
        details.append({"path": "$query.range", "message": "must be a duration like 30m, 6h, 1d or 2w"})
    else:
        range_seconds = int(found.group(1)) * _UNITS[found.group(2)]
        if range_seconds > MAX_RANGE_SECONDS:
            details.append({"path": "$query.range", "message": f"must be at most {MAX_RANGE_SECONDS // 86_400}d"})
    raw_step = params.get("step", str(DEFAULT_STEP_SECONDS))
    step = 0
    if not _STEP.fullmatch(raw_step) or not MIN_STEP_SECONDS <= int(raw_step) <= MAX_STEP_SECONDS:
        details.append({"path": "$query.step", "message": f"must be whole seconds from {MIN_STEP_SECONDS} to "
                                                          f"{MAX_STEP_SECONDS}"})
    else:
        step = int(raw_step)
    host = params.get("host")
    if host is not None and not _HOST.fullmatch(host):
        details.append({"path": "$query.host", "message": "must be a node id (letters, digits, . _ : -; 1-128)"})
    if range_seconds and step and range_seconds // step + 1 > MAX_POINTS_PER_SERIES:
        details.append({"path": "$query.step", "message": f"range/step gives {range_seconds // step + 1} points "
                                                          f"per series; at most {MAX_POINTS_PER_SERIES}"})
    if details:
        first = f"{details[0]['path']} {details[0]['message']}"
        raise ValidationFailed(f"invalid GPU trend query: {first}", details)
    return TrendQuery(range_seconds, step, host)


def gpu_trend(query: TrendQuery) -> dict[str, Any]:
    """Per host and metric, the points of the window ending now.

    Raises PrometheusUnavailable (503) when Prometheus is not configured or does not answer,
    ValidationFailed when the answer would exceed MAX_POINTS_PER_ANSWER.
    """
    start, end = query.window(clock.now_epoch())
    budget = prometheus.Budget()
    series: list[dict[str, Any]] = []
    for metric in METRICS:
        for found in prometheus.query_range(query.promql(metric), start, end, query.step, budget):
            host = found.labels.get(HOST_LABEL)
            if host:  # a series without the label cannot be put on any host
                series.append({"host": host, "metric": metric.name, "unit": metric.unit,
                               "points": [[_stamp(t), v] for t, v in found.samples]})
    total = sum(len(s["points"]) for s in series)
    if total > MAX_POINTS_PER_ANSWER:
        raise ValidationFailed(
            f"the trend holds {total} points, more than {MAX_POINTS_PER_ANSWER}: raise step, shorten range "
            "or filter by host",
            [{"path": "$query.step", "message": f"answer would hold {total} points; at most {MAX_POINTS_PER_ANSWER}"}],
        )
    series.sort(key=lambda s: (s["host"], s["metric"]))
    return {"series": series, "source": "prometheus", "start": start, "end": end, "step": query.step}


def _stamp(value: float) -> float | int:
    return int(value) if value.is_integer() else value
