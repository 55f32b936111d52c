"""Notifications through the local runtime: the `fleetrun subscriptions` commands, a real
agent finishing a task, and a real HTTP server receiving the signed webhook."""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import receivers
from tests.e2e.stack import Stack, fleetrun
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e

SECRET = "e2e-webhook-secret"
#: the local runtime's default first retry delay (FLEETRUN_NOTIFY_BACKOFF_SECONDS)
BACKOFF_SECONDS = 10


@pytest.fixture
def receiver() -> Iterator[receivers.Receiver]:
    server = receivers.start()
    yield server
    server.close()


def cli(stack: Stack, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return fleetrun(*args, env=stack.user_environment(tmp_path))


def subscribe(stack: Stack, tmp_path: Path, url: str) -> str:
    done = cli(stack, tmp_path, "subscriptions", "create", "--channel", "webhook", "--target", url,
                    "--secret", SECRET, "--event", "task.completed", "--tag", "e2e-notify", "--json")
    assert done.returncode == 0, done.stderr
    return str(json.loads(done.stdout)["subscription_id"])


def completed_task(stack: Stack, tmp_path: Path) -> str:
    node = stack.node_id("notify")
    stack.start_agent(node, stack.register(node), tmp_path / node)
    task_id = stack.shell_task(node, ["true"], tags=["e2e-notify"])
    assert stack.wait_task(task_id)["status"] == "completed"
    return task_id


def test_a_completed_task_reaches_the_webhook_signed(stack: Stack, tmp_path: Path, receiver: receivers.Receiver):
    # GIVEN a webhook subscription made with the CLI
    subscription_id = subscribe(stack, tmp_path, receiver.answer("/hook"))

    # WHEN a real agent completes a task
    task_id = completed_task(stack, tmp_path)

    # THEN the webhook arrives, signed, pointing at the task
    (request,) = wait_for(lambda: receiver.at("/hook"), 20, "the webhook")
    signed = f"{request.headers['X-Fleetrun-Timestamp']}.".encode() + request.body
    assert request.headers["X-Fleetrun-Signature"] == "sha256=" + hmac.new(
        SECRET.encode(), signed, hashlib.sha256).hexdigest()
    assert request.json()["task"]["task_id"] == task_id
    assert request.json()["url"] == f"{stack.url}/#/tasks/{task_id}"
    # AND `fleetrun subscriptions deliveries` shows the delivery
    done = cli(stack, tmp_path, "subscriptions", "deliveries", subscription_id, "--json")
    assert done.returncode == 0, done.stderr
    (logged,) = json.loads(done.stdout)["items"]
    assert (logged["status"], logged["delivery_id"]) == ("delivered", request.headers["X-Fleetrun-Delivery"])
    listed = cli(stack, tmp_path, "subscriptions", "list")
    assert subscription_id in listed.stdout
    assert SECRET not in listed.stdout


def test_a_failed_delivery_is_retried_after_its_backoff_with_the_same_id(
        stack: Stack, tmp_path: Path, receiver: receivers.Receiver):
    # GIVEN a destination that fails once
    url = receiver.answer("/flaky", status=500)
    subscribe(stack, tmp_path, url)
    completed_task(stack, tmp_path)
    (first,) = wait_for(lambda: receiver.at("/flaky"), 20, "the first attempt")
    receiver.answer("/flaky", status=200)

    # WHEN the runtime's notify pump redelivers it
    attempts = wait_for(lambda: receiver.at("/flaky")[1:] and receiver.at("/flaky"), 40, "the retry")

    # THEN the retry waited for the handler's backoff (not the pump's 2 s shortcut) and kept its id
    assert attempts[1].at - first.at >= BACKOFF_SECONDS - 1
    assert attempts[1].headers["X-Fleetrun-Delivery"] == first.headers["X-Fleetrun-Delivery"]
