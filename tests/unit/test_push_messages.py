"""What the WebSocket push makes of a stream batch, without AWS: which task changes are worth a
message (one per task per batch, the latest state), which events are new, and how a task too big
for one API Gateway message is sent."""

from __future__ import annotations

import json
from typing import Any

import pytest

from chalicelib.services.realtime import push
from chalicelib.store.dynamo import task_record
from chalicelib.store.models import TaskItem
from chalicelib.store.stream_records import Record
from fleetrun.local import ws_events

_SEQ = iter(range(10**6))


def _task(**fields: Any) -> TaskItem:
    base: dict[str, Any] = {
        "task_id": "T1", "type": "shell", "owner": "alice", "status": "running", "max_concurrency": 10,
        "created_at": "2026-11-22T18:00:00.000Z", "updated_at": "2026-11-22T18:00:00.000Z", "target_count": 1,
        "parameters": json.dumps({"command": ["true"]}),
    }
    base.update(fields)
    return TaskItem("TASK#T1", "META", **base)


def _record(event: str, old: TaskItem | None, new: TaskItem | None, sk: str = "META") -> Record:
    dynamodb: dict[str, Any] = {"Keys": {"pk": {"S": "TASK#T1"}, "sk": {"S": sk}},
                                "SequenceNumber": f"{next(_SEQ):021d}"}
    if old is not None:
        dynamodb["OldImage"] = old.serialize()
    if new is not None:
        dynamodb["NewImage"] = new.serialize()
    return Record({"eventName": event, "dynamodb": dynamodb})


def _event_record(events: list[dict[str, Any]], event: str = "INSERT") -> Record:
    image = {"pk": {"S": "TASK#T1"}, "sk": {"S": "EVT#01ABC"}, "task_id": {"S": "T1"},
             "events": {"S": json.dumps(events)}}
    return Record({"eventName": event, "dynamodb": {
        "Keys": {"pk": image["pk"], "sk": image["sk"]}, "SequenceNumber": f"{next(_SEQ):021d}", "NewImage": image,
    }})


def test_many_changes_of_one_task_in_a_batch_become_its_latest_state():
    first, second, third = _task(progress_sum=10), _task(progress_sum=40), _task(progress_sum=70, status="running")
    records = [_record("MODIFY", _task(), first), _record("MODIFY", first, second),
               _record("MODIFY", second, third)]
    changed, owners = push._changed_tasks(records)
    assert list(changed) == ["T1"]
    assert changed["T1"].progress_sum == 70
    assert owners == {"T1": "alice"}


@pytest.mark.parametrize("quiet", [{"updated_at": "2026-11-22T18:00:05.000Z"}, {"counted_ver": 42},
                                   # (`dispatched_attempt` shows as the dispatch's state: a visible change)
                                   {"finished_base": 3, "dispatch_progress_at": "2026-11-22T18:00:05.000Z"}])
def test_a_change_nobody_can_see_is_not_pushed(quiet):
    changed, _ = push._changed_tasks([_record("MODIFY", _task(), _task(**quiet))])
    assert changed == {}


def test_a_change_that_comes_back_within_the_batch_is_not_pushed():
    records = [_record("MODIFY", _task(), _task(stage="run")), _record("MODIFY", _task(stage="run"), _task())]
    assert push._changed_tasks(records)[0] == {}


def test_a_new_task_is_pushed():
    changed, _ = push._changed_tasks([_record("INSERT", None, _task(status="pending"))])
    assert changed["T1"].status == "pending"


def test_only_inserted_event_items_are_new_events():
    events = [{"event_id": "01ABC-000", "message": "hello"}]
    assert push._new_events([_event_record(events)]) == {"T1": events}
    assert push._new_events([_event_record(events, "MODIFY")]) == {}  # a replay rewrote its own item


def test_a_task_with_more_targets_than_a_message_holds_is_pushed_with_them_truncated():
    message = push.task_message(task_record(_task(target_count=push.PUSH_TARGETS_MAX + 1)))
    assert message["type"] == "task"
    assert len(message["task"]["target_nodes"]) <= push.PUSH_TARGETS_MAX
    assert message["task"]["target_nodes_truncated"] is True
    assert message["task"]["target_count"] == push.PUSH_TARGETS_MAX + 1
    assert message["task"]["dispatch"]["target_node_count"] == push.PUSH_TARGETS_MAX + 1


def test_connect_events_carry_what_chalice_and_the_app_read():
    gateway = ws_events.Gateway(domain_name="abc.execute-api.eu-west-1.amazonaws.com", stage="prod", api_id="abc")
    event = ws_events.connect_event(gateway, "cid=", query={"token": ["a", "b"]}, headers={"User-Agent": "ua"})
    context = event["requestContext"]
    assert (context["routeKey"], context["eventType"], context["connectionId"]) == ("$connect", "CONNECT", "cid=")
    assert (context["domainName"], context["stage"], context["apiId"]) == (gateway.domain_name, "prod", "abc")
    assert event["queryStringParameters"] == {"token": "b"}  # the last of repeated values, like API Gateway
    assert event["multiValueQueryStringParameters"] == {"token": ["a", "b"]}
    assert context["identity"]["userAgent"] == "ua"
    message = ws_events.message_event(gateway, "cid=", '{"action": "ping"}')
    assert message["requestContext"]["routeKey"] == "$default"
    assert message["body"] == '{"action": "ping"}'
    gone = ws_events.disconnect_event(gateway, "cid=", status_code=1001, reason="bye")
    assert gone["requestContext"]["disconnectStatusCode"] == 1001


def test_connection_ids_look_like_api_gateways():
    ids = {ws_events.new_connection_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(len(i) == 16 and i.endswith("=") for i in ids)
