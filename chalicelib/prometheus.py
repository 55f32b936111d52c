"""A small client of the Prometheus HTTP API (`/api/v1/query_range`), over urllib3.

urllib3 already ships with botocore, so this adds nothing to the Lambda package. Every
request has short connect and read timeouts and the whole call a total budget well below
API Gateway's 29 s; any failure is a PrometheusUnavailable (503), never made-up data.
"""

from __future__ import annotations

import base64
import functools
import json
import time
from dataclasses import dataclass
from typing import Any, Final

import urllib3
from urllib3.util import parse_url

from chalicelib import config
from chalicelib.errors import PrometheusUnavailable

CONNECT_TIMEOUT_SECONDS: Final = 2.0
READ_TIMEOUT_SECONDS: Final = 5.0
#: what one route may spend on Prometheus in all (API Gateway gives up at 29 s)
TOTAL_BUDGET_SECONDS: Final = 15.0
#: largest answer read from Prometheus; more is refused rather than buffered
MAX_ANSWER_BYTES: Final = 32 * 1024 * 1024


@dataclass(frozen=True)
class Series:
    """One range-query series: its labels and its (unix time, value) samples."""

    labels: dict[str, str]
    samples: list[tuple[float, float]]


@functools.cache
def _pool() -> urllib3.PoolManager:
    # retries=False: no hidden retry multiplies the timeouts, no redirect is followed
    return urllib3.PoolManager(num_pools=2, maxsize=4, retries=False)


class Budget:
    """The time left for the Prometheus calls of one API request."""

    def __init__(self, seconds: float = TOTAL_BUDGET_SECONDS) -> None:
        self.deadline = time.monotonic() + seconds

    def timeout(self) -> urllib3.Timeout:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise PrometheusUnavailable(f"Prometheus did not answer within {TOTAL_BUDGET_SECONDS:.0f} s")
        return urllib3.Timeout(connect=min(CONNECT_TIMEOUT_SECONDS, left), read=min(READ_TIMEOUT_SECONDS, left))


def base_url() -> str:
    """The configured Prometheus; raises PrometheusUnavailable when there is none."""
    url = config.prometheus_url()
    if not url:
        raise PrometheusUnavailable(
            "Prometheus is not configured: set FLEETRUN_PROMETHEUS_URL to its HTTP API (e.g. http://prometheus:9090)"
        )
    return url


def where(url: str) -> str:
    """host:port of a URL, for messages (never its credentials or path)."""
    parsed = parse_url(url)
    return f"{parsed.host}:{parsed.port}" if parsed.port else str(parsed.host)


def query_range(promql: str, start: int, end: int, step: int, budget: Budget) -> list[Series]:
    """Evaluate `promql` over [start, end] every `step` seconds.

    Raises PrometheusUnavailable when Prometheus is not configured, not reachable, too slow,
    or answers with anything but a successful matrix.
    """
    url = base_url()
    timeout = budget.timeout()
    fields = {
        "query": promql, "start": str(start), "end": str(end), "step": str(step),
        # Prometheus stops evaluating when we would stop waiting anyway
        "timeout": f"{int((timeout.read_timeout or READ_TIMEOUT_SECONDS) * 1000)}ms",
    }
    try:
        response = _pool().request(
            "GET", f"{url}/api/v1/query_range", fields=fields, headers=_headers(),
            timeout=timeout, preload_content=False,
        )
        try:
            raw = response.read(MAX_ANSWER_BYTES + 1)
        finally:
            response.release_conn()
    except urllib3.exceptions.HTTPError as error:
        raise PrometheusUnavailable(f"Prometheus at {where(url)} is not reachable: {_reason(error)}") from None
    if len(raw) > MAX_ANSWER_BYTES:
        raise PrometheusUnavailable(f"Prometheus at {where(url)} answered more than {MAX_ANSWER_BYTES} bytes")
    return _matrix(url, response.status, raw)


def _headers() -> dict[str, str]:
    token, basic = config.prometheus_bearer_token(), config.prometheus_basic_auth()
    if token:
        return {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    if basic:
        credentials = base64.b64encode(f"{basic[0]}:{basic[1]}".encode()).decode()
        return {"Authorization": f"Basic {credentials}", "Accept": "application/json"}
    return {"Accept": "application/json"}


def _reason(raised: urllib3.exceptions.HTTPError) -> str:
    error: Exception = raised
    if isinstance(raised, urllib3.exceptions.MaxRetryError) and raised.reason is not None:
        error = raised.reason
    if isinstance(error, urllib3.exceptions.ConnectTimeoutError):
        return f"no connection within {CONNECT_TIMEOUT_SECONDS:.0f} s"
    if isinstance(error, urllib3.exceptions.ReadTimeoutError):
        return f"no answer within {READ_TIMEOUT_SECONDS:.0f} s"
    if isinstance(error, urllib3.exceptions.NewConnectionError):
        return "connection refused or host unknown"
    return type(error).__name__


def _matrix(url: str, status: int, raw: bytes) -> list[Series]:
    try:
        answer: Any = json.loads(raw)
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise PrometheusUnavailable(f"Prometheus at {where(url)} answered HTTP {status} without a JSON body")
    if status != 200 or answer.get("status") != "success":
        problem = str(answer.get("error") or answer.get("errorType") or f"HTTP {status}")[:300]
        raise PrometheusUnavailable(f"Prometheus at {where(url)} refused the query: {problem}")
    data = answer.get("data") or {}
    if data.get("resultType") != "matrix" or not isinstance(data.get("result"), list):
        raise PrometheusUnavailable(f"Prometheus at {where(url)} did not answer a range-query matrix")
    return [_series(item) for item in data["result"]]


def _series(item: dict[str, Any]) -> Series:
    samples: list[tuple[float, float]] = []
    for stamp, text in item.get("values") or []:
        value = float(text)
        if value == value and value not in (float("inf"), float("-inf")):  # JSON has no NaN/Inf
            samples.append((float(stamp), value))
    return Series({str(k): str(v) for k, v in (item.get("metric") or {}).items()}, samples)
