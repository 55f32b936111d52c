"""The batched agent report (`POST /v1/agents/{node_id}/report`): several heartbeats, completions
and a claim in one request, each item answered on its own with the status of its single route."""

from __future__ import annotations

from typing import Any

from chalicelib import config
from chalicelib.store import runs
from tests.harness import Fleet, assert_statistics_equal_recount
from tests.integration.test_cancel_and_retry import cancelled, retry
from tests.scenarios import shell
from tests.service_clock import Clock


def report(fleet: Fleet, node: str, body: dict[str, Any]) -> Any:
    return fleet.agent(node, f"/v1/agents/{node}/report", body)


def completion(run: dict[str, Any], status: str = "succeeded", **more: Any) -> dict[str, Any]:
    return {"run_id": run["run_id"], "attempt": run["attempt"], "status": status, **more}


def two_runs_on(fleet: Fleet, node: str) -> list[dict[str, Any]]:
    """Two tasks on `node`, both runs claimed in one claim."""
    for name in ("first", "second"):
        fleet.started({**shell([node]), "name": name})
    runs = fleet.claim(node, 5)
    assert len(runs) == 2, runs
    return runs


def test_a_batch_with_a_good_and_a_stale_heartbeat_answers_each(fleet: Fleet) -> None:
    # GIVEN n2's attempt 1 of task A went stale (cancelled, retried) and n2 holds attempt 2 and task B
    task_a = cancelled(fleet)
    assert retry(fleet, task_a).status == 202
    fleet.settle()
    task_b = fleet.started(shell(["n2"]))
    claimed = {run["task_id"]: run for run in fleet.claim("n2", 5)}
    assert set(claimed) == {task_a, task_b}
    assert claimed[task_a]["attempt"] == 2

    # WHEN one report heartbeats the stale attempt and both live ones
    stale = {"run_id": f"{task_a}.n2", "attempt": 1, "progress": 50}
    answer = report(fleet, "n2", {"heartbeats": [
        stale,
        {"run_id": claimed[task_b]["run_id"], "attempt": 1, "progress": 40, "step": "patch",
         "events": [{"type": "info", "step": "patch", "message": "half way"}]},
        {"run_id": claimed[task_a]["run_id"], "attempt": 2, "progress": 10},
    ]})

    # THEN the request succeeds and each item has its own answer, in order
    assert answer.status == 200, answer
    lost, good, fresh = answer.body["heartbeats"]
    assert (lost["run_id"], lost["status"], lost["error"]["reason"]) == (stale["run_id"], 409, "lease_lost")
    assert (good["status"], good["cancel_requested"]) == (200, False)
    assert good["lease_expires_at"]
    assert fresh["status"] == 200
    assert answer.body["completions"] == []
    assert "claim" not in answer.body
    # AND the good heartbeat's progress and events were recorded
    fleet.settle()
    listing = fleet.user("GET", f"/v1/tasks/{task_b}/nodes").body
    (node,) = listing["items"] if "items" in listing else listing["nodes"]
    assert (node["progress"], node["step"]) == (40, "patch")
    events = fleet.user("GET", f"/v1/tasks/{task_b}/events").body
    assert any(event["message"] == "half way" for event in events.get("events", events.get("items", [])))


def test_completions_in_a_batch_are_idempotent_on_replay(fleet: Fleet) -> None:
    # GIVEN two runs of n1, from two tasks
    runs = two_runs_on(fleet, "n1")
    body = {"completions": [completion(runs[0]), completion(runs[1], "failed", error_message="boom")]}

    # WHEN one report completes both, and is sent again
    first = report(fleet, "n1", body)
    again = report(fleet, "n1", body)

    # THEN both items succeed both times, the replay says so, and nothing is counted twice
    assert first.status == 200, first
    assert again.status == 200, again
    assert [(c["status"], c["replayed"]) for c in first.body["completions"]] == [(200, False), (200, False)]
    assert [(c["status"], c["replayed"]) for c in again.body["completions"]] == [(200, True), (200, True)]
    fleet.settle()
    statuses = sorted(fleet.task(run["task_id"])["status"] for run in runs)
    assert statuses in (["completed", "failed"], ["completed", "partial_failure"]), statuses
    assert_statistics_equal_recount()


def test_a_stale_completion_fails_only_its_own_item(fleet: Fleet) -> None:
    # GIVEN a run of n1 and a completion for an attempt it never had
    runs = two_runs_on(fleet, "n1")
    stale = {**completion(runs[0]), "attempt": runs[0]["attempt"] + 1}

    # WHEN both go in one report
    answer = report(fleet, "n1", {"completions": [stale, completion(runs[1])]})

    # THEN the stale one is a 409 and the good one is recorded
    assert answer.status == 200, answer
    refused, done = answer.body["completions"]
    assert refused["status"] == 409
    assert refused["error"]["code"] == "conflict"
    assert done == {"run_id": runs[1]["run_id"], "status": 200, "replayed": False}
    fleet.settle()
    assert fleet.task(runs[1]["task_id"])["status"] == "completed"
    assert fleet.task(runs[0]["task_id"])["node_counts"]["running"] == 1


def test_a_claim_of_max_n_returns_up_to_n(fleet: Fleet) -> None:
    # GIVEN three tasks on n3
    for name in ("a", "b", "c"):
        fleet.started({**shell(["n3"]), "name": name})

    # WHEN a report claims 2, then another claims 5
    first = report(fleet, "n3", {"claim": {"max": 2}})
    second = report(fleet, "n3", {"claim": {"max": 5}})

    # THEN the first leases 2, the second the one left
    assert first.status == 200
    assert second.status == 200
    assert first.body["claim"]["status"] == 200
    assert len(first.body["claim"]["runs"]) == 2
    assert len(second.body["claim"]["runs"]) == 1
    claimed = first.body["claim"]["runs"] + second.body["claim"]["runs"]
    assert len({run["run_id"] for run in claimed}) == 3


def test_completions_and_the_next_claim_go_in_one_report(fleet: Fleet) -> None:
    # GIVEN a run of n1 and another task waiting for n1
    fleet.started(shell(["n1"]))
    (run,) = fleet.claim("n1")
    waiting = fleet.started({**shell(["n1"]), "name": "next"})

    # WHEN n1 reports the completion and claims in the same request
    answer = report(fleet, "n1", {"completions": [completion(run)], "claim": {"max": 1}})

    # THEN both happened
    assert answer.body["completions"][0]["status"] == 200
    assert [r["task_id"] for r in answer.body["claim"]["runs"]] == [waiting]


def test_another_nodes_run_is_not_found_in_its_item_only(fleet: Fleet) -> None:
    runs = two_runs_on(fleet, "n1")
    fleet.register("n9")

    answer = report(fleet, "n9", {"heartbeats": [{"run_id": runs[0]["run_id"], "attempt": 1}]})

    assert answer.status == 200, answer
    assert answer.body["heartbeats"][0]["status"] == 404


def test_a_report_for_another_node_or_a_bad_body_is_refused_whole(fleet: Fleet) -> None:
    fleet.register("n1")

    other = fleet.agent("n1", "/v1/agents/n2/report", {"heartbeats": []})
    bad = report(fleet, "n1", {"heartbeats": [{"run_id": "x.n1"}]})
    unknown = report(fleet, "n1", {"beats": []})

    assert other.status == 403, other
    assert bad.status == 400, bad
    assert bad.body["error"]["code"] == "validation_error", bad
    assert unknown.status == 400, unknown


def test_odd_run_ids_are_a_400_or_their_items_404_never_a_500(fleet: Fleet) -> None:
    fleet.register("n1")

    control = report(fleet, "n1", {"heartbeats": [{"run_id": "T\u0001.n1", "attempt": 1}]})
    odd = report(fleet, "n1", {
        "heartbeats": [{"run_id": "no-dot", "attempt": 1}, {"run_id": ".", "attempt": 1}],
        "completions": [{"run_id": "x.n1", "attempt": 1, "status": "succeeded"},
                        {"run_id": "01HZZZZZZZZZZZZZZZZZZZZZZZ.n1", "attempt": 1, "status": "failed"}],
    })

    assert control.status == 400, control
    assert odd.status == 200, odd
    assert [item["status"] for item in odd.body["heartbeats"] + odd.body["completions"]] == [404, 404, 404, 404]


def test_a_quiet_heartbeat_with_more_than_half_its_lease_left_writes_nothing(fleet: Fleet) -> None:
    # GIVEN a run just claimed (its whole lease left)
    fleet.started(shell(["n1"]))
    (run,) = fleet.claim("n1")
    task_id, node = run["task_id"], "n1"
    before = runs.find(task_id, node)
    assert before is not None
    beat = {"run_id": run["run_id"], "attempt": run["attempt"], "progress": 0, "step": run["step"]}

    # WHEN the agent reports a heartbeat with nothing new
    quiet = report(fleet, "n1", {"heartbeats": [beat]})

    # THEN it is answered with the stored lease, and the run was not written
    assert quiet.body["heartbeats"][0]["lease_expires_at"] == run["lease_expires_at"]
    after = runs.find(task_id, node)
    assert after is not None
    assert (after.updated_at, after.lease_expires_at) == (before.updated_at, before.lease_expires_at)

    # AND a heartbeat with progress is written, and extends the lease
    moved = report(fleet, "n1", {"heartbeats": [{**beat, "progress": 30}]})
    assert moved.body["heartbeats"][0]["status"] == 200
    written = runs.find(task_id, node)
    assert written is not None
    assert written.progress == 30


def test_a_quiet_heartbeat_past_half_its_lease_extends_it(fleet: Fleet, monkeypatch: Any) -> None:
    # GIVEN a run claimed, and the service's clock past half of its lease
    fleet.started(shell(["n1"]))
    (run,) = fleet.claim("n1")
    stored = runs.find(run["task_id"], "n1")
    assert stored is not None
    assert stored.lease_expires_at is not None
    service_clock = Clock(monkeypatch)
    service_clock.advance(config.lease_seconds() * 0.6)

    # WHEN the agent reports a heartbeat with nothing new
    answer = report(fleet, "n1", {"heartbeats": [{"run_id": run["run_id"], "attempt": run["attempt"]}]})

    # THEN the lease was extended
    assert answer.body["heartbeats"][0]["status"] == 200
    extended = runs.find(run["task_id"], "n1")
    assert extended is not None
    assert extended.lease_expires_at is not None
    assert extended.lease_expires_at > stored.lease_expires_at
