"""The local runtime's one stream (fleetrun/local/logs.py): what a reader of `make run` sees."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from fleetrun.local import logs

DIRECTIVE = {"Namespace": "Fleetrun", "Dimensions": [["service"]],
             "Metrics": [{"Name": "NodeRunsFinished", "Unit": "Count"}]}
EMF = json.dumps({"_aws": {"Timestamp": 1, "CloudWatchMetrics": [DIRECTIVE]}, "service": "fleetrun",
                  "NodeRunsFinished": [1.0]})
LINE = json.dumps({"level": "INFO", "message": "run finished", "service": "fleetrun", "node": "demo-1"})


@pytest.fixture
def app_level() -> Iterator[logging.Logger]:
    app_logger = logging.getLogger("fleetrun")
    level = app_logger.level
    yield app_logger
    app_logger.setLevel(level)


def _through_the_stream(*lines: str) -> list[str]:
    target = io.StringIO()
    stream = logs.TaggedStream(target)
    logs.set_part("api")
    try:
        for line in lines:
            stream.write(line + "\n")
    finally:
        logs.set_part("")
    return target.getvalue().splitlines()


def test_a_log_line_is_compact_and_tagged_but_a_metrics_blob_is_not_shown(app_level):
    # GIVEN the app logging at INFO, as `make run` does
    app_level.setLevel(logging.INFO)
    # WHEN the app prints a log line and an EMF metrics blob
    printed = _through_the_stream(LINE, EMF)
    # THEN the reader sees the log line only
    assert printed == ["[api] INFO    run finished node=demo-1"]


def test_at_debug_metrics_blobs_are_shown(app_level):
    app_level.setLevel(logging.DEBUG)
    printed = _through_the_stream(EMF)
    assert printed == ["[api] metrics NodeRunsFinished=[1.0]"]
