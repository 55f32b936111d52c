"""Log keys, token scrubbing, EMF metrics and the Chalice middleware."""

from __future__ import annotations

import json
from collections.abc import Iterator
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
