"""What the end-to-end stack's log check (tests/e2e/stack.py `Stack.unexplained_errors`) counts
against a module: every ERROR record of the runtime's log, traceback included, except those an
injected fault explains."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.stack import Stack

LOG = """\
[runtime] fidelity: strict, seed 1 (replay with FLEETRUN_FIDELITY_SEED=1)
[api-route] INFO    task created user=admin task_id=T1 type=shell targets=1
[stream_aggregator-lambda] ERROR   stream consumer failed consumer=release_on_terminal exception=Traceback (...):
  File "chalicelib/store/keys.py", line 101, in release
pynamodb.exceptions.DeleteError: Failed to delete item: ConditionalCheckFailedException exception_name=DeleteError
[scheduler] ERROR   sweep of task failed; next pass retries task_id=T1 exception=Traceback (most recent call last):
  File "chalicelib/store/tasks.py", line 9, in find
pynamodb.exceptions.GetError: ProvisionedThroughputExceededException (injected) exception_name=GetError
[stream_aggregator-shard-2] ERROR   stream_aggregator: giving up on 7 stream record(s) 11..15
[api] 127.0.0.1 - - [07/Dec/2026 20:25:53] "GET /v1/tasks HTTP/1.1" 200 -
"""


def test_errors_count_unless_an_injected_fault_explains_them(tmp_path: Path) -> None:
    # GIVEN a runtime log with a consumer's failure, an injected throttle, and a batch given up
    (tmp_path / "runtime.log").write_text(LOG)
    # THEN the failure and the batch count, each by its first line; the throttle does not
    errors = Stack(url="", admin_token="", data_dir=tmp_path).unexplained_errors()
    assert [e.split("]")[0] for e in errors] == ["[stream_aggregator-lambda", "[stream_aggregator-shard-2"]
    assert "consumer=release_on_terminal" in errors[0]
