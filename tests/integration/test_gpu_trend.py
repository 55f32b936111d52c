"""GET /v1/monitoring/gpu-trend against a real Prometheus (Debian's `prometheus`, started here on
loopback) scraping a DCGM-like exporter this module serves; Prometheus down or absent is a 503."""

from __future__ import annotations

import json
import math
import socket
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from chalicelib import config, prometheus
from tests import prometheus_server
from tests.harness import Fleet
from tests.processes import free_port

#: two hosts, two GPUs each: utilisation is averaged per host, framebuffer memory summed
GPUS = {
    ("gpu-host-1", "0"): (40.0, 1000.0),
    ("gpu-host-1", "1"): (60.0, 3000.0),
    ("gpu-host-2", "0"): (10.0, 500.0),
    ("gpu-host-2", "1"): (20.0, 700.0),
}
#: points (one a second) each series must have in the tests' answers
SCRAPES_WANTED = 2
#: successful scrapes Prometheus must report, all stamped before the second the tests start in,
#: before they start: an answer's last point is a whole second (the floor of now), so a scrape
#: later in that second is not in it, and two scrapes less than a second apart can fall between
#: the same two points
SCRAPES_BEFORE_TESTS = SCRAPES_WANTED + 1


class Exporter:
    """A DCGM exporter stand-in: every scrape moves every value up by one, wrapping every 5."""

    def __init__(self) -> None:
        self.scrapes = 0
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = exporter.metrics().encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "text/plain; version=0.0.4")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the scraper gave up (Prometheus stopping)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def metrics(self) -> str:
        shift = self.scrapes % 5
        self.scrapes += 1
        lines = ["# HELP DCGM_FI_DEV_GPU_UTIL GPU utilization (in %).", "# TYPE DCGM_FI_DEV_GPU_UTIL gauge"]
        lines += [f'DCGM_FI_DEV_GPU_UTIL{{gpu="{gpu}",UUID="GPU-{host}-{gpu}",Hostname="{host}"}} {util + shift}'
                  for (host, gpu), (util, _) in GPUS.items()]
        lines += ["# HELP DCGM_FI_DEV_FB_USED Framebuffer memory used (in MiB).", "# TYPE DCGM_FI_DEV_FB_USED gauge"]
        lines += [f'DCGM_FI_DEV_FB_USED{{gpu="{gpu}",UUID="GPU-{host}-{gpu}",Hostname="{host}"}} {fb + shift}'
                  for (host, gpu), (_, fb) in GPUS.items()]
        return "\n".join(lines) + "\n"


def instant(url: str, promql: str, at: float | None = None) -> list[dict[str, Any]]:
    """The result of an instant query, evaluated `at` (epoch seconds; Prometheus's now if None)."""
    query = urllib.parse.urlencode({"query": promql, **({"time": f"{at:.3f}"} if at is not None else {})})
    with urllib.request.urlopen(f"{url}/api/v1/query?{query}", timeout=2) as response:
        return json.loads(response.read())["data"]["result"]  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def prometheus_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Prometheus on loopback scraping the exporter every second, once it reports
    SCRAPES_BEFORE_TESTS successful scrapes of it."""
    exporter = Exporter()
    workdir = tmp_path_factory.mktemp("prometheus")
    process, url = prometheus_server.start(
        workdir,
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: dcgm\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{exporter.port}']\n",
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                if successful_scrapes(url, before=math.floor(time.time())) >= SCRAPES_BEFORE_TESTS:
                    break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail("Prometheus did not scrape the exporter within 15 s:\n"
                            + (workdir / "prometheus.log").read_text()[-2000:])
            time.sleep(0.2)
        yield url
    finally:
        prometheus_server.stop(process)
        exporter.server.shutdown()


def successful_scrapes(url: str, before: float) -> int:
    """How many scrapes of the exporter Prometheus reports as successful (`up` 1), up to `before`."""
    found = instant(url, 'sum_over_time(up{job="dcgm"}[10m])', at=before)
    return int(float(found[0]["value"][1])) if found else 0


def trend(fleet: Fleet, query: str = "") -> Any:
    return fleet.user("GET", f"/v1/monitoring/gpu-trend{query}", who="vera", roles=("viewer",))


def use(monkeypatch: pytest.MonkeyPatch, url: str | None) -> None:
    if url is None:
        monkeypatch.delenv("FLEETRUN_PROMETHEUS_URL", raising=False)
    else:
        monkeypatch.setenv("FLEETRUN_PROMETHEUS_URL", url)
    config.reset()


class TestFromPrometheus:
    def test_answers_each_hosts_utilisation_and_memory_series(self, fleet, prometheus_url, monkeypatch):
        # GIVEN Prometheus scraping two hosts' GPUs
        use(monkeypatch, prometheus_url)
        # WHEN a viewer asks for the last 5 minutes, one point a second
        answer = trend(fleet, "?range=5m&step=1")
        # THEN both hosts have both series, with the values the exporter served
        assert answer.status == 200, answer
        body = answer.body
        assert body["source"] == "prometheus"
        assert [(s["host"], s["metric"]) for s in body["series"]] == [
            ("gpu-host-1", "DCGM_FI_DEV_FB_USED"), ("gpu-host-1", "DCGM_FI_DEV_GPU_UTIL"),
            ("gpu-host-2", "DCGM_FI_DEV_FB_USED"), ("gpu-host-2", "DCGM_FI_DEV_GPU_UTIL"),
        ]
        served = {  # per host and metric: the values any one scrape can give (shift 0..4)
            ("gpu-host-1", "DCGM_FI_DEV_GPU_UTIL"): {50.0 + k for k in range(5)},
            ("gpu-host-1", "DCGM_FI_DEV_FB_USED"): {4000.0 + 2 * k for k in range(5)},
            ("gpu-host-2", "DCGM_FI_DEV_GPU_UTIL"): {15.0 + k for k in range(5)},
            ("gpu-host-2", "DCGM_FI_DEV_FB_USED"): {1200.0 + 2 * k for k in range(5)},
        }
        for series in body["series"]:
            points = series["points"]
            assert len(points) >= SCRAPES_WANTED
            assert {value for _, value in points} <= served[(series["host"], series["metric"])]
            assert len({value for _, value in points}) > 1  # values change over time: real scrapes
            stamps = [stamp for stamp, _ in points]
            assert stamps == sorted(stamps)
            assert all(isinstance(s, int) for s in stamps)
            assert body["start"] <= stamps[0]
            assert stamps[-1] <= body["end"] <= time.time()
        assert {s["unit"] for s in body["series"]} == {"percent", "MiB"}

    def test_a_host_filter_answers_only_that_host(self, fleet, prometheus_url, monkeypatch):
        use(monkeypatch, prometheus_url)
        answer = trend(fleet, "?range=1h&step=60&host=gpu-host-2")
        assert answer.status == 200, answer
        assert {s["host"] for s in answer.body["series"]} == {"gpu-host-2"}
        assert len(answer.body["series"]) == 2

    def test_an_unknown_host_has_no_series(self, fleet, prometheus_url, monkeypatch):
        use(monkeypatch, prometheus_url)
        answer = trend(fleet, "?host=gpu-host-9")
        assert answer.status == 200, answer
        assert answer.body["series"] == []

    def test_a_host_that_would_break_out_of_the_promql_string_is_rejected(self, fleet, prometheus_url, monkeypatch):
        use(monkeypatch, prometheus_url)
        answer = trend(fleet, "?host=" + urllib.parse.quote('x"} or vector(1) #'))
        assert answer.status == 400
        assert answer.body["error"]["code"] == "validation_error"
        assert answer.body["error"]["details"][0]["path"] == "$query.host"

    def test_too_many_points_per_series_is_a_validation_error(self, fleet, prometheus_url, monkeypatch):
        use(monkeypatch, prometheus_url)
        answer = trend(fleet, "?range=7d&step=10")
        assert answer.status == 400
        assert answer.body["error"]["details"] == [
            {"path": "$query.step", "message": "range/step gives 60481 points per series; at most 11000"}]


class TestWithoutPrometheus:
    def test_not_configured_is_503_with_what_to_set(self, fleet, monkeypatch):
        use(monkeypatch, None)
        answer = trend(fleet)
        assert answer.status == 503
        assert answer.body["error"]["code"] == "service_unavailable"
        assert "FLEETRUN_PROMETHEUS_URL" in answer.body["error"]["message"]
        assert "series" not in answer.body

    @pytest.mark.parametrize("url", [None, "http://user:s3cret@127.0.0.1:{port}"], ids=["not configured", "down"])
    def test_the_503_is_one_warning_line_without_a_traceback(self, fleet, monkeypatch, capsys, url):
        # GIVEN Prometheus not configured, or configured where nothing listens
        use(monkeypatch, url and url.format(port=free_port()))
        capsys.readouterr()
        # WHEN the Fleet view asks for the trend (documented: 503 with the reason)
        assert trend(fleet).status == 503
        # THEN the log says so once, at WARNING, with the reason and no traceback (it is no bug)
        lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
        [line] = [line for line in lines if line.get("level") in ("WARNING", "ERROR", "CRITICAL")]
        assert (line["level"], line["message"], line["operation"]) == ("WARNING", "request answered 503", "getGpuTrend")
        assert "Prometheus" in line["reason"]
        assert "exception" not in line
        assert "s3cret" not in json.dumps(line)

    def test_prometheus_down_is_503_not_made_up_data(self, fleet, monkeypatch):
        # GIVEN a Prometheus address where nothing listens
        use(monkeypatch, f"http://user:s3cret@127.0.0.1:{free_port()}")
        started = time.monotonic()
        answer = trend(fleet, "?range=1h&step=60")
        assert answer.status == 503
        assert answer.body["error"]["code"] == "service_unavailable"
        assert "not reachable" in answer.body["error"]["message"]
        assert "s3cret" not in json.dumps(answer.body)
        assert time.monotonic() - started < prometheus.CONNECT_TIMEOUT_SECONDS + 1

    def test_a_prometheus_that_never_answers_is_503_within_the_read_timeout(self, fleet, monkeypatch):
        # GIVEN a server that accepts connections and never answers
        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        monkeypatch.setattr(prometheus, "READ_TIMEOUT_SECONDS", 0.5)
        use(monkeypatch, f"http://127.0.0.1:{silent.getsockname()[1]}")
        try:
            started = time.monotonic()
            answer = trend(fleet)
            elapsed = time.monotonic() - started
        finally:
            silent.close()
        assert answer.status == 503
        assert "no answer within" in answer.body["error"]["message"]
        assert elapsed < 2

    def test_a_server_that_is_not_prometheus_is_503(self, fleet, monkeypatch):
        exporter = Exporter()  # answers text, not the API's JSON
        try:
            use(monkeypatch, f"http://127.0.0.1:{exporter.port}")
            answer = trend(fleet)
        finally:
            exporter.server.shutdown()
        assert answer.status == 503
        assert "without a JSON body" in answer.body["error"]["message"]
