"""The /v1/subscriptions routes: validation, secrets never shown, who sees what, pagination."""

from __future__ import annotations

import json
import logging
import socket
from typing import Any

import pytest

from chalicelib import config
from chalicelib.store.models import SubscriptionItem
from tests.harness import Fleet

SECRET = "whsec-0123456789"
HOOK = "https://hooks.example.com/fleetrun?token=abcdef123456"


def create(fleet: Fleet, body: dict[str, Any], who: str = "alice", roles: tuple[str, ...] = ("operator",)) -> Any:
    return fleet.user("POST", "/v1/subscriptions", body, who=who, roles=roles)


def problems(answer: Any) -> list[str]:
    assert answer.status == 400, answer
    assert answer.body["error"]["code"] == "validation_error"
    return [detail["path"] for detail in answer.body["error"]["details"]]


class TestCreate:
    def test_answers_201_with_the_secret_never_shown_and_the_target_masked(self, fleet, caplog):
        caplog.set_level(logging.DEBUG)
        answer = create(fleet, {"channel": "webhook", "target": HOOK, "secret": SECRET,
                                "events": ["task.failed"], "filter": {"type": "shell", "tag": "cdn"}})

        assert answer.status == 201, answer
        body = answer.body
        assert body["secret_set"] is True
        assert "secret" not in body
        assert body["target"] == "https://hooks.example.com/fleetrun?token=***"
        assert (body["owner"], body["scope"], body["channel"]) == ("alice", "own", "webhook")
        assert body["events"] == ["task.failed"]
        assert body["filter"] == {"type": "shell", "tag": "cdn"}
        # nothing stored or logged in the clear
        stored = SubscriptionItem.get(f"SUB#{body['subscription_id']}", "META")
        assert SECRET not in json.dumps(stored.serialize())
        assert "abcdef123456" not in json.dumps(stored.serialize())
        assert SECRET not in caplog.text
        assert "abcdef123456" not in caplog.text

    def test_events_default_to_all_and_an_admin_subscription_covers_every_task(self, fleet):
        answer = create(fleet, {"channel": "email", "target": "ops@example.com"}, who="root", roles=("admin",))

        assert answer.status == 201, answer
        assert answer.body["scope"] == "all"
        assert answer.body["secret_set"] is False
        assert set(answer.body["events"]) == {"task.completed", "task.failed", "task.partial_failure",
                                              "task.apply_pending", "task.retried", "task.cancelled"}

    @pytest.mark.parametrize(("body", "path"), [
        ({"channel": "webhook", "target": "http://hooks.example.com/x", "secret": SECRET}, "$.target"),
        ({"channel": "webhook", "target": "https://127.0.0.1/x", "secret": SECRET}, "$.target"),
        ({"channel": "webhook", "target": "https://169.254.169.254/latest/meta-data", "secret": SECRET}, "$.target"),
        ({"channel": "webhook", "target": "https://10.0.0.7/hook", "secret": SECRET}, "$.target"),
        ({"channel": "webhook", "target": "https://[::1]/hook", "secret": SECRET}, "$.target"),
        ({"channel": "slack", "target": "https://localhost/services/x"}, "$.target"),
        ({"channel": "webhook", "target": "https://user:pw@hooks.example.com/", "secret": SECRET}, "$.target"),
        ({"channel": "webhook", "target": "ftp://hooks.example.com/", "secret": SECRET}, "$.target"),
        ({"channel": "email", "target": "not-an-address"}, "$.target"),
        ({"channel": "email", "target": "https://hooks.example.com/"}, "$.target"),
        ({"channel": "webhook", "target": HOOK}, "$.secret"),
        ({"channel": "slack", "target": "https://hooks.slack.com/services/T/B/X", "secret": SECRET}, "$.secret"),
        ({"channel": "pager", "target": HOOK}, "$.channel"),
        ({"channel": "webhook", "target": HOOK, "secret": SECRET, "events": ["task.exploded"]}, "$.events[0]"),
        ({"channel": "webhook", "target": HOOK, "secret": SECRET, "events": []}, "$.events"),
        ({"channel": "webhook", "target": HOOK, "secret": SECRET, "filter": {"owner": "bob"}}, "$.filter.owner"),
        ({"channel": "webhook", "target": HOOK, "secret": "short"}, "$.secret"),
    ])
    def test_rejects_with_validation_error(self, fleet, body, path):
        assert path in problems(create(fleet, body))

    def test_local_targets_are_allowed_only_when_configured(self, fleet, monkeypatch):
        monkeypatch.setenv("FLEETRUN_NOTIFY_ALLOW_LOCAL_TARGETS", "1")
        config.reset()

        answer = create(fleet, {"channel": "webhook", "target": "http://127.0.0.1:9/hook", "secret": SECRET})

        assert answer.status == 201, answer

    def test_email_needs_a_configured_sender(self, fleet, monkeypatch):
        monkeypatch.setenv("FLEETRUN_NOTIFY_EMAIL_SENDER", "")
        config.reset()

        assert "$.channel" in problems(create(fleet, {"channel": "email", "target": "ops@example.com"}))


class TestReadAndDelete:
    def test_owners_see_their_own_admins_see_all_others_get_404(self, fleet):
        mine = create(fleet, {"channel": "webhook", "target": HOOK, "secret": SECRET}).body["subscription_id"]
        bobs = create(fleet, {"channel": "webhook", "target": HOOK, "secret": SECRET}, who="bob").body[
            "subscription_id"]

        listed = fleet.user("GET", "/v1/subscriptions").body
        assert [s["subscription_id"] for s in listed["items"]] == [mine]
        everyone = fleet.user("GET", "/v1/subscriptions", who="root", roles=("admin",)).body
        assert [s["subscription_id"] for s in everyone["items"]] == [bobs, mine]  # newest first
        assert fleet.user("GET", f"/v1/subscriptions/{bobs}").status == 404
        assert fleet.user("DELETE", f"/v1/subscriptions/{bobs}").status == 404
        assert fleet.user("GET", f"/v1/subscriptions/{bobs}/deliveries").status == 404
        assert fleet.user("GET", f"/v1/subscriptions/{bobs}", who="root", roles=("admin",)).status == 200

    def test_a_viewer_cannot_create_a_subscription(self, fleet):
        answer = create(fleet, {"channel": "email", "target": "me@example.com"}, who="val", roles=("viewer",))

        assert answer.status == 403, answer
        assert answer.body["error"]["code"] == "forbidden"
        assert fleet.user("GET", "/v1/subscriptions", who="val", roles=("viewer",)).body["items"] == []

    def test_a_viewer_cannot_delete_a_subscription_even_one_of_their_own(self, fleet):
        # GIVEN a subscription val made while an operator, val now only a viewer
        subscription_id = create(fleet, {"channel": "email", "target": "me@example.com"}, who="val").body[
            "subscription_id"]

        # WHEN val deletes it as a viewer
        answer = fleet.user("DELETE", f"/v1/subscriptions/{subscription_id}", who="val", roles=("viewer",))

        # THEN it is forbidden, and val may still read it
        assert answer.status == 403, answer
        assert answer.body["error"]["code"] == "forbidden"
        assert fleet.user("GET", f"/v1/subscriptions/{subscription_id}", who="val", roles=("viewer",)).status == 200

    def test_an_admin_may_delete_an_operators_subscription(self, fleet):
        subscription_id = create(fleet, {"channel": "email", "target": "me@example.com"}).body["subscription_id"]

        answer = fleet.user("DELETE", f"/v1/subscriptions/{subscription_id}", who="root", roles=("admin",))

        assert answer.status == 200, answer
        assert fleet.user("GET", f"/v1/subscriptions/{subscription_id}").status == 404

    def test_pages_follow_the_cursor(self, fleet):
        created = [create(fleet, {"channel": "email", "target": f"u{i}@example.com"}).body["subscription_id"]
                   for i in range(3)]

        first = fleet.user("GET", "/v1/subscriptions?limit=2").body
        second = fleet.user("GET", f"/v1/subscriptions?limit=2&cursor={first['next_cursor']}").body

        assert [s["subscription_id"] for s in first["items"] + second["items"]] == created[::-1]
        assert second["next_cursor"] is None
        assert "$query.cursor" in problems(fleet.user("GET", "/v1/subscriptions?cursor=%%%"))

    def test_delete_removes_the_subscription_and_its_event_index(self, fleet):
        from chalicelib.store import subscriptions as store

        subscription_id = create(fleet, {"channel": "webhook", "target": HOOK, "secret": SECRET}).body[
            "subscription_id"]
        assert [s.subscription_id for s in store.subscribers("task.completed", "alice")] == [subscription_id]

        answer = fleet.user("DELETE", f"/v1/subscriptions/{subscription_id}")

        assert answer.status == 200
        assert answer.body == {"subscription_id": subscription_id, "deleted": True}
        assert fleet.user("GET", f"/v1/subscriptions/{subscription_id}").status == 404
        assert store.subscribers("task.completed", "alice") == []

    def test_needs_a_token(self, fleet):
        assert fleet.call("GET", "/v1/subscriptions").status == 401


#: targets refused in every mode (API.md), one per spelling (tests/unit/test_notify.py has them all)
REFUSED_IN_EVERY_MODE = [
    "https://169.254.169.254/latest/meta-data/",
    "https://[fd00:ec2::254]/latest/meta-data/",
    "https://[::ffff:169.254.169.254]/latest/meta-data/",
    "https://2852039166/latest/meta-data/",
    "https://0251.0376.0251.0376/latest/meta-data/",
    "https://0.0.0.0:8000/",
    "https://224.0.0.1/",
    "https://240.0.0.1/",
]
#: targets allowed in local mode only
LOCAL_ONLY = ["https://127.0.0.1/hook", "https://[::1]/hook", "https://10.0.0.7/hook"]


def target_problem(answer: Any) -> str:
    assert answer.status == 400, answer
    assert answer.body["error"]["code"] == "validation_error"
    (detail,) = answer.body["error"]["details"]
    assert detail["path"] == "$.target"
    return str(detail["message"])


@pytest.fixture(params=["aws", "local"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.delenv("FLEETRUN_NOTIFY_ALLOW_LOCAL_TARGETS", raising=False)
    if request.param == "local":
        monkeypatch.setenv("FLEETRUN_LOCAL", "1")
    else:
        monkeypatch.delenv("FLEETRUN_LOCAL", raising=False)
    config.reset()
    return str(request.param)


def resolving(monkeypatch: pytest.MonkeyPatch, names: dict[str, str]) -> None:
    """Make `socket.getaddrinfo` answer `names` (host -> IP address); other hosts resolve as usual."""
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host in names:
            return real(names[host], port, *args, **kwargs)
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


class TestServerSideRequestForgery:
    @pytest.mark.parametrize("target", REFUSED_IN_EVERY_MODE)
    def test_a_metadata_link_local_or_reserved_address_is_refused_in_every_mode(self, fleet, mode, target):
        answer = create(fleet, {"channel": "webhook", "target": target, "secret": SECRET})

        assert target_problem(answer).startswith("must not point at a"), answer

    @pytest.mark.parametrize("target", LOCAL_ONLY)
    def test_a_loopback_or_private_address_is_allowed_only_in_local_mode(self, fleet, mode, target):
        answer = create(fleet, {"channel": "webhook", "target": target, "secret": SECRET})

        if mode == "local":
            assert answer.status == 201, answer
        else:
            assert target_problem(answer) == "must not point at a loopback or private address"

    @pytest.mark.parametrize("channel", ["slack", "dingtalk"])
    def test_slack_and_dingtalk_urls_follow_the_same_rule(self, fleet, mode, channel):
        answer = create(fleet, {"channel": channel, "target": "https://[::ffff:169.254.169.254]/services/T/B/X"})

        assert target_problem(answer) == "must not point at a link-local or cloud metadata address"

    def test_a_name_that_resolves_to_the_metadata_service_is_refused_at_creation(self, fleet, mode, monkeypatch):
        resolving(monkeypatch, {"metadata.attacker.test": "169.254.169.254"})

        answer = create(fleet, {"channel": "webhook", "target": "https://metadata.attacker.test/", "secret": SECRET})

        assert target_problem(answer) == "must not point at a link-local or cloud metadata address"
