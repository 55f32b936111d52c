"""Notification rules that need no AWS: which change notifies, ids, signatures, targets, backoff."""

from __future__ import annotations

import base64
import hashlib
import hmac
import socket
from typing import Any
from urllib.parse import unquote_plus

import pytest

from chalicelib import config
from chalicelib.domain.records import Task
from chalicelib.errors import TargetRefused, ValidationFailed
from chalicelib.notify import channels, delivery, fanout, targets


def task(status: str, attempt: int = 1) -> Task:
    return Task(task_id="t1", type="shell", owner="alice", status=status, attempt=attempt, max_concurrency=1,
                created_at="x", updated_at="x")


@pytest.mark.parametrize(("old", "new", "event"), [
    (task("running"), task("completed"), "task.completed"),
    (task("running"), task("failed"), "task.failed"),
    (task("running"), task("partial_failure"), "task.partial_failure"),
    (task("running"), task("apply_pending"), "task.apply_pending"),
    (task("pending"), task("apply_pending"), "task.apply_pending"),
    (task("cancelling"), task("cancelled"), "task.cancelled"),
    (task("failed"), task("pending", 2), "task.retried"),
    (task("partial_failure"), task("pending", 2), "task.retried"),
    (task("cancelled"), task("pending", 2), "task.retried"),
    (task("pending"), task("running"), None),
    (task("running"), task("cancelling"), None),
    (task("apply_pending"), task("discarded"), None),
    (task("completed"), task("completed"), None),
    (None, task("completed"), None),
])
def test_which_change_notifies(old, new, event):
    assert fanout.event_of(old, new) == event


def test_snapshot_never_carries_parameters():
    item = task("completed")
    item.parameters = '{"password": "***"}'
    assert "parameters" not in fanout.snapshot(item)


def test_delivery_ids_are_deterministic_and_distinct():
    one = fanout.delivery_id("s1", "t1", "task.completed", "100")
    assert one == fanout.delivery_id("s1", "t1", "task.completed", "100")
    others = {fanout.delivery_id(*args) for args in [("s2", "t1", "task.completed", "100"),
                                                     ("s1", "t2", "task.completed", "100"),
                                                     ("s1", "t1", "task.failed", "100"),
                                                     ("s1", "t1", "task.completed", "101")]}
    assert one not in others
    assert len(others) == 4


def test_webhook_signature_is_hmac_sha256_of_timestamp_dot_body():
    expected = hmac.new(b"k", b"1700000000.{}", hashlib.sha256).hexdigest()
    assert channels.webhook_signature("k", "1700000000", b"{}") == f"sha256={expected}"


def test_dingtalk_sign_is_url_encoded_base64_hmac_of_timestamp_newline_secret():
    sign = channels.dingtalk_sign("SECabc", "1700000000000")
    raw = hmac.new(b"SECabc", b"1700000000000\nSECabc", hashlib.sha256).digest()
    assert unquote_plus(sign) == base64.b64encode(raw).decode()
    assert "+" not in sign
    assert "/" not in sign
    assert "=" not in sign


@pytest.mark.parametrize(("channel", "target", "shown"), [
    ("slack", "https://hooks.slack.com/services/T1/B2/xyzsecret", "https://hooks.slack.com/services/***"),
    ("dingtalk", "https://oapi.dingtalk.com/robot/send?access_token=abc123",
     "https://oapi.dingtalk.com/robot/send?access_token=***"),
    ("webhook", "https://h.example.com/in/hook", "https://h.example.com/in/hook"),
    ("email", "ops@example.com", "ops@example.com"),
])
def test_display_masks_credentials(channel, target, shown):
    assert targets.display(channel, target) == shown


def test_credentials_cover_the_secret_parts_of_a_target():
    found = targets.credentials_of("dingtalk", "https://oapi.dingtalk.com/robot/send?access_token=abc123")
    assert "abc123" in found
    assert "xyzsecret" in targets.credentials_of("slack", "https://hooks.slack.com/services/T1/B2/xyzsecret")


#: targets refused in every mode: cloud metadata and link-local addresses in every spelling a
#: resolver accepts, and addresses that are never a destination
REFUSED_IN_EVERY_MODE = [
    "https://169.254.169.254/latest/meta-data/",
    "https://[fd00:ec2::254]/latest/meta-data/",
    "https://[::ffff:169.254.169.254]/",
    "https://[::ffff:a9fe:a9fe]/",
    "https://[64:ff9b::a9fe:a9fe]/",
    "https://[2002:a9fe:a9fe::1]/",
    "https://2852039166/",
    "https://0251.0376.0251.0376/",
    "https://0xa9fea9fe/",
    "https://0XA9.0xFE.43518/",
    "https://169.254.43518/",
    "https://169.254.169.254./",
    "https://[fe80::1%25eth0]/",
    "https://100.100.100.200/latest/meta-data/",
    "https://0.0.0.0:8000/",
    "https://0/",
    "https://[::]/",
    "https://[::a9fe:a9fe]/",
    "https://224.0.0.1/",
    "https://[ff02::1]/",
    "https://255.255.255.255/",
    "https://240.0.0.1/",
]
#: targets allowed in local mode only
LOCAL_ONLY = [
    "https://127.0.0.1/hook",
    "https://127.1/hook",
    "https://[::1]/hook",
    "https://2130706433/hook",
    "https://[::ffff:127.0.0.1]/hook",
    "https://10.0.0.7/hook",
    "https://192.168.1.20/hook",
    "https://172.16.0.1/hook",
    "https://100.64.0.1/hook",
    "https://[fd12:3456::1]/hook",
    "https://localhost/hook",
    "https://localhost./hook",
]
PUBLIC = ["https://93.184.216.34/hook", "https://[2606:2800:220:1::1]/hook", "https://[2002:808:808::1]/hook",
          "https://1572395042/hook"]


class TestTargetRule:
    @pytest.fixture(autouse=True)
    def aws_mode(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("FLEETRUN_NOTIFY_ALLOW_LOCAL_TARGETS", raising=False)
        monkeypatch.delenv("FLEETRUN_LOCAL", raising=False)
        config.reset()

    def test_a_name_resolving_to_loopback_is_refused_at_send_time(self):
        with pytest.raises(TargetRefused):
            targets.check_addresses("localhost", 443)

    def test_local_mode_allows_loopback(self, monkeypatch: pytest.MonkeyPatch):
        monkeypatch.setenv("FLEETRUN_LOCAL", "1")
        config.reset()
        assert "127.0.0.1" in targets.check_addresses("127.0.0.1", 80)
        targets.validate("webhook", "http://127.0.0.1:8080/hook")

    @pytest.mark.parametrize("local", [False, True])
    @pytest.mark.parametrize("target", REFUSED_IN_EVERY_MODE)
    def test_a_metadata_link_local_or_reserved_address_in_any_spelling_is_refused_in_every_mode(
            self, monkeypatch: pytest.MonkeyPatch, local: bool, target: str):
        monkeypatch.setenv("FLEETRUN_LOCAL", "1" if local else "0")
        config.reset()
        with pytest.raises(ValidationFailed, match=r"must not point at an? (link-local|unspecified)"):
            targets.validate("webhook", target)

    @pytest.mark.parametrize("target", LOCAL_ONLY)
    def test_a_loopback_or_private_address_is_refused_outside_local_mode_only(
            self, monkeypatch: pytest.MonkeyPatch, target: str):
        with pytest.raises(ValidationFailed, match="must not point at a loopback or private address"):
            targets.validate("webhook", target)
        monkeypatch.setenv("FLEETRUN_LOCAL", "1")
        config.reset()
        targets.validate("webhook", target)

    @pytest.mark.parametrize("target", PUBLIC)
    def test_a_public_address_is_allowed(self, target: str):
        targets.validate("webhook", target)

    def test_a_number_no_resolver_reads_as_an_address_is_refused(self):
        with pytest.raises(ValidationFailed, match="is not a valid IP address"):
            targets.validate("webhook", "https://999999999999/hook")

    def test_local_mode_still_refuses_a_name_that_resolves_to_the_metadata_service(
            self, monkeypatch: pytest.MonkeyPatch):
        monkeypatch.setenv("FLEETRUN_LOCAL", "1")
        config.reset()
        real = socket.getaddrinfo
        monkeypatch.setattr(socket, "getaddrinfo", lambda host, *rest, **kw: real(
            "169.254.169.254" if host == "imds.attacker.test" else host, *rest, **kw))

        with pytest.raises(TargetRefused, match="a link-local or cloud metadata address"):
            targets.check_addresses("imds.attacker.test", 80)


def test_backoff_doubles_and_is_capped(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("FLEETRUN_NOTIFY_BACKOFF_SECONDS", "10")
    config.reset()
    assert [delivery.backoff_seconds(n) for n in (1, 2, 3, 4)] == [10, 20, 40, 80]
    assert delivery.backoff_seconds(20) == delivery.MAX_BACKOFF_SECONDS


def test_a_refused_address_is_a_failed_outcome_without_the_credentials(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("FLEETRUN_LOCAL", raising=False)
    config.reset()
    message: dict[str, Any] = {
        "delivery_id": "dlv_1", "subscription_id": "s1", "event": "task.completed", "occurred_at": "x",
        "task": {"task_id": "t1", "type": "shell", "name": None, "owner": "a", "status": "completed", "attempt": 1,
                 "node_counts": {}, "tags": []},
    }
    outcome = channels.deliver("webhook", "https://localhost/hook?token=topsecret", "k" * 8, message)
    assert not outcome.ok
    assert outcome.status_code is None
    assert outcome.error is not None
    assert "refused address" in outcome.error
    assert "topsecret" not in outcome.error
