"""Drive the real app in-process: HTTP through chalice.test.Client, the stream and the
dispatch queue through the Lambda-shaped pumps, agents as plain callers of the agent routes."""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import boto3
from chalice.test import Client

from chalicelib import auth
from chalicelib.resources import DISPATCH_QUEUE, WORK_QUEUE
from fleetrun.local.fidelity import current as current_fidelity
from fleetrun.local.fidelity.streams import ShardedStreamPump
from fleetrun.local.provision import Provisioned
from fleetrun.local.pumps import SqsPump, StreamPump

SECRET = "test-secret"

#: the environment of the app under moto in-process (tests and bench/requests.py)
MOTO_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SECURITY_TOKEN": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    # moto's in-process DynamoDB Streams answers 404 without this (see PITFALLS.md)
    "AWS_ACCOUNT_ID_ENDPOINT_MODE": "disabled",
    "POWERTOOLS_TRACE_DISABLED": "true",
    "POWERTOOLS_METRICS_NAMESPACE": "Fleetrun",
    "POWERTOOLS_SERVICE_NAME": "fleetrun",
    "POWERTOOLS_DEV": "false",
    "FLEETRUN_JWT_SECRET": "test-secret",
}


def reset_caches() -> None:
    """Forget what the app's modules remember between requests (clients, settings, a task's run
    partitions, listed usage owners…): a fresh moto or environment must not meet an old one's."""
    from chalicelib import aws, config, ratelimit
    from chalicelib.services import agent, type_registry
    from chalicelib.store import counters, models, run_partitions

    config.reset()
    aws.reset()
    agent.reset()
    ratelimit.reset()
    models.reset_connections()
    run_partitions.forget_all()
    counters.forget_listed()
    type_registry.forget()


@dataclass
class Answer:
    status: int
    body: Any
    headers: dict[str, str]

    def __repr__(self) -> str:
        return f"Answer({self.status}, {self.body!r})"


def token(user: str = "alice", roles: tuple[str, ...] = ("operator",)) -> str:
    return auth.mint_token(user, list(roles), SECRET)


def nonzero(totals: dict[str, Decimal]) -> dict[str, Decimal]:
    return {name: value for name, value in totals.items() if value}


def stats_scopes() -> list[str]:
    """Every statistics scope that exists (a scan of the whole table: tests only)."""
    from chalicelib import aws, config

    pages = aws.client("dynamodb").get_paginator("scan").paginate(
        TableName=config.table_name(), FilterExpression="begins_with(pk, :p)",
        ExpressionAttributeValues={":p": {"S": "STATS#"}}, ProjectionExpression="pk",
    )
    return sorted({item["pk"]["S"].removeprefix("STATS#") for page in pages for item in page["Items"]})


def assert_statistics_equal_recount() -> None:
    """Every statistics scope holds exactly what a recount of the task items gives."""
    from chalicelib.services import statistics
    from chalicelib.store import counters

    expected = statistics.recount()
    scopes = set(expected) | set(stats_scopes())
    assert "all" in scopes
    for scope in sorted(scopes):
        assert nonzero(counters.read_stats(scope)) == nonzero(dict(expected.get(scope, {}))), scope


class _StageEnvironment:
    """The stage's environment variables during the requests of chalice's test client, set in
    place. chalice swaps `os.environ` for a patched copy around each request and puts back the
    one it found, so two requests from two threads can leave the copy installed for good: from
    then on what a test sets goes to the copy, and whatever holds the real `os.environ` (chalice's
    WebSocket API looks for the region there) misses it. Here the variables are set while at least
    one request is under way, and what they replaced is put back after the last one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests = 0
        self._replaced: dict[str, str | None] = {}

    @contextlib.contextmanager
    def __call__(self, variables: Mapping[str, str]) -> Iterator[None]:
        with self._lock:
            if self._requests == 0:
                self._replaced = {name: os.environ.get(name) for name in variables}
                os.environ.update(variables)
            self._requests += 1
        try:
            yield
        finally:
            with self._lock:
                self._requests -= 1
                if self._requests == 0:
                    for name, value in self._replaced.items():
                        if value is None:
                            os.environ.pop(name, None)
                        else:
                            os.environ[name] = value


class Fleet:
    """One in-process fleetrun: call `settle()` to let the stream and the queue catch up."""

    def __init__(self, provisioned: Provisioned) -> None:
        import app as app_module

        self.app_module = app_module
        self.client = Client(app_module.app)
        self.client.http._patched_env_vars = _StageEnvironment()  # type: ignore[method-assign, assignment]
        fidelity = current_fidelity()

        def stream_reader(handler: Any, name: str) -> StreamPump:
            reader = (boto3.client("dynamodbstreams"), provisioned.stream_arn, handler)
            if fidelity.strict:
                return ShardedStreamPump(*reader, fidelity=fidelity, function_name=name)
            return StreamPump(*reader, function_name=name)

        #: the stream's two consumers: the counting one, and pushes and notifications
        self.stream = stream_reader(app_module.stream_aggregator, "stream_aggregator")
        self.notifier = stream_reader(app_module.stream_notifier, "stream_notifier")
        self.queue = SqsPump(
            boto3.client("sqs"), provisioned.queue_urls[DISPATCH_QUEUE.name], app_module.dispatch_worker,
            batch_size=DISPATCH_QUEUE.batch_size,
        )
        #: service-executed runs (images.sync)
        self.work = SqsPump(
            boto3.client("sqs"), provisioned.queue_urls[WORK_QUEUE.name], app_module.work_worker,
            batch_size=WORK_QUEUE.batch_size,
        )
        self.provisioned = provisioned
        self.node_tokens: dict[str, str] = {}
        self.admin = token("root", ("admin",))

    # --- HTTP ---
    def call(self, method: str, path: str, body: Any = None, *, bearer: str | None = None,
             headers: dict[str, str] | None = None, raw: str | None = None) -> Answer:
        sent = {"Content-Type": "application/json", **(headers or {})}
        if bearer is not None:
            sent["Authorization"] = f"Bearer {bearer}"
        payload = raw if raw is not None else (json.dumps(body) if body is not None else "")
        response = self.client.http.request(method, path, headers=sent, body=payload.encode())
        text = response.body.decode() if response.body else ""
        return Answer(response.status_code, json.loads(text) if text else None, dict(response.headers))

    def user(self, method: str, path: str, body: Any = None, *, who: str = "alice",
             roles: tuple[str, ...] = ("operator",), headers: dict[str, str] | None = None) -> Answer:
        return self.call(method, path, body, bearer=token(who, roles), headers=headers)

    def submit(self, body: dict[str, Any], *, who: str = "alice", key: str | None = None) -> Answer:
        headers = {"Idempotency-Key": key} if key else None
        return self.user("POST", "/v1/tasks", body, who=who, headers=headers)

    def started(self, body: dict[str, Any], *, who: str = "alice") -> str:
        """Submit `body` (its target nodes and runner registered first, where not yet) and let
        the stream and the queue settle; returns the id of the task, which is running."""
        nodes = [*body.get("target_nodes", []), *([body["runner_node"]] if body.get("runner_node") else [])]
        self.register(*[node for node in dict.fromkeys(nodes) if node not in self.node_tokens])
        answer = self.submit(body, who=who)
        assert answer.status == 202, answer
        self.settle()
        task_id = str(answer.body["task_id"])
        assert self.task(task_id, who=who)["status"] == "running"
        return task_id

    def task(self, task_id: str, who: str = "alice") -> dict[str, Any]:
        answer = self.user("GET", f"/v1/tasks/{task_id}", who=who)
        assert answer.status == 200, answer
        return answer.body  # type: ignore[no-any-return]

    def runs(self, task_id: str, who: str = "alice") -> dict[str, dict[str, Any]]:
        answer = self.user("GET", f"/v1/tasks/{task_id}/nodes?limit=200", who=who)
        assert answer.status == 200, answer
        return {run["node"]: run for run in answer.body["items"]}

    def events(self, task_id: str, who: str = "alice") -> list[dict[str, Any]]:
        answer = self.user("GET", f"/v1/tasks/{task_id}/events?limit=200", who=who)
        assert answer.status == 200, answer
        return answer.body["items"]  # type: ignore[no-any-return]

    def stats(self, who: str = "root", roles: tuple[str, ...] = ("admin",), query: str = "") -> dict[str, Any]:
        answer = self.user("GET", f"/v1/statistics{query}", who=who, roles=roles)
        assert answer.status == 200, answer
        return answer.body  # type: ignore[no-any-return]

    # --- agents ---
    def register(self, *nodes: str) -> None:
        """Register each node, asking again (as a client should) when the service answers 503:
        a registration whose writes lost every retry to conflicts under a harsh fidelity."""
        for node in nodes:
            for _ in range(3):
                answer = self.call("POST", "/v1/nodes", {"node_id": node}, bearer=self.admin)
                if answer.status != 503:
                    break
            assert answer.status == 201, answer
            self.node_tokens[node] = answer.body["token"]

    def agent(self, node: str, route: str, body: dict[str, Any]) -> Answer:
        return self.call("POST", route, body, bearer=self.node_tokens[node])

    def claim(self, node: str, max_runs: int = 1) -> list[dict[str, Any]]:
        answer = self.agent(node, f"/v1/agents/{node}/claim", {"max": max_runs})
        assert answer.status == 200, answer
        return answer.body["runs"]  # type: ignore[no-any-return]

    def finish(self, node: str, run: dict[str, Any], status: str = "succeeded", error: str | None = None) -> Answer:
        return self.agent(node, f"/v1/runs/{run['run_id']}/complete",
                          {"attempt": run["attempt"], "status": status, "error_message": error})

    def run_agents(self, nodes: list[str], fail: frozenset[str] = frozenset()) -> int:
        """Each node claims and finishes what it can until nothing is left; returns runs done."""
        done = 0
        while True:
            progressed = 0
            for node in nodes:
                for run in self.claim(node, 10):
                    status = "failed" if run["node"] in fail else "succeeded"
                    answer = self.finish(node, run, status, "step exited 1" if status == "failed" else None)
                    assert answer.status == 200, answer
                    progressed += 1
            self.settle()
            done += progressed
            if not progressed:
                return done

    # --- events ---
    def settle(self, rounds: int = 50) -> None:
        for _ in range(rounds):
            moved = self.stream.drain() + self.notifier.drain() + self.queue.drain() + self.work.drain()
            if not moved:
                return
        raise AssertionError("stream and queue did not settle")
