"""Live output (API.md "Agents and nodes", "Reading output") through the app's handlers on moto:
the append route's ordering rules, storage inline or in S3, paging, secrets, WebSocket pushes."""

from __future__ import annotations

import time
from typing import Any

import boto3
import pytest

from chalicelib import config
from chalicelib.services.realtime.output_push import output_topic
from chalicelib.store import connections, output_chunks
from fleetrun.agent.journal import Journal
from fleetrun.agent.live_output import LiveOutput
from fleetrun.agent.protocol import ClaimedRun
from tests.harness import Answer, Fleet

SHELL = {"type": "shell", "target_nodes": ["n1"], "parameters": {"command": ["true"]}}
PASSWORD = "hunter2-very-secret"
SLURM = {"type": "slurm.scale_up", "target_nodes": ["n1"],
         "parameters": {"ssh_user": "root", "salt_master": "salt-1", "partition": "gpu", "password": PASSWORD}}


def _claimed(fleet: Fleet, body: dict[str, Any] = SHELL) -> tuple[str, dict[str, Any]]:
    task_id = fleet.started(body)
    (run,) = fleet.claim("n1")
    return task_id, run


def _send(fleet: Fleet, run: dict[str, Any], offset: int, data: str, *, node: str = "n1",
          attempt: int | None = None) -> Answer:
    body = {"attempt": run["attempt"] if attempt is None else attempt, "offset": offset, "data": data}
    return fleet.agent(node, f"/v1/runs/{run['run_id']}/output", body)


def _read(fleet: Fleet, task_id: str, query: str = "", who: str = "alice") -> Answer:
    return fleet.user("GET", f"/v1/tasks/{task_id}/nodes/n1/output{query}", who=who)


def _read_all(fleet: Fleet, task_id: str) -> tuple[str, dict[str, Any]]:
    parts, offset = [], 0
    while True:
        answer = _read(fleet, task_id, f"?offset={offset}")
        assert answer.status == 200, answer
        parts.append(answer.body["data"])
        if answer.body["next_offset"] == offset:
            return "".join(parts), answer.body
        offset = answer.body["next_offset"]


class TestAppending:
    def test_chunks_in_order_read_back_whole(self, fleet):
        # GIVEN a claimed run
        task_id, run = _claimed(fleet)
        # WHEN the agent sends three chunks in order (one with multi-byte characters)
        offset = 0
        for data in ("line 1\n", "zwei ü drei ✓\n", "end\n"):
            answer = _send(fleet, run, offset, data)
            assert answer.status == 202, answer
            offset = answer.body["next_offset"]
        # THEN the output reads back whole; not complete while the run runs
        body = _read(fleet, task_id).body
        assert body == {"attempt": 1, "data": "line 1\nzwei ü drei ✓\nend\n", "next_offset": offset,
                        "complete": False}
        assert offset == len(body["data"].encode())

    def test_a_repeated_chunk_is_a_no_op_and_a_different_one_at_a_taken_offset_is_a_conflict(self, fleet):
        task_id, run = _claimed(fleet)
        assert _send(fleet, run, 0, "first\n").status == 202
        # WHEN the same chunk comes again (the agent missed the answer)
        again = _send(fleet, run, 0, "first\n")
        # THEN it is accepted once
        assert again.status == 202
        assert again.body["next_offset"] == 6
        assert _read(fleet, task_id).body["data"] == "first\n"
        # AND other bytes at an acknowledged offset are refused, saying where output continues
        other = _send(fleet, run, 0, "other\n")
        assert other.status == 409
        assert other.body["error"] | {"message": ""} == {"code": "conflict", "message": "", "reason": "output_gap",
                                                          "expected_offset": 6}

    def test_a_gap_is_a_conflict_carrying_the_expected_offset(self, fleet):
        _, run = _claimed(fleet)
        assert _send(fleet, run, 0, "abc").status == 202
        answer = _send(fleet, run, 10, "xyz")
        assert answer.status == 409
        assert answer.body["error"]["expected_offset"] == 3

    def test_a_stale_attempt_and_a_finished_run_are_refused_like_a_lost_lease(self, fleet):
        _, run = _claimed(fleet)
        stale = _send(fleet, run, 0, "x", attempt=run["attempt"] + 1)
        assert stale.status == 409
        assert stale.body["error"]["reason"] == "lease_lost"
        assert fleet.finish("n1", run).status == 200
        late = _send(fleet, run, 0, "x")
        assert late.status == 409
        assert late.body["error"]["reason"] == "lease_lost"

    def test_another_nodes_token_cannot_send_output_for_the_run(self, fleet):
        _, run = _claimed(fleet)
        fleet.register("n2")
        answer = _send(fleet, run, 0, "x", node="n2")
        assert answer.status == 404
        assert answer.body["error"]["code"] == "not_found"

    @pytest.mark.parametrize(("body", "path"), [
        ({"attempt": 1, "offset": -1, "data": "x"}, "$.offset"),
        ({"attempt": 1, "offset": 0, "data": ""}, "$.data"),
        ({"attempt": 1, "offset": 0}, "$.data"),
        ({"attempt": 1, "offset": 0, "data": "x", "extra": 1}, "$.extra"),
        ({"attempt": 1, "offset": 0, "data": "é" * 40_000}, "$.data"),  # 65,536 characters or fewer, 80,000 bytes
    ])
    def test_bad_chunks_are_validation_errors_with_paths(self, fleet, body, path):
        _, run = _claimed(fleet)
        answer = fleet.agent("n1", f"/v1/runs/{run['run_id']}/output", body)
        assert answer.status == 400, answer
        assert answer.body["error"]["code"] == "validation_error"
        assert path in [d["path"] for d in answer.body["error"]["details"]]

    def test_output_past_the_cap_is_too_large(self, fleet, monkeypatch):
        monkeypatch.setenv("FLEETRUN_OUTPUT_MAX_BYTES", "4096")
        _, run = _claimed(fleet)
        assert _send(fleet, run, 0, "a" * 4000).status == 202
        answer = _send(fleet, run, 4000, "b" * 2000)
        assert answer.status == 413
        assert answer.body["error"]["code"] == "payload_too_large"


class TestStorage:
    def test_small_chunks_stay_inline_and_large_ones_go_to_s3(self, fleet):
        task_id, run = _claimed(fleet)
        small, large = "s" * output_chunks.INLINE_BYTES, "L" * (output_chunks.INLINE_BYTES + 1)
        assert _send(fleet, run, 0, small).status == 202
        assert _send(fleet, run, len(small), large).status == 202
        first = output_chunks.find(task_id, "n1", 1, 0)
        second = output_chunks.find(task_id, "n1", 1, len(small))
        assert first is not None
        assert (first.data, first.s3_key) == (small, None)
        assert second is not None
        assert second.data is None
        assert second.s3_key == f"outputs/live/{task_id}/n1/1/{len(small):012d}"
        body = boto3.client("s3").get_object(Bucket=config.outputs_bucket(), Key=second.s3_key)["Body"].read()
        assert body.decode() == large
        assert _read(fleet, task_id).body["data"] == small + large

    def test_chunks_expire_with_the_retention(self, fleet, monkeypatch):
        monkeypatch.setenv("FLEETRUN_RETENTION_DAYS", "7")
        task_id, run = _claimed(fleet)
        assert _send(fleet, run, 0, "x").status == 202
        item = boto3.client("dynamodb").get_item(
            TableName=config.table_name(),
            Key={"pk": {"S": output_chunks.output_pk(task_id, "n1")}, "sk": {"S": output_chunks.chunk_sk(1, 0)}},
        )["Item"]
        assert 7 * 86400 < int(item["expires_at"]["N"]) - time.time() <= 8 * 86400

    def test_paging_many_chunks_returns_the_exact_bytes(self, fleet):
        # GIVEN 3 MB of output in 60 KiB chunks, numbered lines with multi-byte characters
        task_id, run = _claimed(fleet)
        text = "".join(f"{i:06d} ✓ {'x' * 40}\n" for i in range(60_000))
        data = text.encode()
        offset = 0
        while offset < len(data):
            end = offset + 60 * 1024
            while end < len(data) and (data[end] & 0xC0) == 0x80:
                end -= 1
            assert _send(fleet, run, offset, data[offset:end].decode()).status == 202
            offset = end
        # WHEN it is read page by page, THEN every page is at most ~1 MiB and together they are exact
        pages, offset, whole = 0, 0, []
        while True:
            body = _read(fleet, task_id, f"?offset={offset}").body
            assert len(body["data"].encode()) <= 1024 * 1024 + 64 * 1024
            if body["next_offset"] == offset:
                break
            whole.append(body["data"])
            pages, offset = pages + 1, body["next_offset"]
        assert "".join(whole) == text
        assert pages >= 3
        # AND a read from inside a chunk starts exactly there
        assert _read(fleet, task_id, "?offset=7").body["data"].startswith(text.encode()[7:52].decode())

    def test_a_10000_line_output_costs_a_bounded_number_of_writes(self, fleet):
        # GIVEN the agent's live output of a claimed run, on a fake clock
        task_id, run = _claimed(fleet)
        now = [0.0]
        api = _AppApi(fleet)
        live = LiveOutput(api, ClaimedRun.from_wire(run), Journal(_Sink()), "t", clock=lambda: now[0],  # type: ignore[arg-type]
                          interval=0.5)
        # WHEN a step prints 10,000 numbered lines over 5 s (ticks every 0.2 s, as the agent polls)
        for i in range(10_000):
            live.append(f"{i}\n".encode())
            now[0] = i * 0.0005
            if i % 400 == 0:
                live.tick()
        live.finish()
        # THEN the output is whole and took about ten writes
        text, _ = _read_all(fleet, task_id)
        assert text == "".join(f"{i}\n" for i in range(10_000))
        assert api.calls <= 12, api.calls


class TestReading:
    def test_reading_is_the_tasks_visibility_and_unknown_nodes_or_attempts_are_not_found(self, fleet):
        task_id, _ = _claimed(fleet)
        assert _read(fleet, task_id, who="bob").status == 404
        assert fleet.user("GET", f"/v1/tasks/{task_id}/nodes/zz/output").status == 404
        assert _read(fleet, task_id, "?attempt=2").status == 404
        assert fleet.user("GET", f"/v1/tasks/{task_id}/nodes/n1/output", who="root", roles=("admin",)).status == 200

    @pytest.mark.parametrize(("query", "path"), [("?attempt=0", "$query.attempt"), ("?offset=-1", "$query.offset"),
                                                 ("?offset=x", "$query.offset"), ("?attempt=1.5", "$query.attempt")])
    def test_bad_positions_are_validation_errors(self, fleet, query, path):
        task_id, _ = _claimed(fleet)
        answer = _read(fleet, task_id, query)
        assert answer.status == 400
        assert [d["path"] for d in answer.body["error"]["details"]] == [path]

    def test_an_offset_inside_a_character_is_a_validation_error(self, fleet):
        task_id, run = _claimed(fleet)
        assert _send(fleet, run, 0, "✓✓").status == 202
        assert _read(fleet, task_id, "?offset=1").status == 400
        assert _read(fleet, task_id, "?offset=3").body["data"] == "✓"

    def test_the_output_is_complete_once_the_attempt_is_over(self, fleet):
        task_id, run = _claimed(fleet)
        assert _send(fleet, run, 0, "done\n").status == 202
        assert fleet.finish("n1", run).status == 200
        assert _read(fleet, task_id).body == {"attempt": 1, "data": "done\n", "next_offset": 5, "complete": True}


class TestSecrets:
    def test_the_claim_lists_the_secret_values_and_stored_output_never_holds_them(self, fleet):
        task_id, run = _claimed(fleet, SLURM)
        assert run["secret_values"] == [PASSWORD]
        # an agent that did not scrub: the service does
        assert _send(fleet, run, 0, f"sshpass -p {PASSWORD} ssh\n").status == 202
        assert _read(fleet, task_id).body["data"] == "sshpass -p *** ssh\n"


class TestPush:
    def test_an_output_of_subscriber_receives_chunks_and_a_plain_subscriber_does_not(self, fleet, ws):
        # GIVEN one connection subscribed to the node's output and one to the task only
        task_id, run = _claimed(fleet)
        follower = ws.open()
        answers = ws.send(follower, {"action": "subscribe", "task_id": task_id, "output_of": "n1"})
        assert answers[0] == {"type": "subscribed", "task_id": task_id, "output_of": "n1"}
        plain = ws.open(subscribe=task_id)
        # WHEN the agent sends two chunks
        assert _send(fleet, run, 0, "one\n").status == 202
        assert _send(fleet, run, 4, "two\n").status == 202
        fleet.settle()
        # THEN the follower has both with their offsets (the stream may deliver the chunks out of
        # order, or twice: clients place and dedupe them by offset); the plain subscriber none
        pushed = sorted({m["offset"]: m for m in ws.received(follower) if m["type"] == "output"}.values(),
                        key=lambda m: m["offset"])
        assert pushed == [
            {"type": "output", "task_id": task_id, "node": "n1", "attempt": 1, "offset": 0, "data": "one\n"},
            {"type": "output", "task_id": task_id, "node": "n1", "attempt": 1, "offset": 4, "data": "two\n"},
        ]
        assert [m for m in ws.received(plain) if m["type"] == "output"] == []
        # AND unsubscribing the output keeps the task subscription
        assert ws.send(follower, {"action": "unsubscribe", "task_id": task_id, "output_of": "n1"}) == [
            {"type": "unsubscribed", "task_id": task_id, "output_of": "n1"}]
        assert connections.subscribers(output_topic(task_id, "n1")) == []
        assert {s.connection_id for s in connections.subscribers(task_id)} == {follower, plain}

    def test_output_of_another_users_task_or_a_bad_node_is_refused(self, fleet, ws):
        task_id, _ = _claimed(fleet)
        bob = ws.open("bob")
        [answer] = ws.send(bob, {"action": "subscribe", "task_id": task_id, "output_of": "n1"})
        assert answer["error"]["code"] == "not_found"
        [bad] = ws.send(bob, {"action": "subscribe", "task_id": task_id, "output_of": "no spaces"})
        assert bad["error"]["code"] == "validation_error"
        assert bad["error"]["details"][0]["path"] == "$.output_of"

    def test_a_large_chunk_is_pushed_in_pieces_under_the_message_limit(self, fleet, ws):
        task_id, run = _claimed(fleet)
        follower = ws.open()
        ws.send(follower, {"action": "subscribe", "task_id": task_id, "output_of": "n1"})
        data = "\x01" * 30_000  # JSON escapes each as 6 bytes: 180 KB as one message
        assert _send(fleet, run, 0, data).status == 202
        fleet.settle()
        # a replayed stream batch pushes its pieces again: clients dedupe them by offset
        pushed = sorted({m["offset"]: m for m in ws.received(follower) if m["type"] == "output"}.values(),
                        key=lambda m: m["offset"])
        assert len(pushed) > 1
        assert "".join(m["data"] for m in pushed) == data
        assert [m["offset"] for m in pushed] == [sum(len(p["data"]) for p in pushed[:i]) for i in range(len(pushed))]


class _AppApi:
    """The agent's `send_output` over the in-process app, counting calls."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet, self.calls = fleet, 0

    def send_output(self, run: ClaimedRun, offset: int, data: str) -> int:
        self.calls += 1
        answer = self.fleet.agent("n1", f"/v1/runs/{run.run_id}/output",
                                  {"attempt": run.attempt, "offset": offset, "data": data})
        assert answer.status == 202, answer
        return int(answer.body["next_offset"])


class _Sink:
    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        return None
