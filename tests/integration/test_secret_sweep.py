"""A secret an agent echoes back reaches no output channel, whichever way it is echoed.

For each way an agent can send text back (a heartbeat's step, an event's message, an event's
`data` key, a value deep in an event's `data`, a failure's `error_message`, the completion's
output) and for each kind of secret (a top-level secret parameter, one value of a secret
object), the echoed secret is looked for in every channel a user or an operator can read:
the API's answers, WebSocket pushes, the bodies sent to webhook, Slack and DingTalk targets and
by e-mail, every log line, and every table item read back raw. (API.md, Agents and nodes.)
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest

from chalicelib import config
from chalicelib.resources import NOTIFY_QUEUE
from fleetrun.local.pumps import SqsPump
from tests import receivers
from tests.harness import Fleet
from tests.integration.sockets import Sockets
from tests.scenarios import RUNNER
from tests.ws_connections import RecordingConnections

PASSWORD = "S3cr3t-XYZZY-44"
DB_PASS = "S3cr3t-XYZZY-45"
HOOK_SECRET = "whsec-sweep-0123456789"
NODE = "gpu-1"
ALL_EVENTS = ["task.completed", "task.failed", "task.partial_failure", "task.apply_pending", "task.retried",
              "task.cancelled"]


@dataclass(frozen=True)
class Secret:
    """A task whose parameters hold `value` as a secret, run by `node`."""

    label: str
    value: str
    node: str
    body: dict[str, Any]


SECRETS = [
    Secret("top-level secret parameter", PASSWORD, NODE, {
        "type": "slurm.scale_up", "target_nodes": [NODE], "tags": ["sweep"],
        "parameters": {"ssh_user": "root", "salt_master": "salt-1", "partition": "gpu", "password": PASSWORD},
    }),
    Secret("one value of a secret object", DB_PASS, RUNNER, {
        "type": "iac.plan_apply", "target_nodes": [RUNNER], "tags": ["sweep"],
        "parameters": {"workspace": "sweep", "source": "git::infra",
                       "secret_variables": {"DB_USER": "admin-user", "DB_PASS": DB_PASS}},
    }),
]

#: an echo: what the agent sends, given the claimed run and the secret; it ends the run failed
Echo = Callable[[Fleet, dict[str, Any], str], None]


def _heartbeat_step(fleet: Fleet, run: dict[str, Any], secret: str) -> None:
    _sent(fleet, run, "heartbeat", {"attempt": run["attempt"], "progress": 10, "step": f"login with {secret}"})
    _fail(fleet, run, "step exited 1")


def _event_message(fleet: Fleet, run: dict[str, Any], secret: str) -> None:
    _event(fleet, run, {"type": "error", "step": run["step"], "message": f"TF_VAR_DB_PASS={secret} refused"})
    _fail(fleet, run, "step exited 1")


def _event_data_key(fleet: Fleet, run: dict[str, Any], secret: str) -> None:
    _event(fleet, run, {"type": "info", "step": run["step"], "message": "env", "data": {secret: 1}})
    _fail(fleet, run, "step exited 1")


def _event_data_deep_value(fleet: Fleet, run: dict[str, Any], secret: str) -> None:
    _event(fleet, run, {"type": "info", "step": run["step"], "message": "env",
                        "data": {"env": [{"name": "DB", "value": f"postgres://u:{secret}@db"}]}})
    _fail(fleet, run, "step exited 1")


def _error_message(fleet: Fleet, run: dict[str, Any], secret: str) -> None:
    _fail(fleet, run, f"sshpass -p {secret} ssh root@host: exit 255")


def _output(fleet: Fleet, run: dict[str, Any], secret: str) -> None:
    _sent(fleet, run, "complete", {"attempt": run["attempt"], "status": "failed", "error_message": "exit 1",
                                   "output": f"+ export TF_VAR_DB_PASS={secret}\nError: denied"})


def _live_output(fleet: Fleet, run: dict[str, Any], secret: str) -> None:
    _sent(fleet, run, "output", {"attempt": run["attempt"], "offset": 0, "data": f"+ export TF_VAR_DB_PASS={secret}\n"})
    _fail(fleet, run, "exit 1")


ECHOES: dict[str, Echo] = {
    "heartbeat step": _heartbeat_step,
    "event message": _event_message,
    "event data key": _event_data_key,
    "event data deep value": _event_data_deep_value,
    "error message": _error_message,
    "completion output": _output,
    "live output": _live_output,
}


def _sent(fleet: Fleet, run: dict[str, Any], route: str, body: dict[str, Any]) -> None:
    answer = fleet.agent(run["node"], f"/v1/runs/{run['run_id']}/{route}", body)
    assert answer.status < 300, answer


def _event(fleet: Fleet, run: dict[str, Any], event: dict[str, Any]) -> None:
    _sent(fleet, run, "events", {"attempt": run["attempt"], "events": [event]})


def _fail(fleet: Fleet, run: dict[str, Any], message: str) -> None:
    _sent(fleet, run, "complete", {"attempt": run["attempt"], "status": "failed", "error_message": message})


@dataclass
class Channels:
    """Everything a secret could leak into, recorded while a test runs."""

    fleet: Fleet
    receiver: receivers.Receiver
    recorder: RecordingConnections
    sockets: Sockets
    notify: SqsPump
    logs: list[str]

    def subscribe_everywhere(self) -> str:
        """Subscriptions on every channel for every event, and a WebSocket on every task; the
        socket's connection id."""
        targets = {
            "webhook": self.receiver.answer("/webhook"),
            "slack": self.receiver.answer("/services/T/B/X"),
            "dingtalk": self.receiver.answer("/robot/send", body=b'{"errcode":0,"errmsg":"ok"}') + "?access_token=t",
            "email": "ops@example.com",
        }
        for channel, target in targets.items():
            body = {"channel": channel, "target": target, "events": ALL_EVENTS}
            if channel in ("webhook", "dingtalk"):
                body["secret"] = HOOK_SECRET
            answer = self.fleet.user("POST", "/v1/subscriptions", body, who="root", roles=("admin",))
            assert answer.status == 201, answer
        return self.sockets.open("alice", subscribe="*")

    def read(self, task_id: str, connection_id: str) -> dict[str, str]:
        """Each channel's whole text, once the task has ended and every queue drained."""
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.ses.models import ses_backends

        self.fleet.settle()
        self.notify.drain()
        fleet = self.fleet
        answers = [fleet.task(task_id), fleet.runs(task_id), fleet.events(task_id),
                   fleet.user("GET", "/v1/nodes?limit=200", who="root", roles=("admin",)).body,
                   fleet.user("GET", "/v1/tasks?limit=200").body]
        sent_mail = ses_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].sent_messages
        table = boto3.resource("dynamodb").Table(fleet.provisioned.table_name)
        return {
            "API answers": json.dumps(answers),
            "WebSocket pushes": json.dumps(self.sockets.received(connection_id)),
            "webhook bodies": _bodies(self.receiver, "/webhook"),
            "Slack bodies": _bodies(self.receiver, "/services/T/B/X"),
            "DingTalk bodies": _bodies(self.receiver, "/robot/send"),
            "e-mail": json.dumps([[m.subject, m.body] for m in sent_mail]),
            "log lines": "\n".join(self.logs),
            "raw table items": repr(_scan(table)),
        }


def _bodies(receiver: receivers.Receiver, path: str) -> str:
    found = receiver.at(path)
    assert found, f"nothing was delivered to {path}"
    return "\n".join(request.body.decode() for request in found)


def _scan(table: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    page: dict[str, Any] = table.scan(ConsistentRead=True)
    items.extend(page["Items"])
    while "LastEvaluatedKey" in page:
        page = table.scan(ConsistentRead=True, ExclusiveStartKey=page["LastEvaluatedKey"])
        items.extend(page["Items"])
    return items


class _Lines(logging.Handler):
    def __init__(self, lines: list[str]) -> None:
        super().__init__(logging.DEBUG)
        self.lines = lines

    def emit(self, record: logging.LogRecord) -> None:
        # the text the configured handlers would write: the message and every extra key
        self.lines.append(record.getMessage() + " " + repr(record.__dict__))


@pytest.fixture
def channels(fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> Iterator[Channels]:
    monkeypatch.setenv("FLEETRUN_NOTIFY_ALLOW_LOCAL_TARGETS", "1")
    monkeypatch.setenv("FLEETRUN_NOTIFY_BACKOFF_SECONDS", "0")
    recorder = RecordingConnections().start()
    monkeypatch.setenv("FLEETRUN_WEBSOCKET_ENDPOINT", recorder.endpoint)
    config.reset()
    receiver = receivers.start()
    notify = SqsPump(boto3.client("sqs"), fleet.provisioned.queue_urls[NOTIFY_QUEUE.name],
                     fleet.app_module.notify_worker, batch_size=NOTIFY_QUEUE.batch_size, redelivery_delay=None)
    lines: list[str] = []
    handler = _Lines(lines)
    root = logging.getLogger()
    loggers = [root, *(logging.getLogger(name) for name in list(logging.root.manager.loggerDict))]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield Channels(fleet, receiver, recorder, Sockets(fleet, recorder), notify, lines)
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
        receiver.close()
        recorder.stop()


@pytest.mark.parametrize("secret", SECRETS, ids=[s.label for s in SECRETS])
@pytest.mark.parametrize("echo", list(ECHOES), ids=list(ECHOES))
def test_an_echoed_secret_reaches_no_channel(channels: Channels, echo: str, secret: Secret) -> None:
    # GIVEN subscriptions on every channel, a WebSocket on every task, and a running task with a secret
    fleet = channels.fleet
    connection_id = channels.subscribe_everywhere()
    fleet.register(secret.node)
    answer = fleet.submit(secret.body)
    assert answer.status == 202, answer
    task_id = str(answer.body["task_id"])
    fleet.settle()
    (run,) = fleet.claim(secret.node)

    # WHEN the agent echoes the secret that way and the run fails
    ECHOES[echo](fleet, run, secret.value)

    # THEN the task ended, and no channel holds the secret (each channel did carry the task)
    read = channels.read(task_id, connection_id)
    assert fleet.task(task_id)["status"] == "failed"
    assert {name: task_id in text for name, text in read.items()} == dict.fromkeys(read, True)
    assert [name for name, text in read.items() if secret.value in text] == []
