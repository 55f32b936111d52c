"""Notification subscriptions end to end on moto: a task change goes through the stream to the
notify queue and the notify worker delivers it to a real local HTTP server (or SES)."""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import socket
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
import urllib3.util.connection

from chalicelib import config
from chalicelib.notify import delivery
from chalicelib.resources import NOTIFY_QUEUE
from fleetrun.local.pumps import LambdaContext, SqsPump
from tests import receivers
from tests.harness import Fleet

NODES = ["n1", "n2"]
SECRET = "whsec-0123456789"
DING_SECRET = "SEC0123456789abcdef"
PASSWORD = "hunter2-very-secret"
DASHBOARD = "https://fleet.example.com"


@pytest.fixture
def receiver() -> Iterator[receivers.Receiver]:
    server = receivers.start()
    yield server
    server.close()


@pytest.fixture
def notify(fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> SqsPump:
    """The notify worker's pump, with Lambda's own redelivery rule (the handler sets the delay)."""
    monkeypatch.setenv("FLEETRUN_NOTIFY_ALLOW_LOCAL_TARGETS", "1")
    monkeypatch.setenv("FLEETRUN_NOTIFY_BACKOFF_SECONDS", "0")
    monkeypatch.setenv("FLEETRUN_NOTIFY_TIMEOUT_SECONDS", "0.5")
    monkeypatch.setenv("FLEETRUN_DASHBOARD_URL", DASHBOARD)
    config.reset()
    return SqsPump(boto3.client("sqs"), fleet.provisioned.queue_urls[NOTIFY_QUEUE.name],
                   fleet.app_module.notify_worker, batch_size=NOTIFY_QUEUE.batch_size, redelivery_delay=None)


def subscribe(fleet: Fleet, body: dict[str, Any], who: str = "alice", roles: tuple[str, ...] = ("operator",)) -> str:
    answer = fleet.user("POST", "/v1/subscriptions", body, who=who, roles=roles)
    assert answer.status == 201, answer
    return str(answer.body["subscription_id"])


def finished_task(fleet: Fleet, fail: frozenset[str] = frozenset(), **extra: Any) -> str:
    """A slurm.scale_up task (its password is secret) run to the end on NODES."""
    fleet.register(*[n for n in NODES if n not in fleet.node_tokens])
    body = {
        "type": "slurm.scale_up", "name": "grow gpu", "target_nodes": NODES, "tags": ["gpu"],
        "parameters": {"ssh_user": "root", "salt_master": "salt-1", "partition": "gpu", "password": PASSWORD},
        **extra,
    }
    answer = fleet.submit(body)
    assert answer.status == 202, answer
    fleet.settle()
    fleet.run_agents(NODES, fail=fail)
    return str(answer.body["task_id"])


def deliveries(fleet: Fleet, subscription_id: str, who: str = "alice") -> list[dict[str, Any]]:
    answer = fleet.user("GET", f"/v1/subscriptions/{subscription_id}/deliveries?limit=200", who=who)
    assert answer.status == 200, answer
    return answer.body["items"]  # type: ignore[no-any-return]


def dead_letters(fleet: Fleet) -> list[dict[str, Any]]:
    sqs = boto3.client("sqs")
    url = fleet.provisioned.dlq_urls[NOTIFY_QUEUE.name]
    messages: list[dict[str, Any]] = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
    return messages


class TestWebhook:
    def test_delivers_a_signed_completion_without_parameters(self, fleet, notify, receiver):
        # GIVEN a webhook subscription on a real local HTTP server
        url = receiver.answer("/hook")
        subscription_id = subscribe(fleet, {"channel": "webhook", "target": url, "secret": SECRET,
                                            "events": ["task.completed"]})

        # WHEN a task with a secret parameter completes and the notify queue is drained
        task_id = finished_task(fleet)
        assert fleet.task(task_id)["status"] == "completed"
        notify.drain()

        # THEN exactly one POST arrived, signed over "<timestamp>.<body>" with the secret
        (request,) = receiver.at("/hook")
        timestamp = request.headers["X-Fleetrun-Timestamp"]
        expected = hmac.new(SECRET.encode(), f"{timestamp}.".encode() + request.body, hashlib.sha256).hexdigest()
        assert request.headers["X-Fleetrun-Signature"] == f"sha256={expected}"
        assert request.headers["X-Fleetrun-Event"] == "task.completed"
        assert request.headers["X-Fleetrun-Delivery"].startswith("dlv_")
        assert request.headers["Content-Type"].startswith("application/json")
        document = request.json()
        assert document["event"] == "task.completed"
        assert document["delivery_id"] == request.headers["X-Fleetrun-Delivery"]
        assert document["url"] == f"{DASHBOARD}/#/tasks/{task_id}"
        task = document["task"]
        assert (task["task_id"], task["type"], task["status"], task["owner"]) == (
            task_id, "slurm.scale_up", "completed", "alice")
        assert task["node_counts"]["succeeded"] == 2
        assert "parameters" not in task
        assert PASSWORD not in request.body.decode()
        assert SECRET not in request.body.decode()
        # AND the delivery log records it
        (logged,) = deliveries(fleet, subscription_id)
        assert logged["delivery_id"] == document["delivery_id"]
        assert (logged["status"], logged["status_code"], logged["attempt"], logged["error"]) == (
            "delivered", 200, 1, None)

    def test_a_replayed_stream_batch_is_not_sent_again(
            self, fleet, notify, receiver):
        # GIVEN a webhook subscription and every stream event the pump delivers, recorded
        url = receiver.answer("/hook")
        subscription_id = subscribe(fleet, {"channel": "webhook", "target": url, "secret": SECRET})
        recorded: list[dict[str, Any]] = []
        handler = fleet.notifier.handler

        def recording(event: dict[str, Any], context: Any) -> Any:
            recorded.append(copy.deepcopy(event))
            return handler(event, context)

        fleet.notifier.handler = recording
        finished_task(fleet)
        notify.drain()
        (first,) = receiver.at("/hook")

        # WHEN every stream batch is delivered again and the notify queue drained
        for event in recorded:
            fleet.app_module.stream_notifier(event, LambdaContext("stream_notifier"))
        notify.drain()

        # THEN the worker saw the same delivery id again and did not send it twice
        assert receiver.at("/hook") == [first]
        assert [d["delivery_id"] for d in deliveries(fleet, subscription_id)] == [first.headers["X-Fleetrun-Delivery"]]

    def test_a_failing_destination_is_retried_then_dead_lettered_and_the_task_completes_on_time(
            self, fleet, notify, receiver):
        # GIVEN a destination that always answers 500
        url = receiver.answer("/broken", status=500, body=b"boom")
        subscription_id = subscribe(fleet, {"channel": "webhook", "target": url, "secret": SECRET,
                                            "events": ["task.completed"]})

        # WHEN a task completes: the stream and dispatch settle without any delivery attempt
        task_id = finished_task(fleet)
        completed = fleet.task(task_id)
        assert completed["status"] == "completed"
        assert receiver.at("/broken") == []

        # AND the notify worker works through the queue (backoff 0 s in this test)
        notify.drain()

        # THEN it tried max_receive_count times with one delivery id, then the message went to the DLQ
        attempts = receiver.at("/broken")
        assert len(attempts) == NOTIFY_QUEUE.max_receive_count
        assert len({r.headers["X-Fleetrun-Delivery"] for r in attempts}) == 1
        (dead,) = dead_letters(fleet)
        assert json.loads(dead["Body"])["delivery_id"] == attempts[0].headers["X-Fleetrun-Delivery"]
        log = sorted(deliveries(fleet, subscription_id), key=lambda d: d["attempt"])
        assert [d["attempt"] for d in log] == list(range(1, NOTIFY_QUEUE.max_receive_count + 1))
        assert [d["status"] for d in log] == ["failed"] * (NOTIFY_QUEUE.max_receive_count - 1) + ["dead_lettered"]
        assert {(d["status_code"], d["error"]) for d in log} == {(500, "HTTP 500")}
        # AND the task is exactly as it was when it completed, before the first attempt
        after = fleet.task(task_id)
        assert after["completed_at"] == completed["completed_at"] <= receivers_first_at(attempts)
        assert after["status"] == "completed"

    def test_a_hanging_destination_times_out_without_touching_the_task(self, fleet, notify, receiver):
        # GIVEN a destination that answers only after 3 s (the timeout is 0.5 s)
        url = receiver.answer("/slow", hang=3.0)
        subscription_id = subscribe(fleet, {"channel": "webhook", "target": url, "secret": SECRET,
                                            "events": ["task.completed"]})
        task_id = finished_task(fleet)
        completed_at = fleet.task(task_id)["completed_at"]

        # WHEN one attempt is made
        assert notify.poll_once() == 1

        # THEN it is logged as a timeout within about the timeout, and the task is untouched
        (logged,) = deliveries(fleet, subscription_id)
        assert logged["status"] == "failed"
        assert logged["error"] == "timed out after 0.5 s"
        assert logged["status_code"] is None
        assert 400 <= logged["duration_ms"] < 2000
        assert fleet.task(task_id)["completed_at"] == completed_at

    def test_a_failed_attempt_waits_for_its_backoff(self, fleet, notify, receiver, monkeypatch):
        # GIVEN a first retry delay of 60 s and a destination answering 503
        monkeypatch.setenv("FLEETRUN_NOTIFY_BACKOFF_SECONDS", "60")
        config.reset()
        url = receiver.answer("/busy", status=503)
        subscribe(fleet, {"channel": "webhook", "target": url, "secret": SECRET, "events": ["task.completed"]})
        finished_task(fleet)

        # WHEN the worker fails once and the pump polls again at once
        assert notify.poll_once() == 1
        assert notify.poll_once() == 0

        # THEN the message is in flight (hidden for its backoff), not lost and not retried yet
        attributes = boto3.client("sqs").get_queue_attributes(
            QueueUrl=fleet.provisioned.queue_urls[NOTIFY_QUEUE.name], AttributeNames=["All"])["Attributes"]
        assert attributes["ApproximateNumberOfMessagesNotVisible"] == "1"
        assert len(receiver.at("/busy")) == 1
        assert delivery.backoff_seconds(1) == 60
        assert delivery.backoff_seconds(3) == 240


def receivers_first_at(attempts: list[receivers.Received]) -> str:
    from chalicelib import clock

    return clock.rfc3339(min(r.at for r in attempts))


class TestSlackAndDingTalk:
    def test_slack_gets_an_incoming_webhook_block_kit_message(self, fleet, notify, receiver):
        # GIVEN a Slack incoming webhook (a real local server answering "ok" like Slack)
        url = receiver.answer("/services/T0001/B0001/abcdefghijklmnop")
        subscription_id = subscribe(fleet, {"channel": "slack", "target": url, "events": ["task.partial_failure"]})

        # WHEN a task ends partial_failure
        task_id = finished_task(fleet, fail=frozenset({"n2"}), max_errors=1)
        notify.drain()

        # THEN Slack got `text` (the fallback) and Block Kit blocks with a link to the task
        (request,) = receiver.at("/services/T0001/B0001/abcdefghijklmnop")
        payload = request.json()
        assert task_id in payload["text"]
        assert [block["type"] for block in payload["blocks"]] == ["header", "section", "actions"]
        header, section, actions = payload["blocks"]
        assert header["text"]["type"] == "plain_text"
        assert "partially failed" in header["text"]["text"]
        assert section["text"]["type"] == "mrkdwn"
        assert "task.partial_failure" in section["text"]["text"]
        assert all(field["type"] == "mrkdwn" for field in section["fields"])
        (button,) = actions["elements"]
        assert button["type"] == "button"
        assert button["url"] == f"{DASHBOARD}/#/tasks/{task_id}"
        assert PASSWORD not in request.body.decode()
        assert deliveries(fleet, subscription_id)[0]["status"] == "delivered"
        # AND the webhook URL, a credential, is masked in the subscription
        shown = fleet.user("GET", f"/v1/subscriptions/{subscription_id}").body
        assert shown["target"] == f"{receiver.url}/services/***"

    def test_dingtalk_gets_a_signed_markdown_message(self, fleet, notify, receiver):
        # GIVEN a DingTalk robot with signing on (a local server answering like DingTalk)
        url = receiver.answer("/robot/send", body=b'{"errcode":0,"errmsg":"ok"}') + "?access_token=tok123456"
        subscribe(fleet, {"channel": "dingtalk", "target": url, "secret": DING_SECRET, "events": ["task.failed"]})

        # WHEN a task fails
        task_id = finished_task(fleet, fail=frozenset(NODES))
        notify.drain()

        # THEN the robot URL carries access_token, timestamp (ms) and sign = base64(HMAC-SHA256(
        # secret, "<timestamp>\n<secret>")) and the body is a markdown message linking the task
        (request,) = receiver.at("/robot/send")
        assert request.query["access_token"] == "tok123456"
        timestamp = request.query["timestamp"]
        assert len(timestamp) == 13
        digest = hmac.new(DING_SECRET.encode(), f"{timestamp}\n{DING_SECRET}".encode(), hashlib.sha256).digest()
        assert request.query["sign"] == base64.b64encode(digest).decode()
        payload = request.json()
        assert payload["msgtype"] == "markdown"
        assert "failed" in payload["markdown"]["title"]
        assert f"({DASHBOARD}/#/tasks/{task_id})" in payload["markdown"]["text"]
        assert DING_SECRET not in request.body.decode()
        assert PASSWORD not in request.body.decode()

    def test_a_dingtalk_error_code_is_a_failed_delivery(self, fleet, notify, receiver):
        # GIVEN a robot that answers HTTP 200 with a DingTalk error code
        url = receiver.answer("/robot/send", body=b'{"errcode":310000,"errmsg":"sign not match"}')
        subscription_id = subscribe(fleet, {"channel": "dingtalk", "target": url + "?access_token=tok123456",
                                            "secret": DING_SECRET, "events": ["task.completed"]})
        finished_task(fleet)

        # WHEN one attempt is made
        notify.poll_once()

        # THEN it is failed with the robot's error and will be retried
        (logged,) = deliveries(fleet, subscription_id)
        assert (logged["status"], logged["status_code"]) == ("failed", 200)
        assert logged["error"] == "DingTalk errcode 310000: sign not match"


class TestEmail:
    def test_ses_sends_html_and_text_parts(self, fleet, notify):
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.ses.models import ses_backends

        # GIVEN an e-mail subscription
        subscription_id = subscribe(fleet, {"channel": "email", "target": "ops@example.com",
                                            "events": ["task.completed"]})

        # WHEN a task completes
        task_id = finished_task(fleet)
        notify.drain()

        # THEN SES sent one message from the configured sender with both parts
        (sent,) = ses_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].sent_messages
        assert sent.source == config.notify_email_sender()
        assert sent.destinations["ToAddresses"] == ["ops@example.com"]
        assert "completed" in sent.subject
        assert task_id in sent.body
        assert f"{DASHBOARD}/#/tasks/{task_id}" in sent.body
        assert PASSWORD not in sent.body
        assert deliveries(fleet, subscription_id)[0]["status"] == "delivered"


class TestWhoHearsWhat:
    def test_events_owner_type_and_tag_decide(self, fleet, notify, receiver):
        # GIVEN subscriptions of alice (hers), bob (his), an admin (all), and filtered ones
        subscribe(fleet, {"channel": "webhook", "target": receiver.answer("/alice"), "secret": SECRET})
        subscribe(fleet, {"channel": "webhook", "target": receiver.answer("/bob"), "secret": SECRET}, who="bob")
        subscribe(fleet, {"channel": "webhook", "target": receiver.answer("/admin"), "secret": SECRET},
                  who="root", roles=("admin",))
        subscribe(fleet, {"channel": "webhook", "target": receiver.answer("/shell-only"), "secret": SECRET,
                          "filter": {"type": "shell"}})
        subscribe(fleet, {"channel": "webhook", "target": receiver.answer("/gpu-tag"), "secret": SECRET,
                          "filter": {"tag": "gpu", "type": "slurm.scale_up"}})
        subscribe(fleet, {"channel": "webhook", "target": receiver.answer("/failures"), "secret": SECRET,
                          "events": ["task.failed"]})

        # WHEN alice's slurm task tagged gpu completes
        finished_task(fleet)
        notify.drain()

        # THEN alice's, the admin's and the matching filter's subscriptions hear it; nobody else
        heard = {r.path for r in receiver.requests}
        assert heard == {"/alice", "/admin", "/gpu-tag"}

    def test_cancel_and_retry_notify(self, fleet, notify, receiver):
        # GIVEN a subscription to cancellations and retries
        url = receiver.answer("/hook")
        subscribe(fleet, {"channel": "webhook", "target": url, "secret": SECRET,
                          "events": ["task.cancelled", "task.retried"]})
        fleet.register(*NODES)
        task_id = fleet.submit({"type": "shell", "target_nodes": NODES, "parameters": {"command": ["x"]}}).body[
            "task_id"]
        fleet.settle()

        # WHEN the task is cancelled before any node started, then retried
        assert fleet.user("POST", f"/v1/tasks/{task_id}/cancel").status == 202
        fleet.settle()
        assert fleet.task(task_id)["status"] == "cancelled"
        assert fleet.user("POST", f"/v1/tasks/{task_id}/retry", {"scope": "all"}).status == 202
        fleet.settle()
        notify.drain()

        # THEN one task.cancelled, then one task.retried (attempt 2) arrived
        events = [(r.headers["X-Fleetrun-Event"], r.json()["task"]["attempt"]) for r in receiver.at("/hook")]
        assert events == [("task.cancelled", 1), ("task.retried", 2)]

    def test_a_deleted_subscription_hears_nothing_more(self, fleet, notify, receiver):
        url = receiver.answer("/hook")
        subscription_id = subscribe(fleet, {"channel": "webhook", "target": url, "secret": SECRET})
        assert fleet.user("DELETE", f"/v1/subscriptions/{subscription_id}").status == 200

        finished_task(fleet)
        notify.drain()

        assert receiver.requests == []


class Resolver:
    """`socket.getaddrinfo` answering chosen names from a script (the last answer repeats),
    other hosts as usual; and every connection urllib3 opens, recorded."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, **answers: list[str]) -> None:
        self.answers = {name.replace("_", "."): list(addresses) for name, addresses in answers.items()}
        self.connections: list[tuple[str, int]] = []
        real_resolve, real_connect = socket.getaddrinfo, urllib3.util.connection.create_connection

        def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
            script = self.answers.get(host)
            if script:
                host = script.pop(0) if len(script) > 1 else script[0]
            return real_resolve(host, port, *args, **kwargs)

        def create_connection(address: tuple[str, int], *args: Any, **kwargs: Any) -> Any:
            self.connections.append(address)
            return real_connect(address, *args, **kwargs)

        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
        monkeypatch.setattr(urllib3.util.connection, "create_connection", create_connection)


class TestServerSideRequestForgery:
    def test_a_name_rebound_to_the_metadata_service_after_creation_is_not_delivered_to(
            self, fleet, notify, monkeypatch):
        # GIVEN a webhook on a name that resolves to a public address when it is subscribed
        resolver = Resolver(monkeypatch, hooks_rebind_test=["93.184.216.34"])
        subscription_id = subscribe(fleet, {"channel": "webhook", "target": "https://hooks.rebind.test/hook",
                                            "secret": SECRET, "events": ["task.completed"]})

        # WHEN the name resolves to the instance metadata service by the time a task completes
        resolver.answers["hooks.rebind.test"] = ["169.254.169.254"]
        finished_task(fleet)
        assert notify.poll_once() == 1

        # THEN the attempt is logged failed with the reason, and no connection was opened at all
        (logged,) = deliveries(fleet, subscription_id)
        assert (logged["status"], logged["status_code"]) == ("failed", None)
        assert logged["error"] == ("the target host resolves to a refused address: "
                                   "a link-local or cloud metadata address")
        assert resolver.connections == []

    def test_the_connection_goes_to_the_address_that_was_checked(self, fleet, notify, receiver, monkeypatch):
        # GIVEN a webhook on a name that resolves to the (local) receiver, and then, from the
        # delivery's check on, to the metadata service: a rebinding between check and connect
        port = int(receiver.url.rsplit(":", 1)[1])
        receiver.answer("/hook")
        resolver = Resolver(monkeypatch, hooks_pinned_test=["127.0.0.1", "127.0.0.1", "169.254.169.254"])
        subscription_id = subscribe(fleet, {"channel": "webhook", "target": f"http://hooks.pinned.test:{port}/hook",
                                            "secret": SECRET, "events": ["task.completed"]})

        # WHEN a task completes and its notification is delivered
        finished_task(fleet)
        notify.drain()

        # THEN the one connection went to the checked address, with the name as Host
        assert resolver.connections == [("127.0.0.1", port)]
        (request,) = receiver.at("/hook")
        assert request.headers["Host"] == f"hooks.pinned.test:{port}"
        assert deliveries(fleet, subscription_id)[0]["status"] == "delivered"

    def test_a_redirect_is_not_followed(self, fleet, notify, receiver):
        # GIVEN a webhook that answers with a redirect
        url = receiver.answer("/moved", status=307, headers={"Location": f"{receiver.url}/internal"})
        subscription_id = subscribe(fleet, {"channel": "webhook", "target": url, "secret": SECRET,
                                            "events": ["task.completed"]})

        # WHEN one attempt is made
        finished_task(fleet)
        assert notify.poll_once() == 1

        # THEN it failed on the redirect itself; the redirect's target was never asked
        (logged,) = deliveries(fleet, subscription_id)
        assert (logged["status"], logged["status_code"], logged["error"]) == ("failed", 307, "HTTP 307")
        assert receiver.at("/internal") == []


class TestOperatorScope:
    def test_an_operators_subscription_never_delivers_another_users_task(self, fleet, notify, receiver):
        # GIVEN alice's subscription (her own tasks) and a queued message that names it for bob's task
        url = receiver.answer("/alice")
        subscription_id = subscribe(fleet, {"channel": "webhook", "target": url, "secret": SECRET})
        forged = {
            "v": 1, "delivery_id": "dlv_forged", "subscription_id": subscription_id, "event": "task.completed",
            "occurred_at": "2026-11-22T18:07:19.384Z",
            "task": {"task_id": "01BOBSTASK", "type": "shell", "name": "bob's secret project", "owner": "bob",
                     "status": "completed", "attempt": 1, "tags": [], "node_counts": {}, "target_node_count": 1},
        }
        boto3.client("sqs").send_message(QueueUrl=fleet.provisioned.queue_urls[NOTIFY_QUEUE.name],
                                         MessageBody=json.dumps(forged))

        # WHEN the notify worker handles it
        assert notify.poll_once() == 1

        # THEN nothing was sent and nothing logged; the message is gone (not retried)
        assert receiver.requests == []
        assert deliveries(fleet, subscription_id) == []
        assert notify.poll_once() == 0
