"""Log keys, token scrubbing, EMF metrics and the Chalice middleware."""

from __future__ import annotations

import ast
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from chalice.app import Chalice
from chalice.test import Client

from chalicelib import observability
from chalicelib.observability import logger

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1MSJ9.c2lnbmF0dXJl"


@pytest.fixture(autouse=True)
def _fresh_state() -> Iterator[None]:
    logger.clear_state()
    observability.unbind()
    observability.metrics.clear_metrics()
    yield
    logger.clear_state()
    observability.unbind()
    observability.metrics.clear_metrics()


def _log_lines(text: str) -> list[dict[str, Any]]:
    """The JSON log lines in captured stdout (EMF blobs are JSON too; they carry `_aws`)."""
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    return [line for line in lines if "_aws" not in line]


def _emf_blobs(text: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    return [line for line in lines if "_aws" in line]


class TestBind:
    def test_bound_keys_appear_on_following_lines(self, capsys):
        # GIVEN keys bound for a node run
        observability.bind(task_id="t1", node="n1", run_id=None)

        # WHEN a line is logged
        logger.info("claimed")

        # THEN it is JSON carrying the keys (None values skipped)
        [line] = _log_lines(capsys.readouterr().out)
        assert line["message"] == "claimed"
        assert line["task_id"] == "t1"
        assert line["node"] == "n1"
        assert "run_id" not in line
        assert line["service"] == "fleetrun"

    def test_unbind_removes_them(self, capsys):
        observability.bind(task_id="t1", node="n1")
        observability.unbind()

        logger.info("done")

        [line] = _log_lines(capsys.readouterr().out)
        assert "task_id" not in line
        assert "node" not in line


class TestScrubbing:
    @pytest.mark.parametrize(
        ("message", "secret"),
        [
            ("auth header Bearer eyJabc.def.ghi", "eyJabc.def.ghi"),
            (f"token {JWT} rejected", JWT),
            ("agent frn.node-7.Zx9_kq-w registered", "frn.node-7.Zx9_kq-w"),
            ("authorization: bearer opaque-token-123", "opaque-token-123"),
        ],
    )
    def test_tokens_are_scrubbed_from_messages(self, capsys, message, secret):
        logger.info(message)

        out = capsys.readouterr().out
        [line] = _log_lines(out)
        assert secret not in out
        assert "***" in line["message"]

    def test_tokens_are_scrubbed_from_extra_keys_and_exceptions(self, capsys):
        # GIVEN a token in an extra key, a bound key and an exception message
        observability.bind(task_id="Bearer abc.def")
        try:
            raise RuntimeError(f"bad token {JWT}")
        except RuntimeError:
            # WHEN it is logged
            logger.exception("failed", extra={"headers": {"Authorization": f"Bearer {JWT}"}})

        # THEN none of it reaches stdout, and the line is still valid JSON
        out = capsys.readouterr().out
        [line] = _log_lines(out)
        assert JWT not in out
        assert "abc.def" not in out
        assert line["headers"] == {"Authorization": "Bearer ***"}

    def test_plain_text_is_left_alone(self, capsys):
        logger.info("scaled partition gpu to 12 nodes (eyJ is not a token by itself)")

        [line] = _log_lines(capsys.readouterr().out)
        assert line["message"] == "scaled partition gpu to 12 nodes (eyJ is not a token by itself)"


class TestMetrics:
    def test_count_then_flush_prints_an_emf_blob(self, capsys):
        # GIVEN two counts of one metric
        observability.count("RunsClaimed")
        observability.count("RunsClaimed", 2)

        # WHEN metrics are flushed
        observability.flush_metrics()

        # THEN one EMF blob names the metric in the Fleetrun namespace
        [blob] = _emf_blobs(capsys.readouterr().out)
        [directive] = blob["_aws"]["CloudWatchMetrics"]
        assert directive["Namespace"] == "Fleetrun"
        assert directive["Metrics"] == [{"Name": "RunsClaimed", "Unit": "Count"}]
        assert blob["RunsClaimed"] == [1.0, 2.0]
        assert blob["service"] == "fleetrun"

    def test_count_with_dimensions_is_published_at_once(self, capsys):
        observability.count("TasksSubmitted", task_type="shell")

        [blob] = _emf_blobs(capsys.readouterr().out)
        assert blob["TasksSubmitted"] == [1.0]
        assert blob["task_type"] == "shell"
        assert ["service", "task_type"] in blob["_aws"]["CloudWatchMetrics"][0]["Dimensions"]

    def test_flush_with_nothing_prints_nothing(self, capsys, recwarn):
        observability.flush_metrics()

        assert capsys.readouterr().out == ""
        assert len(recwarn) == 0


def _app() -> Chalice:
    app = Chalice(app_name="observability-test")
    observability.chalice_middleware(app)

    @app.route("/ping")
    def ping() -> dict[str, bool]:
        logger.info("pong")
        observability.count("Pings")
        return {"ok": True}

    @app.lambda_function(name="echo")
    def echo(event: dict[str, Any], context: object) -> dict[str, Any]:
        observability.bind(task_id=event.get("task_id"))
        logger.info("echo")
        return event

    @app.schedule("rate(1 minute)", name="tick")
    def tick(event: object) -> None:
        logger.info("tick")
        observability.count("Ticks")

    return app


class TestChaliceMiddleware:
    def test_http_route_logs_the_lambda_context_and_flushes_metrics(self, capsys):
        app = _app()
        with Client(app) as client:
            response = client.http.get("/ping")

        assert response.json_body == {"ok": True}
        out = capsys.readouterr().out
        [line] = _log_lines(out)
        assert line["message"] == "pong"
        assert line["function_request_id"]
        assert "cold_start" in line
        [blob] = _emf_blobs(out)
        assert blob["Pings"] == [1.0]

    def test_keys_bound_in_one_invocation_do_not_leak_into_the_next(self, capsys):
        app = _app()
        with Client(app) as client:
            client.lambda_.invoke("echo", {"task_id": "t1"})
            client.lambda_.invoke("echo", {})

        first, second = _log_lines(capsys.readouterr().out)
        assert first["task_id"] == "t1"
        assert "task_id" not in second
        assert first["function_name"] == "echo"

    def test_event_handler_called_with_a_fake_or_missing_context(self, capsys):
        # GIVEN a scheduled handler called directly, as the local runtime does
        app = _app()
        event = {
            "version": "0",
            "id": "e1",
            "detail-type": "Scheduled Event",
            "source": "aws.events",
            "account": "1",
            "time": "2026-01-01T00:00:00Z",
            "region": "us-east-1",
            "resources": [],
            "detail": {},
        }

        # WHEN the context is a bare object, then None
        app.handler_map["tick"](event, SimpleNamespace(aws_request_id="req-1"))
        app.handler_map["tick"](event, None)

        # THEN both run, log, and flush their metrics
        out = capsys.readouterr().out
        first, second = _log_lines(out)
        assert first["function_request_id"] == "req-1"
        assert "function_request_id" not in second
        assert [blob["Ticks"] for blob in _emf_blobs(out)] == [[1.0], [1.0]]


class TestKeysOfConcurrentRequests:
    """The local runtime serves each request on its own thread of one process."""

    def test_two_interleaved_requests_never_log_each_others_keys(self, capsys):
        # GIVEN an app whose routes bind their caller and task, as chalicelib/api/http.py does
        from chalice.config import Config
        from chalice.local import LocalChalice, LocalGateway

        app = LocalChalice(app_name="interleaved")
        observability.chalice_middleware(app)
        a_bound, b_logged = threading.Event(), threading.Event()

        @app.route("/tasks/{task_id}/cancel", methods=["POST"])
        def cancel(task_id: str) -> dict[str, str]:
            observability.bind(user="alice", task_id=task_id)
            logger.info("cancelling")
            a_bound.set()
            assert b_logged.wait(5)
            logger.info("cancelled")
            return {}

        @app.route("/tasks", methods=["POST"])
        def create() -> dict[str, str]:
            assert a_bound.wait(5)
            observability.bind(user="bob")
            logger.error("request failed")
            b_logged.set()
            return {}

        gateway = LocalGateway(app, Config.create(chalice_stage="dev", app_name="interleaved", chalice_app=app))

        def request(path: str) -> None:
            gateway.handle_request(method="POST", path=path, headers={}, body=b"{}")

        # WHEN alice's request is in flight while bob's fails, then alice's ends
        threads = [threading.Thread(target=request, args=(path,)) for path in ("/tasks/t-alice/cancel", "/tasks")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)

        # THEN each line carries its own request's keys, and only those
        lines = {line["message"]: line for line in _log_lines(capsys.readouterr().out)}
        assert (lines["request failed"].get("user"), lines["request failed"].get("task_id")) == ("bob", None)
        for message in ("cancelling", "cancelled"):
            assert (lines[message]["user"], lines[message]["task_id"]) == ("alice", "t-alice")

    def test_keys_bound_on_one_thread_are_not_on_another_threads_lines(self, capsys):
        # GIVEN keys bound on one thread, which stays alive while another logs
        bound, logged = threading.Event(), threading.Event()

        def agent_request() -> None:
            observability.bind(node_id="demo-1", node="demo-3")
            bound.set()
            assert logged.wait(5)
            logger.info("claimed")

        request = threading.Thread(target=agent_request)
        request.start()
        assert bound.wait(5)

        # WHEN another thread logs
        logger.info("sweep done")
        logged.set()
        request.join(5)

        # THEN only the binding thread's line carries them
        lines = {line["message"]: line for line in _log_lines(capsys.readouterr().out)}
        assert not {"node_id", "node"} & set(lines["sweep done"])
        assert (lines["claimed"]["node_id"], lines["claimed"]["node"]) == ("demo-1", "demo-3")

    def test_a_scheduled_handler_logs_none_of_the_keys_of_a_request_in_flight(self, capsys):
        # GIVEN an agent's request in flight on the server's thread, its keys bound
        # (`sweep done node_id=demo-1 node=demo-3`, issue 15)
        from chalice.config import Config
        from chalice.local import LocalChalice, LocalGateway

        app = LocalChalice(app_name="sweep-beside-claims")
        observability.chalice_middleware(app)
        in_flight, swept = threading.Event(), threading.Event()

        @app.route("/v1/agents/{node_id}/claim", methods=["POST"])
        def claim(node_id: str) -> dict[str, str]:
            observability.bind(node_id=node_id, node=node_id)
            in_flight.set()
            assert swept.wait(5)
            logger.info("claim answered")
            return {}

        @app.schedule("rate(1 minute)", name="sweep")
        def sweep(event: object) -> None:
            logger.info("sweep done")

        gateway = LocalGateway(app, Config.create(chalice_stage="dev", app_name="sweep", chalice_app=app))
        request = threading.Thread(target=gateway.handle_request, kwargs={
            "method": "POST", "path": "/v1/agents/demo-1/claim", "headers": {}, "body": b"{}"})
        request.start()
        assert in_flight.wait(5)

        # WHEN the scheduler's thread runs the sweep meanwhile
        scheduler = threading.Thread(target=app.handler_map["sweep"], args=(
            {"version": "0", "id": "e1", "detail-type": "Scheduled Event", "source": "aws.events",
             "account": "1", "time": "2026-01-01T00:00:00Z", "region": "us-east-1", "resources": [],
             "detail": {}}, None))
        scheduler.start()
        scheduler.join(5)
        swept.set()
        request.join(5)

        # THEN the sweep's line has none of the claim's keys, the claim's line has its own
        lines = {line["message"]: line for line in _log_lines(capsys.readouterr().out)}
        assert not {"node_id", "node"} & set(lines["sweep done"])
        assert lines["claim answered"]["node"] == "demo-1"

    def test_a_record_of_a_batch_does_not_log_under_the_previous_records_task(self, capsys):
        # GIVEN a batch handler that binds each record's task, when it has one
        def handle(record: dict[str, str]) -> None:
            observability.bind(task_id=record.get("task_id"))
            logger.info("handled")

        # WHEN a record with a task is followed by one without
        for record in ({"task_id": "t1"}, {}):
            observability.per_record(handle)(record)

        # THEN the second line has no task
        first, second = _log_lines(capsys.readouterr().out)
        assert first["task_id"] == "t1"
        assert "task_id" not in second


def test_no_module_sets_log_keys_that_outlive_an_invocation():
    """`Logger.append_keys` and friends change keys every thread and every later invocation of
    the process share: only `observability.bind` (context-local keys) may add request keys."""
    shared_state = {"append_keys", "remove_keys", "clear_state", "structure_logs", "set_correlation_id"}
    offenders = []
    for path in [Path("app.py"), *Path("chalicelib").rglob("*.py")]:
        if path == Path("chalicelib/observability.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in shared_state:
                offenders.append(f"{path}:{node.lineno} {node.attr}")
    assert offenders == []
