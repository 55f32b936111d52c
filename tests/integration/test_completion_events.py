"""Events sent with a completion ride on the run's own write and reach the event log through
the stream, once, in order, whatever gets replayed."""

from __future__ import annotations

from fleetrun.local.pumps import LambdaContext

BODY = {"type": "config.release", "target_nodes": ["e1", "e2"], "parameters": {"website_id": 7}}


def _complete_with_events(fleet, node: str, run: dict) -> None:
    steps = [{"type": "success", "step": "apply_config", "message": f"{node} applied", "progress": 100}]
    answer = fleet.agent(node, f"/v1/runs/{run['run_id']}/complete",
                         {"attempt": run["attempt"], "status": "succeeded", "events": steps})
    assert answer.status == 200, answer


def test_completion_events_reach_the_log_once_and_after_what_was_already_there(fleet):
    # GIVEN a dispatched task and a follower who has read the log so far
    fleet.register("e1", "e2")
    task_id = fleet.submit(BODY).body["task_id"]
    fleet.settle()
    seen = fleet.events(task_id)
    cursor = seen[-1]["event_id"]
    # WHEN both nodes complete with their events, and the stream delivers
    for node in ("e1", "e2"):
        _complete_with_events(fleet, node, fleet.claim(node)[0])
    fleet.settle()
    # THEN the follower's next page has each node's event exactly once, after its cursor
    newer = fleet.user("GET", f"/v1/tasks/{task_id}/events?after={cursor}&limit=200").body["items"]
    node_events = [e for e in newer if e.get("node")]
    assert sorted(e["message"] for e in node_events) == ["e1 applied", "e2 applied"]
    assert all(e["step"] == "apply_config" and e["type"] == "success" for e in node_events)
    assert fleet.task(task_id)["status"] == "completed"


def test_a_replayed_stream_batch_does_not_copy_completion_events(fleet):
    # GIVEN every stream event the app received, recorded
    delivered: list[dict] = []
    handler = fleet.stream.handler

    def recording(event, context):
        delivered.append(event)
        return handler(event, context)

    fleet.stream.handler = recording
    fleet.register("e1", "e2")
    task_id = fleet.submit(BODY).body["task_id"]
    fleet.settle()
    for node in ("e1", "e2"):
        _complete_with_events(fleet, node, fleet.claim(node)[0])
    fleet.settle()
    before = fleet.events(task_id)
    # WHEN all of it is delivered again
    for event in delivered:
        handler(event, LambdaContext())
    # THEN the log is unchanged
    assert fleet.events(task_id) == before
