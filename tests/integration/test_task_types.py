"""Task types admins define: versions, pinning, retire, built-ins, bad definitions, secrets by path."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from chalicelib.store import task_types as store
from tests.harness import Fleet, token

SECRET = "pa55-w0rd-xyz"
ADMIN = ("admin",)


def cdn_purge(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "cdn.purge",
        "description": "Purge paths from the CDN cache.",
        "steps": ["purge", "verify"],
        "parameters_schema": {
            "type": "object",
            "properties": {
                "paths": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                "credentials": {"type": "object", "properties": {"user": {"type": "string"},
                                                                 "password": {"type": "string"}}},
            },
            "required": ["paths"],
            "additionalProperties": False,
        },
        "secret_parameters": ["credentials.password"],
        "default_max_concurrency": 5,
        "max_attempts": 2,
        "run_timeout_seconds": 600,
    }
    return {**body, **changes}


def define(fleet: Fleet, body: dict[str, Any]) -> dict[str, Any]:
    answer = fleet.user("POST", "/v1/task-types", body, who="root", roles=ADMIN)
    assert answer.status == 201, answer
    return answer.body  # type: ignore[no-any-return]


def new_version(fleet: Fleet, name: str, body: dict[str, Any]) -> dict[str, Any]:
    answer = fleet.user("PUT", f"/v1/task-types/{name}", body, who="root", roles=ADMIN)
    assert answer.status == 200, answer
    return answer.body  # type: ignore[no-any-return]


def purge_task(nodes: list[str], **parameters: Any) -> dict[str, Any]:
    return {"type": "cdn.purge", "target_nodes": nodes, "parameters": {"paths": ["/img"], **parameters}}


class TestDefine:
    def test_a_defined_type_is_version_1_and_listed_after_the_builtins(self, fleet: Fleet) -> None:
        # WHEN an admin defines a type
        created = define(fleet, cdn_purge())
        # THEN it is version 1, not built-in, agent-executed
        assert (created["name"], created["version"], created["builtin"], created["executor"]) == (
            "cdn.purge", 1, False, "agent")
        assert created["secret_parameters"] == ["credentials.password"]
        # AND a viewer lists the built-ins and it, and reads it alone
        listing = fleet.user("GET", "/v1/task-types", roles=("viewer",)).body
        builtins = [item for item in listing["items"] if item["builtin"]]
        assert {item["version"] for item in builtins} == {1}
        assert "shell" in {item["name"] for item in builtins}
        assert listing["items"][-1]["name"] == "cdn.purge"
        assert fleet.user("GET", "/v1/task-types/cdn.purge", roles=("viewer",)).body == created

    def test_only_admins_define_types(self, fleet: Fleet) -> None:
        answer = fleet.user("POST", "/v1/task-types", cdn_purge(), roles=("operator",))
        assert (answer.status, answer.body["error"]["code"]) == (403, "forbidden")

    def test_a_node_token_may_read_the_registry(self, fleet: Fleet) -> None:
        # GIVEN a node and a defined type
        fleet.register("edge-1")
        define(fleet, cdn_purge())
        # WHEN its agent reads the registry with its node token
        listing = fleet.call("GET", "/v1/task-types", bearer=fleet.node_tokens["edge-1"])
        one = fleet.call("GET", "/v1/task-types/cdn.purge", bearer=fleet.node_tokens["edge-1"])
        # THEN it may; it may not define one
        assert (listing.status, one.status) == (200, 200)
        refused = fleet.call("POST", "/v1/task-types", cdn_purge(), bearer=fleet.node_tokens["edge-1"])
        assert refused.status == 401

    @pytest.mark.parametrize("limit", [1, 2, 6, 7, 50])
    def test_the_listing_pages_through_builtins_then_defined_types(self, fleet: Fleet, limit: int) -> None:
        # GIVEN three defined types
        for index in range(3):
            define(fleet, cdn_purge(name=f"custom.t{index}"))
        # WHEN the listing is read page by page
        items: list[dict[str, Any]] = []
        cursor = ""
        for _ in range(20):
            page = fleet.user("GET", f"/v1/task-types?limit={limit}{cursor}").body
            assert len(page["items"]) <= limit
            items.extend(page["items"])
            if not page["next_cursor"]:
                break
            cursor = f"&cursor={page['next_cursor']}"
        # THEN every type comes once: the built-ins, then the defined ones by name
        names = [item["name"] for item in items]
        assert names[-3:] == ["custom.t0", "custom.t1", "custom.t2"]
        assert all(item["builtin"] for item in items[:-3])
        assert len(names) == len(set(names))

    def test_a_live_name_is_a_conflict_and_a_builtin_cannot_be_replaced(self, fleet: Fleet) -> None:
        define(fleet, cdn_purge())
        again = fleet.user("POST", "/v1/task-types", cdn_purge(), who="root", roles=ADMIN)
        shadow = fleet.user("POST", "/v1/task-types", cdn_purge(name="shell"), who="root", roles=ADMIN)
        replace = fleet.user("PUT", "/v1/task-types/shell", cdn_purge(name="shell"), who="root", roles=ADMIN)
        retire = fleet.user("DELETE", "/v1/task-types/shell", who="root", roles=ADMIN)
        for answer in (again, shadow, replace, retire):
            assert (answer.status, answer.body["error"]["code"]) == (409, "conflict"), answer

    def test_an_unknown_type_is_not_found(self, fleet: Fleet) -> None:
        for method in ("GET", "PUT", "DELETE"):
            body = cdn_purge(name="no.such") if method == "PUT" else None
            answer = fleet.user(method, "/v1/task-types/no.such", body, who="root", roles=ADMIN)
            assert (answer.status, answer.body["error"]["code"]) == (404, "not_found"), method


class TestBadDefinitions:
    @pytest.mark.parametrize(("change", "path"), [
        ({"parameters_schema": {"type": "object", "properties": {"paths": {"type": 12}}}},
         "$.parameters_schema.properties.paths.type"),
        ({"parameters_schema": {"type": "object", "properties": {"paths": {"$ref": "https://evil.example/s.json"}}}},
         "$.parameters_schema.properties.paths.$ref"),
        ({"secret_parameters": ["credentials.pin"]}, "$.secret_parameters[0]"),
        ({"parameters_schema": {"type": "object", "description": "x" * (65 * 1024)}, "secret_parameters": []},
         "$.parameters_schema"),
        ({"steps": [f"step-{i}" for i in range(51)]}, "$.steps"),
        ({"steps": [f"plan-{i}" for i in range(30)], "apply_steps": [f"apply-{i}" for i in range(21)],
          "requires_confirmation": True}, "$.apply_steps[20]"),
        ({"steps": ["purge", ".."]}, "$.steps[1]"),
        ({"steps": ["a/b"]}, "$.steps[0]"),
        ({"name": "Bad Name"}, "$.name"),
        ({"max_attempts": 11}, "$.max_attempts"),
        ({"executor": "service"}, "$.executor"),
    ])
    def test_each_problem_is_a_400_with_its_path(self, fleet: Fleet, change: dict[str, Any], path: str) -> None:
        answer = fleet.user("POST", "/v1/task-types", cdn_purge(**change), who="root", roles=ADMIN)
        assert (answer.status, answer.body["error"]["code"]) == (400, "validation_error"), answer
        assert path in [detail["path"] for detail in answer.body["error"]["details"]], answer.body

    def test_a_put_whose_name_differs_from_the_path_is_refused(self, fleet: Fleet) -> None:
        define(fleet, cdn_purge())
        answer = fleet.user("PUT", "/v1/task-types/cdn.purge", cdn_purge(name="cdn.other"), who="root", roles=ADMIN)
        assert (answer.status, answer.body["error"]["details"][0]["path"]) == (400, "$.name")


class TestVersions:
    def test_a_task_keeps_the_version_it_was_created_with(self, fleet: Fleet) -> None:
        # GIVEN a task of version 1 (steps purge, verify)
        define(fleet, cdn_purge())
        old_task = fleet.started(purge_task(["edge-1", "edge-2"]))
        assert fleet.task(old_task)["type_version"] == 1
        # WHEN version 2 changes the steps and the schema (a required `zone`)
        v2_schema = copy.deepcopy(cdn_purge()["parameters_schema"])
        v2_schema["properties"]["zone"] = {"type": "string"}
        v2_schema["required"] = ["paths", "zone"]
        updated = new_version(fleet, "cdn.purge", cdn_purge(steps=["invalidate"], parameters_schema=v2_schema))
        assert updated["version"] == 2
        # THEN the old task's runs are still claimed with version 1's steps
        [run] = fleet.claim("edge-1")
        assert (run["step"], run["steps"]) == ("purge", ["purge", "verify"])
        # AND a new task is checked against version 2 and pinned to it
        refused = fleet.submit(purge_task(["edge-3"]))
        assert (refused.status, refused.body["error"]["details"][0]["path"]) == (400, "$.parameters.zone")
        new_task = fleet.started(purge_task(["edge-3"], zone="eu"))
        assert fleet.task(new_task)["type_version"] == 2
        [new_run] = fleet.claim("edge-3")
        assert (new_run["step"], new_run["steps"]) == ("invalidate", ["invalidate"])
        # AND the old task finishes on version 1
        assert fleet.finish("edge-1", run).status == 200
        fleet.run_agents(["edge-2"])
        fleet.settle()
        assert fleet.task(old_task)["status"] == "completed"

    def test_a_retired_type_takes_no_new_task_and_its_tasks_run_on(self, fleet: Fleet) -> None:
        # GIVEN a task of a type, and the type retired
        define(fleet, cdn_purge())
        task_id = fleet.started(purge_task(["edge-1"]))
        retired = fleet.user("DELETE", "/v1/task-types/cdn.purge", who="root", roles=ADMIN)
        assert (retired.status, retired.body["retired"]) == (200, True)
        # THEN new tasks are refused, the type is gone from the registry
        refused = fleet.submit(purge_task(["edge-1"]))
        assert (refused.status, refused.body["error"]["code"]) == (400, "unknown_task_type")
        assert fleet.user("GET", "/v1/task-types/cdn.purge").status == 404
        assert "cdn.purge" not in {item["name"] for item in fleet.user("GET", "/v1/task-types").body["items"]}
        # AND the existing task runs to its end
        assert fleet.run_agents(["edge-1"]) == 1
        assert fleet.task(task_id)["status"] == "completed"
        # AND defining the name again revives it as its next version
        assert define(fleet, cdn_purge(steps=["purge"]))["version"] == 2


class TestSecretPaths:
    def test_a_nested_secret_is_masked_revealed_to_the_agent_and_scrubbed_from_its_echo(self, fleet: Fleet) -> None:
        # GIVEN a task whose credentials.password is secret
        define(fleet, cdn_purge())
        task_id = fleet.started(purge_task(["edge-1"], credentials={"user": "svc", "password": SECRET}))
        # THEN the task shows it masked in place, the user kept
        assert fleet.task(task_id)["parameters"]["credentials"] == {"user": "svc", "password": "***"}
        # AND the agent's claim has it in clear
        [run] = fleet.claim("edge-1")
        assert run["parameters"]["credentials"] == {"user": "svc", "password": SECRET}
        # WHEN the agent echoes it in an event and in its error message
        echoed = fleet.agent("edge-1", f"/v1/runs/{run['run_id']}/events", {"attempt": run["attempt"], "events": [
            {"type": "info", "step": "purge", "message": f"login with {SECRET}", "data": {"pw": SECRET}}]})
        assert echoed.status == 202
        assert fleet.finish("edge-1", run, "failed", f"bad password {SECRET}").status == 200
        fleet.settle()
        # THEN no answer carries it
        texts = repr(fleet.events(task_id)) + repr(fleet.runs(task_id)) + repr(fleet.task(task_id))
        assert SECRET not in texts
        assert "login with ***" in texts

    def test_a_short_nested_secret_is_refused_at_its_path(self, fleet: Fleet) -> None:
        define(fleet, cdn_purge())
        fleet.register("edge-1")
        answer = fleet.submit(purge_task(["edge-1"], credentials={"password": "ab"}))
        assert (answer.status, answer.body["error"]["details"][0]["path"]) == (
            400, "$.parameters.credentials.password")


def test_tokens_of_users_still_work_with_the_registry(fleet: Fleet) -> None:
    answer = fleet.call("GET", "/v1/task-types", bearer=token("bob", ("viewer",)))
    assert answer.status == 200


class TestRaces:
    def test_two_writers_of_one_version_cannot_both_win(self, aws: object) -> None:
        # GIVEN version 1 of a type
        store.add_version("cdn.purge", 1, "{}", "2026-11-22T18:07:19Z", "root")
        # WHEN two admins both make version 2 from it, or version 1 again
        store.add_version("cdn.purge", 2, "{}", "2026-11-22T18:07:20Z", "root")
        # THEN the second writer loses, and the head stays at the winner's version
        with pytest.raises(store.VersionTaken):
            store.add_version("cdn.purge", 2, '{"other": 1}', "2026-11-22T18:07:20Z", "bob")
        with pytest.raises(store.VersionTaken):
            store.add_version("cdn.purge", 1, "{}", "2026-11-22T18:07:21Z", "bob")
        head = store.head("cdn.purge")
        assert head is not None
        assert (int(head.version), head.created_by) == (2, "root")

    def test_a_retire_of_a_version_already_replaced_changes_nothing(self, aws: object) -> None:
        store.add_version("cdn.purge", 1, "{}", "2026-11-22T18:07:19Z", "root")
        store.add_version("cdn.purge", 2, "{}", "2026-11-22T18:07:20Z", "root")
        assert store.retire("cdn.purge", 1, "2026-11-22T18:07:21Z") is False
        head = store.head("cdn.purge")
        assert head is not None
        assert not head.retired
