"""The SQS intake queue creates tasks exactly as POST /v1/tasks does; invalid messages are dead-lettered."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest

from chalicelib.resources import INTAKE_QUEUE
from fleetrun.local.pumps import SqsPump
from tests.faults import fail_calls, throttled
from tests.harness import Fleet

PRODUCER = "ci-bot"
RELEASE = {"type": "config.release", "target_nodes": ["edge-1", "edge-2"], "parameters": {"website_id": 41}}


class Intake:
    """The intake queue, its DLQ and the real `intake_worker` handler behind a Lambda-shaped pump."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.sqs = boto3.client("sqs")
        self.url = fleet.provisioned.queue_urls[INTAKE_QUEUE.name]
        self.dlq_url = fleet.provisioned.dlq_urls[INTAKE_QUEUE.name]
        self.pump = SqsPump(self.sqs, self.url, fleet.app_module.intake_worker, batch_size=INTAKE_QUEUE.batch_size)

    def send(self, body: dict[str, Any] | str) -> None:
        text = body if isinstance(body, str) else json.dumps(body)
        self.sqs.send_message(QueueUrl=self.url, MessageBody=text)

    def deliver(self) -> int:
        delivered = self.pump.drain()
        self.fleet.settle()
        return delivered

    def dead_letters(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        while True:
            messages = self.sqs.receive_message(
                QueueUrl=self.dlq_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"], WaitTimeSeconds=0,
            ).get("Messages", [])
            if not messages:
                return found
            found += messages

    def left_on_queue(self) -> int:
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=self.url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])


@pytest.fixture
def intake(fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> Intake:
    from chalicelib import config

    monkeypatch.setenv("FLEETRUN_INTAKE_PRODUCERS", f"{PRODUCER}, nightly-job")
    config.reset()
    return Intake(fleet)


def tasks_of(fleet: Fleet, owner: str) -> list[dict[str, Any]]:
    answer = fleet.user("GET", f"/v1/tasks?owner={owner}", who="root", roles=("admin",))
    assert answer.status == 200, answer
    return answer.body["items"]  # type: ignore[no-any-return]


def message(key: str = "release-41", **overrides: Any) -> dict[str, Any]:
    return {**RELEASE, "owner": PRODUCER, "idempotency_key": key, **overrides}


def test_a_valid_message_creates_a_task_owned_by_the_producer_and_dispatches_it(fleet, intake):
    # WHEN a producer's message is delivered
    intake.send(message())
    assert intake.deliver() == 1
    # THEN one task exists, owned by the producer, dispatched to both nodes
    [task] = tasks_of(fleet, PRODUCER)
    assert task["owner"] == PRODUCER
    assert task["type"] == "config.release"
    assert task["target_nodes"] == ["edge-1", "edge-2"]
    assert task["dispatch"]["created_count"] == 2
    assert intake.dead_letters() == []
    assert intake.left_on_queue() == 0


def test_the_same_message_delivered_twice_creates_one_task(fleet, intake):
    # GIVEN the same message sent twice (at-least-once delivery, or a producer's retry)
    intake.send(message())
    intake.send(message())
    # WHEN both are delivered, in one batch
    assert intake.deliver() == 2
    # THEN one task, one run per node
    [task] = tasks_of(fleet, PRODUCER)
    assert set(fleet.runs(task["task_id"], who=PRODUCER)) == {"edge-1", "edge-2"}
    # AND a third delivery later still finds the same task
    intake.send(message())
    intake.deliver()
    assert [t["task_id"] for t in tasks_of(fleet, PRODUCER)] == [task["task_id"]]
    assert intake.dead_letters() == []


def test_a_message_and_the_api_share_idempotency_for_the_same_owner_and_key(fleet, intake):
    # GIVEN the producer created the task through the API first
    answer = fleet.submit(RELEASE, who=PRODUCER, key="release-41")
    assert answer.status == 202
    # WHEN the same request arrives on the intake queue
    intake.send(message())
    intake.deliver()
    # THEN it is the same task
    assert [t["task_id"] for t in tasks_of(fleet, PRODUCER)] == [answer.body["task_id"]]


@pytest.mark.parametrize(
    ("body", "code", "reason"),
    [
        ("not json", "validation_error", "not valid JSON"),
        (json.dumps({**RELEASE, "owner": PRODUCER}), "validation_error", "$.idempotency_key is required"),
        (json.dumps({**RELEASE, "idempotency_key": "k"}), "validation_error", "$.owner is required"),
        (json.dumps(message(owner="mallory")), "forbidden", "'mallory' is not an allowed intake producer"),
        (json.dumps(message(type="rm.everything")), "unknown_task_type", "unknown task type"),
        (json.dumps(message(parameters={"website_id": "x"})), "validation_error", "$.parameters.website_id"),
        (json.dumps(message(target_nodes=[])), "validation_error", "$.target_nodes"),
        (json.dumps(message(colour="red")), "validation_error", "$.colour is not an allowed field"),
    ],
    ids=["not-json", "no-key", "no-owner", "unknown-producer", "unknown-type", "bad-parameters", "no-targets",
         "unknown-field"],
)
def test_an_invalid_message_goes_to_the_dlq_with_its_reason(fleet, intake, body, code, reason):
    # WHEN an invalid message is delivered
    intake.send(body)
    assert intake.deliver() == 1
    # THEN it is on the DLQ, unchanged, with the error as attributes, and gone from the intake queue
    [dead] = intake.dead_letters()
    assert dead["Body"] == body
    attributes = {name: value["StringValue"] for name, value in dead["MessageAttributes"].items()}
    assert attributes["fleetrun-error-code"] == code
    assert reason in attributes["fleetrun-error"] + attributes.get("fleetrun-error-details", "")
    assert intake.left_on_queue() == 0
    assert tasks_of(fleet, PRODUCER) == []


def test_an_invalid_message_never_blocks_the_valid_ones_of_its_batch(fleet, intake):
    # GIVEN a batch with a bad message between two good ones
    intake.send(message("a"))
    intake.send(message("b", owner="mallory"))
    intake.send(message("c"))
    # WHEN the batch is delivered
    intake.deliver()
    # THEN the good ones created their tasks and the bad one alone is dead-lettered
    assert len(tasks_of(fleet, PRODUCER)) == 2
    [dead] = intake.dead_letters()
    assert json.loads(dead["Body"])["idempotency_key"] == "b"
    assert intake.left_on_queue() == 0


def test_the_same_key_with_another_body_is_dead_lettered_as_reused(fleet, intake):
    intake.send(message())
    intake.deliver()
    intake.send(message(target_nodes=["edge-9"]))
    intake.deliver()
    [dead] = intake.dead_letters()
    assert dead["MessageAttributes"]["fleetrun-error-code"]["StringValue"] == "idempotency_key_reused"
    assert len(tasks_of(fleet, PRODUCER)) == 1


def test_a_secret_parameter_from_the_queue_is_sealed_like_the_apis(fleet, intake):
    body = message(type="slurm.scale_up", target_nodes=["n1"], parameters={
        "ssh_user": "root", "salt_master": "salt-1", "partition": "gpu", "password": "hunter2"})
    intake.send(body)
    intake.deliver()
    [task] = tasks_of(fleet, PRODUCER)
    assert task["parameters"]["password"] == "***"
    assert "hunter2" not in json.dumps(fleet.task(task["task_id"], who=PRODUCER))


def test_a_throttled_write_is_redelivered_not_dead_lettered(fleet, intake, monkeypatch):
    # GIVEN DynamoDB throttles the first write of the task (botocore's own retries exhausted)
    throttle = fail_calls(monkeypatch, "TransactWriteItems", throttled)
    # WHEN the message is delivered (and redelivered after the failure)
    intake.send(message())
    intake.deliver()
    # THEN the throttle happened, the retry created the task and nothing was dead-lettered
    assert len(throttle) == 1
    assert len(tasks_of(fleet, PRODUCER)) == 1
    assert intake.dead_letters() == []
    assert intake.left_on_queue() == 0
