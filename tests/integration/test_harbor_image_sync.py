"""Harbor image sync end to end in-process: the routes, the work queue and its worker, the
catalog, against a real HTTP server speaking Harbor v2.0 (tests/harbor_server.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from chalicelib import clock, config
from chalicelib.resources import WORK_QUEUE
from chalicelib.services import sweeper
from tests.harbor_server import Artifact, HarborServer
from tests.harness import Fleet

ROBOT, SECRET = "robot$catalog-sync", "harbor-robot-s3cret"


@pytest.fixture
def harbor(monkeypatch: pytest.MonkeyPatch) -> Iterator[HarborServer]:
    with HarborServer(ROBOT, SECRET) as server:
        server.put("library/nginx",
                   Artifact("sha256:aaa1", 1000, ["1.25", "latest"]),
                   Artifact("sha256:aaa2", 900, ["1.24"]),
                   Artifact("sha256:aaa3", 800, ["old"]),
                   Artifact("sha256:untagged", 10, []))
        server.put("library/redis", Artifact("sha256:bbb1", 2000, ["7"]))
        # a nested repository name: "/" inside it must be encoded twice in the path
        server.put("team/tools/builder", Artifact("sha256:ccc1", 3000, ["v1"]))
        for empty in ("p-empty-1", "p-empty-2"):
            server.project(empty)
        monkeypatch.setenv("FLEETRUN_HARBOR_URL", server.url)
        monkeypatch.setenv("FLEETRUN_HARBOR_ROBOT_NAME", ROBOT)
        monkeypatch.setenv("FLEETRUN_HARBOR_ROBOT_SECRET", SECRET)
        # small pages: every listing above spans several pages
        monkeypatch.setenv("FLEETRUN_HARBOR_PAGE_SIZE", "2")
        monkeypatch.setenv("FLEETRUN_HARBOR_RETRY_BACKOFF_SECONDS", "0.01")
        config.reset()
        yield server


def sync(fleet: Fleet, body: dict[str, Any] | None = None) -> dict[str, Any]:
    answer = fleet.user("POST", "/v1/images/sync", body or {}, who="root", roles=("admin",))
    assert answer.status == 202, answer
    fleet.settle()
    return fleet.task(answer.body["task_id"], who="root")


def catalog(fleet: Fleet, query: str = "") -> dict[str, dict[str, Any]]:
    answer = fleet.user("GET", f"/v1/images?limit=200{query}", who="viewer", roles=("viewer",))
    assert answer.status == 200, answer
    return {f"{i['repository']}:{i['tag']}": i for i in answer.body["items"]}


def counts_of(fleet: Fleet, task_id: str) -> dict[str, int]:
    events = fleet.user("GET", f"/v1/tasks/{task_id}/events?limit=200", who="root", roles=("admin",)).body["items"]
    final = [e for e in events if e["step"] == "sync" and e["type"] in ("success", "error")]
    assert len(final) == 1, final
    return final[0]["data"]  # type: ignore[no-any-return]


class TestSync:
    def test_first_sync_inserts_every_tag_of_every_page(self, fleet: Fleet, harbor: HarborServer):
        # WHEN an admin syncs
        task = sync(fleet)

        # THEN the task completed and the catalog holds every tag
        assert task["status"] == "completed", task
        assert task["parameters"]["robot_secret"] == "***"
        images = catalog(fleet)
        assert sorted(images) == ["library/nginx:1.24", "library/nginx:1.25", "library/nginx:latest",
                                  "library/nginx:old", "library/redis:7", "team/tools/builder:v1"]
        assert images["library/nginx:1.25"]["digest"] == "sha256:aaa1"
        assert images["library/nginx:1.25"]["size_bytes"] == 1000
        assert images["library/nginx:1.25"]["pushed_at"] == "2026-11-20T08:15:03.512Z"
        assert images["team/tools/builder:v1"]["project"] == "team"
        assert counts_of(fleet, task["task_id"]) == {
            "projects": 4, "repositories": 3, "artifacts": 6, "tags": 6,
            "inserted": 6, "updated": 0, "unchanged": 0, "removed": 0,
        }
        # pages were followed through Link headers, the nested name was encoded twice
        assert harbor.requests("/api/v2.0/projects?page=2&page_size=2")
        assert harbor.requests("/repositories/nginx/artifacts?page=2&page_size=2")
        assert harbor.requests("/projects/team/repositories/tools%252Fbuilder/artifacts")

    def test_resync_updates_changed_digest_marks_deleted_tag_removed_and_retries_a_500(
            self, fleet: Fleet, harbor: HarborServer):
        # GIVEN a synced catalog, then Harbor changes: 1.25 rebuilt, "old" deleted, "1.26" pushed
        sync(fleet)
        harbor.put("library/nginx",
                   Artifact("sha256:aaa9", 1100, ["1.25", "latest"]),
                   Artifact("sha256:aaa2", 900, ["1.24"]),
                   Artifact("sha256:ddd1", 1200, ["1.26"]))
        # and the second artifacts page of nginx answers 500 once
        harbor.fail("nginx/artifacts?page=2", 1)

        # WHEN it syncs again
        task = sync(fleet)

        # THEN the 500 was retried and the task completed with exact counts
        assert task["status"] == "completed", task
        assert [s for _, s in harbor.requests("nginx/artifacts?page=2")][-2:] == [500, 200]
        assert counts_of(fleet, task["task_id"]) == {
            "projects": 4, "repositories": 3, "artifacts": 3 + 2, "tags": 4 + 2,
            "inserted": 1, "updated": 2, "unchanged": 3, "removed": 1,
        }
        images = catalog(fleet)
        assert "library/nginx:old" not in images
        assert images["library/nginx:1.25"]["digest"] == "sha256:aaa9"
        assert images["library/nginx:1.26"]["digest"] == "sha256:ddd1"
        removed = catalog(fleet, "&include_removed=true")["library/nginx:old"]
        assert removed["removed_at"] is not None

    def test_unchanged_registry_writes_nothing(self, fleet: Fleet, harbor: HarborServer):
        sync(fleet)
        before = catalog(fleet)
        task = sync(fleet)
        assert counts_of(fleet, task["task_id"])["unchanged"] == 6
        assert catalog(fleet) == before  # synced_at unchanged: no row was written

    def test_a_page_that_keeps_failing_fails_the_task_and_marks_nothing_removed(
            self, fleet: Fleet, harbor: HarborServer):
        # GIVEN a synced catalog, then "old" deleted in Harbor and a page that always answers 500
        sync(fleet)
        harbor.put("library/nginx", Artifact("sha256:aaa1", 1000, ["1.25", "latest"]),
                   Artifact("sha256:aaa2", 900, ["1.24"]))
        harbor.fail("/projects/team/repositories?page=1", -1)

        # WHEN it syncs
        task = sync(fleet)

        # THEN the task failed with the request that failed, after three tries
        assert task["status"] == "failed", task
        run = fleet.runs(task["task_id"], who="root")["service"]
        url = f"{harbor.url}/api/v2.0/projects/team/repositories?page=1&page_size=2"
        assert run["error_message"] == f"Harbor GET {url} answered 500 after 3 tries"
        assert len(harbor.requests("/projects/team/repositories?page=1")) == 1 + 3
        # and nothing was marked removed from a listing cut short
        assert "library/nginx:old" in catalog(fleet)
        assert counts_of(fleet, task["task_id"])["removed"] == 0

    def test_one_project_only(self, fleet: Fleet, harbor: HarborServer):
        task = sync(fleet, {"project": "library"})
        assert task["status"] == "completed"
        assert sorted(catalog(fleet, "&project=library")) == [
            "library/nginx:1.24", "library/nginx:1.25", "library/nginx:latest", "library/nginx:old", "library/redis:7"]
        assert catalog(fleet, "&project=team") == {}
        assert not harbor.requests("/projects/team")

    def test_wrong_robot_secret_fails_with_a_clear_message(self, fleet: Fleet, harbor: HarborServer,
                                                           monkeypatch: pytest.MonkeyPatch):
        monkeypatch.setenv("FLEETRUN_HARBOR_ROBOT_SECRET", "wrong")
        config.reset()
        task = sync(fleet)
        assert task["status"] == "failed"
        run = fleet.runs(task["task_id"], who="root")["service"]
        assert "answered 401: check the robot account" in run["error_message"]
        assert catalog(fleet) == {}

    def test_the_secret_appears_in_no_answer_and_no_event(self, fleet: Fleet, harbor: HarborServer):
        task = sync(fleet)
        seen = json.dumps([task, fleet.events(task["task_id"], who="root"), fleet.runs(task["task_id"], who="root"),
                           catalog(fleet)])
        assert SECRET not in seen

    def test_paging_the_catalog(self, fleet: Fleet, harbor: HarborServer):
        sync(fleet)
        names: list[str] = []
        cursor = ""
        while True:
            answer = fleet.user("GET", f"/v1/images?limit=4{cursor}", roles=("viewer",))
            names += [f"{i['repository']}:{i['tag']}" for i in answer.body["items"]]
            if not answer.body["next_cursor"]:
                break
            cursor = f"&cursor={answer.body['next_cursor']}"
        assert names == sorted(catalog(fleet))


class TestWorkQueue:
    def test_a_duplicate_delivery_executes_the_run_once(self, fleet: Fleet, harbor: HarborServer):
        # GIVEN a sync task dispatched, its work job duplicated on the queue
        answer = fleet.user("POST", "/v1/images/sync", {}, who="root", roles=("admin",))
        task_id = answer.body["task_id"]
        fleet.stream.drain()
        fleet.queue.drain()
        job = json.dumps({"job": "execute", "task_id": task_id, "node": "service", "attempt": 1})
        boto3.client("sqs").send_message(QueueUrl=fleet.provisioned.queue_urls[WORK_QUEUE.name], MessageBody=job)

        # WHEN both deliveries are handled
        fleet.settle()

        # THEN Harbor was listed once and the run has one attempt
        assert len(harbor.requests("/api/v2.0/projects?page=1")) == 1
        assert fleet.task(task_id, who="root")["status"] == "completed"
        assert fleet.runs(task_id, who="root")["service"]["attempt"] == 1
        assert counts_of(fleet, task_id)["inserted"] == 6  # one final event: executed once

    def test_a_lost_wake_up_is_sent_again_by_the_sweeper(self, fleet: Fleet, harbor: HarborServer):
        # GIVEN a dispatched sync whose work job was lost
        answer = fleet.user("POST", "/v1/images/sync", {}, who="root", roles=("admin",))
        task_id = answer.body["task_id"]
        fleet.stream.drain()
        fleet.queue.drain()
        boto3.client("sqs").purge_queue(QueueUrl=fleet.provisioned.queue_urls[WORK_QUEUE.name])
        fleet.settle()
        assert fleet.task(task_id, who="root")["status"] == "running"

        # WHEN the sweeper passes after the grace period
        sweeper.sweep(clock.now_epoch() + 3600)
        fleet.settle()

        # THEN the run was executed
        assert fleet.task(task_id, who="root")["status"] == "completed"

    def test_retry_of_a_failed_sync_runs_again_on_the_work_queue(self, fleet: Fleet, harbor: HarborServer):
        harbor.fail("/api/v2.0/projects?page=1", 3)
        failed = sync(fleet)
        assert failed["status"] == "failed"
        answer = fleet.user("POST", f"/v1/tasks/{failed['task_id']}/retry", {}, who="root", roles=("admin",))
        assert answer.status == 202, answer
        fleet.settle()
        assert fleet.task(failed["task_id"], who="root")["status"] == "completed"
        assert len(catalog(fleet)) == 6


class TestRoutes:
    def test_sync_without_harbor_configured_is_409(self, fleet: Fleet):
        answer = fleet.user("POST", "/v1/images/sync", {}, who="root", roles=("admin",))
        assert answer.status == 409
        assert answer.body["error"]["code"] == "not_configured"
        assert "FLEETRUN_HARBOR_URL" in answer.body["error"]["message"]

    def test_sync_is_for_admins(self, fleet: Fleet, harbor: HarborServer):
        answer = fleet.user("POST", "/v1/images/sync", {}, roles=("operator",))
        assert answer.status == 403

    def test_sync_request_is_validated(self, fleet: Fleet, harbor: HarborServer):
        answer = fleet.user("POST", "/v1/images/sync", {"repository": "no-slash"}, who="root", roles=("admin",))
        assert answer.status == 400
        assert answer.body["error"]["details"][0]["path"] == "$.repository"

    def test_sync_counts_against_the_rate_limit(self, fleet: Fleet, harbor: HarborServer,
                                                monkeypatch: pytest.MonkeyPatch):
        monkeypatch.setenv("FLEETRUN_RATE_LIMIT", "2")
        config.reset()
        statuses = [fleet.user("POST", "/v1/images/sync", {}, who="root", roles=("admin",)).status
                    for _ in range(3)]
        assert statuses == [202, 202, 429]

    def test_a_cursor_continues_only_its_own_listing(self, fleet: Fleet, harbor: HarborServer):
        sync(fleet)
        first = fleet.user("GET", "/v1/images?limit=1", roles=("viewer",)).body
        answer = fleet.user("GET", f"/v1/images?limit=1&project=team&cursor={first['next_cursor']}",
                            roles=("viewer",))
        assert answer.status == 400
        assert answer.body["error"]["details"][0]["path"] == "$query.cursor"

    def test_include_removed_must_be_a_boolean(self, fleet: Fleet):
        answer = fleet.user("GET", "/v1/images?include_removed=yes", roles=("viewer",))
        assert answer.status == 400

    def test_the_daily_schedule_creates_one_task_a_day(self, fleet: Fleet, harbor: HarborServer):
        for _ in range(2):  # EventBridge may deliver a firing twice
            fleet.client.lambda_.invoke("sync_images_daily", scheduled_event(fleet))
        fleet.settle()
        listed = fleet.user("GET", "/v1/tasks?type=images.sync&owner=scheduler", who="root", roles=("admin",))
        assert [t["status"] for t in listed.body["items"]] == ["completed"]

    def test_the_daily_schedule_does_nothing_without_harbor(self, fleet: Fleet):
        fleet.client.lambda_.invoke("sync_images_daily", scheduled_event(fleet))
        listed = fleet.user("GET", "/v1/tasks?type=images.sync", who="root", roles=("admin",))
        assert listed.body["items"] == []


def scheduled_event(fleet: Fleet) -> dict[str, Any]:
    return fleet.client.events.generate_cw_event(  # type: ignore[no-any-return]
        source="aws.events", detail_type="Scheduled Event", detail={},
        resources=["arn:aws:events:us-east-1:123456789012:rule/fleetrun-sync_images_daily"],
    )


def push_event(repository: str, digest: str, tag: str, occur_at: int = 1763800000) -> dict[str, Any]:
    namespace, _, name = repository.partition("/")
    return {
        "type": "PUSH_ARTIFACT", "occur_at": occur_at, "operator": "ci",
        "event_data": {
            "resources": [{"digest": digest, "tag": tag, "resource_url": f"harbor.example/{repository}:{tag}"}],
            "repository": {"date_created": 1763700000, "name": name, "namespace": namespace,
                           "repo_full_name": repository, "repo_type": "private"},
        },
    }


class TestWebhook:
    HOOK_SECRET = "hook-shared-secret"

    @pytest.fixture(autouse=True)
    def _hook_secret(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("FLEETRUN_HARBOR_WEBHOOK_SECRET", self.HOOK_SECRET)
        config.reset()

    def hook(self, fleet: Fleet, body: dict[str, Any], secret: str | None = HOOK_SECRET) -> Any:
        headers = {"Authorization": secret} if secret is not None else None
        return fleet.call("POST", "/v1/hooks/harbor", body, headers=headers)

    def test_a_push_syncs_that_repository_only(self, fleet: Fleet, harbor: HarborServer):
        # GIVEN a synced catalog, then a new tag pushed to library/redis
        sync(fleet)
        harbor.put("library/redis", Artifact("sha256:bbb1", 2000, ["7"]), Artifact("sha256:bbb2", 2100, ["8"]))
        before = len(harbor.requests())

        # WHEN Harbor posts the push event
        answer = self.hook(fleet, push_event("library/redis", "sha256:bbb2", "8"))
        fleet.settle()

        # THEN a visible task synced only that repository
        assert answer.status == 202, answer
        task = fleet.user("GET", f"/v1/tasks/{answer.body['task_id']}", who="root", roles=("admin",)).body
        assert task["status"] == "completed"
        assert task["owner"] == "harbor-webhook"
        assert task["parameters"]["repository"] == "library/redis"
        assert catalog(fleet)["library/redis:8"]["digest"] == "sha256:bbb2"
        assert all("/repositories/redis/artifacts" in path for path, _ in harbor.requests()[before:])
        assert counts_of(fleet, task["task_id"])["inserted"] == 1

    def test_a_redelivered_event_starts_no_second_sync(self, fleet: Fleet, harbor: HarborServer):
        first = self.hook(fleet, push_event("library/redis", "sha256:bbb1", "7"))
        second = self.hook(fleet, push_event("library/redis", "sha256:bbb1", "7"))
        assert first.body["task_id"] == second.body["task_id"]

    def test_a_wrong_or_missing_secret_is_401_before_the_body_is_read(self, fleet: Fleet, harbor: HarborServer):
        assert self.hook(fleet, push_event("library/redis", "sha256:x", "7"), "guess").status == 401
        assert self.hook(fleet, push_event("library/redis", "sha256:x", "7"), None).status == 401
        assert self.hook(fleet, {"not": "harbor"}, "guess").status == 401

    def test_other_events_are_accepted_and_ignored(self, fleet: Fleet, harbor: HarborServer):
        answer = self.hook(fleet, {"type": "PULL_ARTIFACT", "event_data": {}})
        assert answer.status == 202
        assert answer.body == {"accepted": True, "task_id": None}

    def test_a_push_without_repository_is_400(self, fleet: Fleet, harbor: HarborServer):
        answer = self.hook(fleet, {"type": "PUSH_ARTIFACT", "event_data": {"repository": {}}})
        assert answer.status == 400

    def test_receiver_off_without_a_secret(self, fleet: Fleet, harbor: HarborServer,
                                           monkeypatch: pytest.MonkeyPatch):
        monkeypatch.delenv("FLEETRUN_HARBOR_WEBHOOK_SECRET")
        config.reset()
        answer = self.hook(fleet, push_event("library/redis", "sha256:x", "7"))
        assert answer.status == 409
        assert answer.body["error"]["code"] == "not_configured"


def sync_task(harbor_url: str) -> dict[str, Any]:
    """A `POST /v1/tasks` body of an images.sync task an operator writes themselves."""
    return {"type": "images.sync", "parameters": {"harbor_url": harbor_url, "robot_name": ROBOT,
                                                  "robot_secret": SECRET}}


def refused_harbor(answer: Any, path: str = "$.parameters.harbor_url") -> None:
    assert answer.status == 400, answer
    assert answer.body["error"]["code"] == "validation_error"
    assert "FLEETRUN_HARBOR_URLS" in answer.body["error"]["message"]
    assert [d["path"] for d in answer.body["error"]["details"]] == [path]


class TestServiceRunsTakeNoDelegate:
    @pytest.mark.parametrize(("field", "value"), [("runner_node", "salt-master"),
                                                 ("target_nodes", ["node-a"]),
                                                 ("target_selector", {"labels": {"pool": "cdn"}})])
    def test_an_images_sync_task_naming_a_node_is_refused_and_nothing_is_created(
            self, fleet: Fleet, harbor: HarborServer, field: str, value: Any):
        # WHEN an operator submits an images.sync task naming a node to run on (a runner_node
        # used to be taken: its run waited for that node's agent, the worker's events and
        # completion were refused as another node's, and the task hung until its claim timeout)
        answer = fleet.user("POST", "/v1/tasks", {**sync_task(harbor.url), field: value}, roles=("operator",))

        # THEN it is refused, naming the field, and no task exists
        assert answer.status == 400, answer
        assert answer.body["error"]["code"] == "validation_error"
        assert [d["path"] for d in answer.body["error"]["details"]] == [f"$.{field}"]
        assert fleet.user("GET", "/v1/tasks?type=images.sync", who="root", roles=("admin",)).body["items"] == []

    def test_a_schedule_of_images_sync_with_a_runner_node_is_refused(self, fleet: Fleet, harbor: HarborServer):
        body = {"name": "nightly sync", "expression": "rate(1 day)",
                "task": {**sync_task(harbor.url), "runner_node": "salt-master"}}

        answer = fleet.user("POST", "/v1/schedules", body, roles=("operator",))

        assert answer.status == 400, answer
        assert [d["path"] for d in answer.body["error"]["details"]] == ["$.task.runner_node"]


class TestHarborAllowList:
    @pytest.mark.parametrize("harbor_url", ["http://169.254.169.254/latest/meta-data", "http://127.0.0.1:9/"])
    def test_an_operator_cannot_point_images_sync_at_a_url_outside_the_allow_list(
            self, fleet: Fleet, harbor: HarborServer, harbor_url: str):
        # WHEN an operator submits an images.sync task of their own against another URL
        answer = fleet.user("POST", "/v1/tasks", sync_task(harbor_url), roles=("operator",))

        # THEN it is refused, naming the setting, and no task exists
        refused_harbor(answer)
        assert fleet.user("GET", "/v1/tasks?type=images.sync", who="root", roles=("admin",)).body["items"] == []

    def test_a_harbor_in_the_allow_list_may_be_synced_by_an_operator(
            self, fleet: Fleet, harbor: HarborServer, monkeypatch: pytest.MonkeyPatch):
        # GIVEN an allow-list naming this Harbor (with a trailing slash) and no default Harbor
        monkeypatch.delenv("FLEETRUN_HARBOR_URL")
        monkeypatch.setenv("FLEETRUN_HARBOR_URLS", f"https://harbor-eu.example.com, {harbor.url}/")
        config.reset()

        # WHEN an operator syncs it
        answer = fleet.user("POST", "/v1/tasks", sync_task(harbor.url), roles=("operator",))
        fleet.settle()

        # THEN it ran against that Harbor
        assert answer.status == 202, answer
        assert fleet.task(answer.body["task_id"])["status"] == "completed"
        assert len(catalog(fleet)) == 6

    def test_a_harbor_taken_off_the_allow_list_is_not_read_when_the_task_runs(
            self, fleet: Fleet, harbor: HarborServer, monkeypatch: pytest.MonkeyPatch):
        # GIVEN an images.sync task created while its Harbor was allowed
        monkeypatch.delenv("FLEETRUN_HARBOR_URL")
        monkeypatch.setenv("FLEETRUN_HARBOR_URLS", harbor.url)
        config.reset()
        task_id = fleet.user("POST", "/v1/tasks", sync_task(harbor.url), roles=("operator",)).body["task_id"]

        # WHEN the admin takes it off the list before the run starts
        monkeypatch.setenv("FLEETRUN_HARBOR_URLS", "https://harbor-eu.example.com")
        config.reset()
        fleet.settle()

        # THEN the run failed with the reason and Harbor was never asked
        assert fleet.task(task_id)["status"] == "failed"
        assert "FLEETRUN_HARBOR_URLS" in fleet.runs(task_id)["service"]["error_message"]
        assert harbor.requests() == []

    def test_a_schedule_cannot_carry_a_harbor_outside_the_allow_list(self, fleet: Fleet, harbor: HarborServer):
        body = {"name": "nightly sync", "expression": "rate(1 day)",
                "task": sync_task("http://169.254.169.254/latest/meta-data")}

        answer = fleet.user("POST", "/v1/schedules", body, roles=("operator",))

        refused_harbor(answer, "$.task.parameters.harbor_url")
