"""The /v1/subscriptions routes: validation, secrets never shown, who sees what, pagination."""

from __future__ import annotations

import json
import logging
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

    def test_viewers_may_subscribe_to_their_own_tasks(self, fleet):
        answer = create(fleet, {"channel": "email", "target": "me@example.com"}, who="val", roles=("viewer",))

        assert answer.status == 201, answer
        assert fleet.user("GET", "/v1/subscriptions", who="val", roles=("viewer",)).body["items"][0]["owner"] == "val"

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
