"""The WebSocket API (API.md "Real time") through the app's real handlers and stream, on moto:
connect with a token, subscribe within what the user may see, pushes of task changes and
events, cleanup of gone connections. Pushes travel over real HTTP to a recording
`@connections` endpoint (tests/ws_connections.py)."""

from __future__ import annotations

import json
import time
from typing import Any

import boto3
import pytest

from chalicelib import auth, config
from chalicelib.services import sweeper
from chalicelib.store import connections, events
from chalicelib.store.models import WsConnectionItem, WsSubscriptionItem
from fleetrun.local import ws_events
from fleetrun.local.pumps import LambdaContext
from tests.harness import SECRET, Fleet, token
from tests.integration.sockets import GATEWAY, Sockets
from tests.processes import free_port
from tests.waiting import wait_for

SHELL = {"type": "shell", "target_nodes": ["n1"], "parameters": {"command": ["true"]}}


def _tasks(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m["task"] for m in messages if m["type"] == "task"]


def _events(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The event messages as a client keeps them: once per event id, in id order (the stream may
    bring an event item's records late, or again after a replayed batch)."""
    unique = {m["event"]["event_id"]: m for m in messages if m["type"] == "event"}
    return [unique[event_id] for event_id in sorted(unique)]


def _subscribed_to_a_claimed_run(ws: Sockets, fleet: Fleet) -> tuple[str, dict[str, Any], str]:
    """A task whose only run node n1 claimed, and a connection subscribed to it that has read
    everything so far: (task id, the claimed run, connection id)."""
    fleet.register("n1")
    task_id = fleet.submit(SHELL).body["task_id"]
    fleet.settle()
    [run] = fleet.claim("n1")
    fleet.settle()
    connection_id = ws.open(subscribe=task_id)
    ws.received(connection_id)
    return task_id, run, connection_id


# --- connect ------------------------------------------------------------------------------
@pytest.mark.parametrize("query", [{}, {"token": ["not-a-jwt"]}, {"token": [token("alice", ("admin",))[:-4] + "AAAA"]}])
def test_connect_without_a_valid_token_is_refused_and_stores_nothing(ws, query):
    answer, connection_id = ws.connect(query=query)
    assert answer["statusCode"] == 401
    assert json.loads(answer["body"])["error"]["code"] == "unauthenticated"
    assert connections.find_connection(connection_id) is None


def test_connect_with_a_token_granting_no_role_is_forbidden(ws):
    answer, _ = ws.connect("mallory", ("intruder",))
    assert answer["statusCode"] == 403


def test_a_connection_and_its_subscriptions_carry_the_ttl_attribute(ws, fleet):
    task_id = fleet.submit(SHELL).body["task_id"]
    connection_id = ws.open(subscribe=task_id)
    ws.send(connection_id, {"action": "subscribe", "task_id": "*"})
    item = WsConnectionItem.get(connections.connection_pk(connection_id), "META")
    # API Gateway closes a connection after 2 hours: the items expire a little later
    assert 2 * 3600 < item.expires_at - time.time() <= connections.CONNECTION_TTL_SECONDS
    subs = [WsSubscriptionItem.get(connections.topic_pk(t), connection_id) for t in (task_id, "*")]
    assert {s.expires_at for s in subs} == {item.expires_at}
    ttl = boto3.client("dynamodb").describe_time_to_live(TableName=config.table_name())["TimeToLiveDescription"]
    assert ttl["AttributeName"] == "expires_at"


# --- subscribe ----------------------------------------------------------------------------
def test_subscribing_to_an_own_task_answers_with_its_current_state(ws, fleet):
    task_id = fleet.submit(SHELL).body["task_id"]
    connection_id = ws.open()
    answers = ws.send(connection_id, {"action": "subscribe", "task_id": task_id})
    assert answers == [{"type": "subscribed", "task_id": task_id}, {"type": "task", "task": fleet.task(task_id)}]


def test_a_change_written_while_the_subscription_is_stored_is_in_the_answer(ws, fleet, monkeypatch):
    # GIVEN a task cancelled after the subscribe's permission check, just before the subscription is
    # stored (its push, were the stream quick, would find no subscriber yet)
    task_id = fleet.submit(SHELL).body["task_id"]
    connection_id = ws.open()
    store, changed = connections.subscribe, []

    def stored_after_a_change(connection: Any, topic: str) -> None:
        changed.append(fleet.user("POST", f"/v1/tasks/{task_id}/cancel").body)
        store(connection, topic)

    monkeypatch.setattr(connections, "subscribe", stored_after_a_change)
    # WHEN the client subscribes
    answers = ws.send(connection_id, {"action": "subscribe", "task_id": task_id})
    # THEN the state it is answered with is read after the change
    assert [t["updated_at"] for t in _tasks(answers)] == [changed[0]["updated_at"]]


def test_a_change_of_counts_alone_raises_the_revision_a_client_orders_copies_by(ws, fleet):
    # GIVEN a running task of two nodes, read
    fleet.register("n1", "n2")
    task_id = fleet.submit({**SHELL, "target_nodes": ["n1", "n2"]}).body["task_id"]
    fleet.settle()
    before = fleet.task(task_id)
    # WHEN one node claims its run (counted by the stream: node_counts change, the status does not)
    assert len(fleet.claim("n1")) == 1
    fleet.settle()
    after = fleet.task(task_id)
    # THEN the revision grew although updated_at did not move
    assert (before["node_counts"]["running"], after["node_counts"]["running"]) == (0, 1)
    assert after["updated_at"] == before["updated_at"]
    assert after["revision"] > before["revision"]


def test_subscribing_to_another_users_task_is_not_found_but_admins_may(ws, fleet):
    task_id = fleet.submit(SHELL, who="alice").body["task_id"]
    bob = ws.open("bob")
    [answer] = ws.send(bob, {"action": "subscribe", "task_id": task_id})
    assert answer["type"] == "error"
    assert answer["error"]["code"] == "not_found"
    assert connections.subscribers(task_id) == []
    root = ws.open("root", ("admin",))
    assert ws.send(root, {"action": "subscribe", "task_id": task_id})[0]["type"] == "subscribed"


@pytest.mark.parametrize(("body", "path"), [
    ("not json", "$"),
    ({"action": "shout"}, "$.action"),
    ({"action": "subscribe"}, "$.task_id"),
    ({"action": "subscribe", "task_id": 7}, "$.task_id"),
    ('{"action": "subscribe", "task_id": "\\ud800"}', "$.task_id"),  # a lone surrogate: no key can hold it
])
def test_a_malformed_message_is_answered_with_a_validation_error(ws, body, path):
    connection_id = ws.open()
    [answer] = ws.send(connection_id, body)
    assert answer["error"]["code"] == "validation_error"
    assert answer["error"]["details"][0]["path"] == path


def test_ping_is_answered_with_pong(ws):
    assert ws.send(ws.open(), {"action": "ping"}) == [{"type": "pong"}]


def test_a_message_on_an_unknown_connection_is_unauthenticated(ws):
    [answer] = ws.send("never-connected=", {"action": "subscribe", "task_id": "*"})
    assert answer["error"]["code"] == "unauthenticated"


# --- pushes -------------------------------------------------------------------------------
def test_status_changes_and_events_are_pushed_to_a_task_subscriber(ws, fleet):
    # GIVEN a subscriber of a task that was just created
    fleet.register("n1")
    task_id = fleet.submit(SHELL).body["task_id"]
    connection_id = ws.open(subscribe=task_id)
    ws.received(connection_id)
    # WHEN the task runs to completion
    fleet.settle()
    fleet.run_agents(["n1"])
    # THEN the statuses arrive in order, ending with the state GET /v1/tasks/{id} shows, and the
    # events are the event log's, each once
    messages = ws.received(connection_id)
    statuses = [t["status"] for t in _tasks(messages)]
    assert statuses[-1] == "completed"
    assert statuses == sorted(statuses, key=["pending", "running", "completed"].index)
    assert _tasks(messages)[-1] == fleet.task(task_id)
    assert all(m["task_id"] == task_id for m in _events(messages))
    assert [m["event"] for m in _events(messages)] == fleet.events(task_id)


def test_a_progress_change_is_pushed(ws, fleet):
    task_id, run, connection_id = _subscribed_to_a_claimed_run(ws, fleet)
    # WHEN the agent reports 60 % on its only node
    answer = fleet.agent("n1", f"/v1/runs/{run['run_id']}/heartbeat", {"attempt": 1, "progress": 60, "step": "run"})
    assert answer.status == 200, answer
    fleet.settle()
    # THEN the subscriber learns the task's new progress
    tasks = _tasks(ws.received(connection_id))
    assert tasks
    assert tasks[-1]["progress"] == fleet.task(task_id)["progress"] > 0


def test_agent_events_are_pushed_in_the_event_log_representation(ws, fleet):
    task_id, run, connection_id = _subscribed_to_a_claimed_run(ws, fleet)
    posted = {"type": "warning", "step": "run", "message": "disk 91% full", "progress": 30, "data": {"disk": "/"}}
    answer = fleet.agent("n1", f"/v1/runs/{run['run_id']}/events", {"attempt": 1, "events": [posted]})
    assert answer.status == 202, answer
    fleet.settle()
    [message] = [m for m in _events(ws.received(connection_id)) if m["event"]["message"] == "disk 91% full"]
    assert message["task_id"] == task_id
    assert message["event"] == next(e for e in fleet.events(task_id) if e["message"] == "disk 91% full")


def test_events_whose_item_is_packed_are_pushed_with_the_rest_of_the_batch(ws, fleet):
    # GIVEN a subscriber to a task, and an agent posting events whose item is compressed (a
    # binary attribute: Lambda's stream event carries it base64-encoded)
    _, run, connection_id = _subscribed_to_a_claimed_run(ws, fleet)
    posted = [{"type": "info", "step": "run", "message": f"line {i}: " + "x" * 200} for i in range(8)]
    assert len(json.dumps(posted)) > events.PACK_ABOVE
    answer = fleet.agent("n1", f"/v1/runs/{run['run_id']}/events", {"attempt": 1, "events": posted})
    assert answer.status == 202, answer
    # WHEN the run ends in the same stream batches
    assert fleet.finish("n1", run).status == 200
    fleet.settle()
    # THEN every event is pushed, and so is the task's end
    received = ws.received(connection_id)
    assert [m["event"]["message"] for m in _events(received) if m["event"]["message"].startswith("line ")] \
        == [e["message"] for e in posted]
    assert _tasks(received)[-1]["status"] == "completed"


def test_star_subscribers_receive_only_the_tasks_they_may_see(ws, fleet):
    # GIVEN alice and an admin subscribed to everything, and bob to nothing
    alice = ws.open("alice", subscribe="*")
    root = ws.open("root", ("admin",), subscribe="*")
    # WHEN alice and bob each create a task
    mine = fleet.submit(SHELL, who="alice").body["task_id"]
    theirs = fleet.submit(SHELL, who="bob").body["task_id"]
    fleet.settle()
    # THEN alice hears only of hers, the admin of both
    assert {t["task_id"] for t in _tasks(ws.received(alice))} == {mine}
    assert {t["task_id"] for t in _tasks(ws.received(root))} == {mine, theirs}


def test_star_subscribers_receive_only_the_events_of_tasks_they_may_see(ws, fleet):
    fleet.register("n1")
    theirs = fleet.submit(SHELL, who="bob").body["task_id"]
    fleet.settle()
    [run] = fleet.claim("n1")
    fleet.settle()
    alice = ws.open("alice", subscribe="*")
    fleet.agent("n1", f"/v1/runs/{run['run_id']}/events",
                {"attempt": 1, "events": [{"type": "info", "step": "run", "message": "only bob's"}]})
    fleet.settle()
    about_theirs = [m for m in ws.received(alice) if theirs in (m.get("task_id"), m.get("task", {}).get("task_id"))]
    assert about_theirs == []


def test_a_star_subscriber_receives_events_of_own_tasks_when_the_batch_shows_no_task_change(ws, fleet):
    # GIVEN alice's running task, and alice subscribed to everything
    fleet.register("n1")
    mine = fleet.submit(SHELL, who="alice").body["task_id"]
    fleet.settle()
    [run] = fleet.claim("n1")
    fleet.settle()
    alice = ws.open("alice", subscribe="*")
    # WHEN only an event is written (the batch has no task record to tell the owner)
    fleet.agent("n1", f"/v1/runs/{run['run_id']}/events",
                {"attempt": 1, "events": [{"type": "info", "step": "run", "message": "alice's own"}]})
    fleet.settle()
    # THEN the push looked the owner up and alice got her event
    pushed = _events(ws.received(alice))
    assert [(m["task_id"], m["event"]["message"]) for m in pushed] == [(mine, "alice's own")]


def test_one_batch_of_many_changes_pushes_one_task_message_with_the_latest_state(ws, fleet):
    # GIVEN every stream record of a 8-node task's whole life, recorded
    nodes = [f"n{i}" for i in range(8)]
    fleet.register(*nodes)
    recorded: list[dict[str, Any]] = []
    handler = fleet.stream.handler

    def recording(event, context):
        recorded.extend(event["Records"])
        return handler(event, context)

    fleet.stream.handler = recording
    task_id = fleet.submit({**SHELL, "target_nodes": nodes}).body["task_id"]
    fleet.settle()
    fleet.run_agents(nodes)
    # WHEN a subscriber's stream delivers all of it as one batch
    connection_id = ws.open(subscribe=task_id)
    ws.received(connection_id)
    from chalicelib.services import stream

    assert stream.notify(recorded) == []
    # THEN there is one task message, the final state, after all the events
    messages = ws.received(connection_id)
    assert [m["type"] for m in messages][-1] == "task"
    [task] = _tasks(messages)
    assert task == fleet.task(task_id)
    assert [m["event"] for m in _events(messages)] == fleet.events(task_id)


def test_pushed_tasks_carry_secrets_masked(ws, fleet):
    body = {"type": "slurm.scale_up", "target_nodes": ["n1"], "parameters": {
        "ssh_user": "root", "salt_master": "salt-1", "partition": "gpu", "password": "hunter2"}}
    root = ws.open("root", ("admin",), subscribe="*")
    fleet.submit(body)
    fleet.settle()
    messages = ws.received(root)
    assert _tasks(messages)[0]["parameters"]["password"] == "***"
    assert "hunter2" not in json.dumps(messages)


def test_unsubscribing_and_disconnecting_stop_the_pushes(ws, fleet):
    task_id = fleet.submit(SHELL).body["task_id"]
    quiet = ws.open(subscribe=task_id)
    assert ws.send(quiet, {"action": "unsubscribe", "task_id": task_id}) == [
        {"type": "unsubscribed", "task_id": task_id}]
    gone = ws.open(subscribe="*")
    ws.disconnect(gone)
    assert connections.find_connection(gone) is None
    assert connections.subscribers("*") == []
    fleet.settle()
    assert ws.received(quiet) == []
    assert ws.received(gone) == []


def test_a_gone_connection_is_deleted_with_its_subscriptions_on_the_next_push(ws, fleet):
    # GIVEN a connection whose client vanished without API Gateway running $disconnect
    task_id = fleet.submit(SHELL).body["task_id"]
    vanished = ws.open(subscribe=task_id)
    ws.send(vanished, {"action": "subscribe", "task_id": "*"})
    ws.recorder.gone.add(vanished)
    # WHEN the next change is pushed (410 GoneException)
    fleet.settle()
    # THEN the connection and both its subscriptions are gone from the table
    assert connections.find_connection(vanished) is None
    assert connections.subscribers(task_id) == []
    assert connections.subscribers("*") == []


# --- token expiry ---------------------------------------------------------------------------
def _open_expiring(ws: Sockets, seconds: int, subscribe: str) -> str:
    """A connection opened with a token that expires in `seconds`, subscribed to `subscribe`."""
    query = {"token": [auth.mint_token("alice", ["operator"], SECRET, ttl_seconds=seconds)]}
    answer, connection_id = ws.connect(query=query)
    assert answer == {"statusCode": 200}, answer
    assert ws.send(connection_id, {"action": "subscribe", "task_id": subscribe})[0]["type"] == "subscribed"
    return connection_id


def test_the_sweeper_closes_a_connection_whose_token_expired_and_says_why(ws, fleet):
    # GIVEN a connection opened with a token valid one more minute, and one with a fresh token
    expiring = _open_expiring(ws, 60, "*")
    fresh = ws.open(subscribe="*")
    # WHEN the sweeper passes after the first token expired
    report = sweeper.sweep(now=time.time() + 61)
    # THEN that connection was told why and closed (API Gateway picks the close code: the
    # message carries 4001), and it is forgotten with its subscription; the other one stays
    assert report.connections_closed == 1
    assert ws.recorder.closed == [expiring]
    [farewell] = ws.received(expiring)
    assert farewell["type"] == "error"
    assert (farewell["error"]["code"], farewell["close_code"]) == ("unauthenticated", 4001)
    assert connections.find_connection(expiring) is None
    assert [s.connection_id for s in connections.subscribers("*")] == [fresh]


def test_no_push_reaches_a_connection_once_its_token_expired_and_its_messages_are_refused(ws, fleet):
    # GIVEN a subscriber whose token expires in 3 s (time to connect and subscribe on a loaded
    # machine, throttles retried), and one with a fresh token
    expiring = _open_expiring(ws, 3, "*")
    fresh = ws.open(subscribe="*")
    wait_for(lambda: connections.find_connection(expiring) is None, 10, "the token to expire")
    # WHEN a task changes
    fleet.submit(SHELL)
    fleet.settle()
    # THEN only the fresh connection hears of it, and the expired one may not subscribe again
    assert _tasks(ws.received(fresh))
    assert ws.received(expiring) == []
    [refused] = ws.send(expiring, {"action": "subscribe", "task_id": "*"})
    assert refused["error"]["code"] == "unauthenticated"


def test_an_unreachable_endpoint_never_fails_the_stream_batch(fleet, monkeypatch):
    # GIVEN pushes configured to an endpoint where nothing listens, and a subscriber
    monkeypatch.setenv("FLEETRUN_WEBSOCKET_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    config.reset()
    connection_id = ws_events.new_connection_id()
    event = ws_events.connect_event(GATEWAY, connection_id, query={"token": [token("alice")]})
    assert fleet.app_module.ws_connect(event, LambdaContext()) == {"statusCode": 200}
    connections.subscribe(connections.find_connection(connection_id), "*")
    # WHEN a task is created and dispatched
    fleet.register("n1")
    task_id = fleet.submit(SHELL).body["task_id"]
    fleet.settle()
    # THEN the task moved on as usual and the statistics match a recount
    assert fleet.task(task_id)["status"] == "running"
    from tests.harness import assert_statistics_equal_recount

    assert_statistics_equal_recount()


def test_without_an_endpoint_nothing_is_pushed_and_nothing_is_read(fleet, monkeypatch):
    from chalicelib.services.realtime import push

    reads: list[str] = []
    monkeypatch.setattr(connections, "subscribers", lambda topic: reads.append(topic) or [])
    fleet.submit(SHELL)
    fleet.settle()
    assert reads == []
    assert push.sender.enabled() is False
