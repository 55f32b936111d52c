"""The Prometheus client against a loopback HTTP server that answers like the query_range API."""

from __future__ import annotations

import json
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from chalicelib import config, prometheus
from chalicelib.api.errors import http_status
from chalicelib.errors import PrometheusUnavailable


class FakePrometheus:
    """Records each request; answers `status` with `answer` as JSON."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, list[str]], dict[str, str]]] = []
        self.status = 200
        self.answer: Any = {"status": "success", "data": {"resultType": "matrix", "result": []}}
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                fake.requests.append((url.path, urllib.parse.parse_qs(url.query), dict(self.headers)))
                body = json.dumps(fake.answer).encode()
                self.send_response(fake.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakePrometheus]:
    server = FakePrometheus()
    monkeypatch.setenv("FLEETRUN_PROMETHEUS_URL", server.url + "/prom/")
    config.reset()
    yield server
    server.server.shutdown()


def query(promql: str = "up") -> list[prometheus.Series]:
    return prometheus.query_range(promql, 1000, 1600, 60, prometheus.Budget())


def test_sends_the_range_query_under_the_configured_path_prefix(fake):
    query('avg by (Hostname) (DCGM_FI_DEV_GPU_UTIL{Hostname="h-1"})')
    ((path, params, headers),) = fake.requests
    assert path == "/prom/api/v1/query_range"
    assert params == {"query": ['avg by (Hostname) (DCGM_FI_DEV_GPU_UTIL{Hostname="h-1"})'], "start": ["1000"],
                      "end": ["1600"], "step": ["60"], "timeout": ["5000ms"]}
    assert "Authorization" not in headers


def test_sends_a_bearer_token_or_basic_auth(fake, monkeypatch):
    monkeypatch.setenv("FLEETRUN_PROMETHEUS_BEARER_TOKEN", "tok")
    config.reset()
    query()
    monkeypatch.delenv("FLEETRUN_PROMETHEUS_BEARER_TOKEN")
    monkeypatch.setenv("FLEETRUN_PROMETHEUS_USERNAME", "grafana")
    monkeypatch.setenv("FLEETRUN_PROMETHEUS_PASSWORD", "pw")
    config.reset()
    query()
    assert [headers.get("Authorization") for _, _, headers in fake.requests] == [
        "Bearer tok", "Basic Z3JhZmFuYTpwdw=="]


def test_reads_the_matrix_and_drops_samples_json_cannot_carry(fake):
    fake.answer["data"]["result"] = [
        {"metric": {"Hostname": "h-1"}, "values": [[1000, "12.5"], [1060, "NaN"], [1120, "+Inf"], [1180, "13"]]},
    ]
    assert query() == [prometheus.Series({"Hostname": "h-1"}, [(1000.0, 12.5), (1180.0, 13.0)])]


@pytest.mark.parametrize(
    ("status", "answer", "reason"),
    [
        (400, {"status": "error", "errorType": "bad_data", "error": "parse error"}, "refused the query: parse error"),
        (503, {"status": "error", "error": "overloaded"}, "refused the query: overloaded"),
        (200, {"status": "success", "data": {"resultType": "vector", "result": []}}, "did not answer a range-query"),
        (200, ["not", "an", "object"], "without a JSON body"),
    ],
)
def test_anything_but_a_successful_matrix_is_unavailable(fake, status, answer, reason):
    fake.status, fake.answer = status, answer
    with pytest.raises(PrometheusUnavailable) as raised:
        query()
    assert reason in raised.value.message
    assert http_status(raised.value) == 503


def test_an_exhausted_budget_does_not_call_prometheus(fake):
    with pytest.raises(PrometheusUnavailable, match="did not answer within"):
        prometheus.query_range("up", 1000, 1600, 60, prometheus.Budget(0))
    assert fake.requests == []


def test_messages_name_the_host_never_the_credentials():
    assert prometheus.where("https://user:secret@prom.example:9443/prefix") == "prom.example:9443"
