"""schemathesis hooks of tests/e2e/test_api_fuzz.py: what a schema cannot say about valid input.

A positive test case is one the OpenAPI document calls valid, so the `positive_data_acceptance`
check expects the service to take it. Some validity is beyond what a JSON Schema can state, and
a random value the schema allows is rightly refused with 400 there. For those values only, a
positive case gets a value the service accepts; negative cases are left as generated (they must
still be a 400, never a 500), and nothing else is changed:

- a `cursor` is valid only when the service signed it for that route, filters and user (API.md,
  Errors): positive cases leave it out;
- `max_errors` as a count may not exceed the number of `target_nodes` (a relation between two
  fields);
- a notification target must resolve to an address the SSRF rules allow, which depends on DNS
  and on the deployment (API.md, Notification subscriptions): positive cases name the fuzz
  receiver, or an address for e-mail;
- a Harbor URL must be on the admin's allow-list (`FLEETRUN_HARBOR_URLS`);
- a schedule expression must be a rate or cron expression EventBridge Scheduler accepts, whose
  field rules no pattern states exactly;
- no string holds NUL, which free text (parameter values) may otherwise hold: "no NUL in any
  string" is not a schema (the service refuses it at parse, API.md, Errors);
- a dispatch request names at most 100 nodes: it creates their runs inside the request, and
  thousands of them take longer on moto than API Gateway lets a request take (chunked dispatch
  is issue 17; this is the one limit of the service itself named here);
- a `target_selector` must match a registered node outside maintenance: positive cases select
  the fuzz pool's node by its label (and, beside `target_nodes`, are left to those: a two-phase type
  takes one node);
- a type the service runs itself (`images.sync`) takes no `target_nodes`, `target_selector` or
  `runner_node` (a relation between the type and those fields): positive cases leave them out;
- the node id `service` is reserved (the runner of every service-executed run; a stateful step
  takes it from a run it listed): positive cases register, target and delegate to another id;
- a task's `type` must name a type the registry holds (built-in, or defined at run time): a
  positive case of another name gets the fuzz type the test defines, which takes any object;
- a created task has at most 100 target nodes: the local runtime is one machine, and each case of
  thousands (its runner check, then the runs its dispatch creates) slowed the service so much that
  the fuzzer no longer reached every operation in its time (10,000-node tasks are tested elsewhere);
- a task type's definition relates its fields beyond what a schema states: the parameter schema
  must be valid JSON Schema whose `$ref`s resolve locally, every secret path must be one the
  schema declares, `apply_steps` go with `requires_confirmation`, at most 50 steps in all, the
  name may not be a built-in's, and a `PUT`'s name is its path's: positive cases get a fixed
  valid schema, its one declared secret, consistent steps, and no name in a `PUT`;
- a usage report's `month` must have started (a bound that moves with the clock);
- a GPU trend's `range` is at most 31 days (a bound on a duration string no pattern states
  readably), and `range / step` at most 11,000 points (a relation between two parameters).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

import schemathesis
from schemathesis.generation import GenerationMode

from chalicelib.domain.task_types import REGISTRY, SERVICE_NODE

#: where positive cases point notification targets and Harbor syncs (the test sets them)
RECEIVER_URL = os.environ.get("FUZZ_RECEIVER_URL", "http://127.0.0.1:9/hook")
HARBOR_URL = os.environ.get("FUZZ_HARBOR_URL", "http://127.0.0.1:9")
#: the task type the test defines before fuzzing (its schema takes any object)
FUZZ_TYPE = "fuzz.any"
BUILTIN_TYPES = frozenset(REGISTRY)
_STEPS_IN_ALL = 50
_DISPATCHED_NODES = 100
#: target nodes of a created task (see the module text)
_CREATED_NODES = 100
#: the labels of the node positive cases select (tests/e2e/test_api_fuzz.py registers it; no path
#: parameter names it, so no fuzzed PATCH, reclaim or DELETE takes it out of the selection)
FUZZ_NODE_LABELS = {"fuzz": "pool"}
_GPU_TREND_POINTS = 11_000
_GPU_TREND_RANGE_SECONDS = 31 * 86_400
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def _not_reserved(nodes: list[Any]) -> list[Any]:
    """`nodes` with the reserved id replaced by another (still unique)."""
    return list(dict.fromkeys(f"{SERVICE_NODE}-node" if node == SERVICE_NODE else node for node in nodes))


def _task(body: Any) -> None:
    if not isinstance(body, dict):
        return
    if isinstance(body.get("target_nodes"), list):
        body["target_nodes"] = _not_reserved(body["target_nodes"][:_CREATED_NODES])
    if body.get("runner_node") == SERVICE_NODE:
        body["runner_node"] = None
    if isinstance(body.get("type"), str) and body["type"] not in BUILTIN_TYPES:
        body["type"] = FUZZ_TYPE
        if not body.get("target_nodes") and not isinstance(body.get("target_selector"), dict):
            body["target_selector"] = {"labels": dict(FUZZ_NODE_LABELS)}
    task_type = REGISTRY.get(body["type"]) if isinstance(body.get("type"), str) else None
    if task_type is not None and not task_type.agent_executed:
        for field in ("target_nodes", "target_selector", "runner_node"):
            body.pop(field, None)
    if isinstance(body.get("target_selector"), dict):
        if body.get("target_nodes"):
            del body["target_selector"]
        else:
            body["target_selector"] = {"labels": dict(FUZZ_NODE_LABELS)}
    # a type the service runs itself has one target, the service
    targets, max_errors = body.get("target_nodes"), body.get("max_errors")
    count = len(targets) if isinstance(targets, list) else 1
    if isinstance(max_errors, (int, float)) and max_errors > count:
        body["max_errors"] = count
    parameters = body.get("parameters")
    if body.get("type") == "images.sync" and isinstance(parameters, dict) and "harbor_url" in parameters:
        parameters["harbor_url"] = HARBOR_URL


def _schedule(body: Any) -> None:
    if isinstance(body, dict):
        if "expression" in body:
            body["expression"] = "rate(1 hour)"
        _task(body.get("task"))


def _subscription(body: Any) -> None:
    if isinstance(body, dict) and "target" in body:
        body["target"] = "ops@example.com" if body.get("channel") == "email" else RECEIVER_URL


def _dispatch(body: Any) -> None:
    if isinstance(body, dict) and isinstance(body.get("target_nodes"), list):
        body["target_nodes"] = _not_reserved(body["target_nodes"][:_DISPATCHED_NODES])


def _node(body: Any) -> None:
    if isinstance(body, dict) and "node_id" in body:
        [body["node_id"]] = _not_reserved([body["node_id"]])


def _task_type(body: Any) -> None:
    if not isinstance(body, dict):
        return
    if body.get("name") in BUILTIN_TYPES:
        body["name"] = f"x{body['name']}"
    if "parameters_schema" in body:
        body["parameters_schema"] = {"type": "object", "properties": {"token": {"type": "string"}}}
    if body.get("secret_parameters"):
        body["secret_parameters"] = ["token"]
    steps = body.get("steps") if isinstance(body.get("steps"), list) else []
    if body.get("requires_confirmation"):
        body["apply_steps"] = [s for s in body.get("apply_steps") or ["apply"] if s not in steps] or ["apply-1"]
        body["steps"] = steps[: _STEPS_IN_ALL - len(body["apply_steps"])]
    elif "apply_steps" in body:
        body["apply_steps"] = []


def _new_task_type_version(body: Any) -> None:
    _task_type(body)
    if isinstance(body, dict):
        body.pop("name", None)


def _image_sync(body: Any) -> None:
    if isinstance(body, dict) and "harbor_url" in body:
        body["harbor_url"] = HARBOR_URL


_BODIES = {
    ("POST", "/v1/tasks"): _task,
    ("POST", "/v1/nodes"): _node,
    ("POST", "/v1/schedules"): _schedule,
    ("POST", "/v1/subscriptions"): _subscription,
    ("POST", "/v1/images/sync"): _image_sync,
    ("POST", "/v1/tasks/{task_id}/dispatch"): _dispatch,
    ("POST", "/v1/task-types"): _task_type,
    ("PUT", "/v1/task-types/{type_name}"): _new_task_type_version,
}


def _without_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, list):
        return [_without_nul(item) for item in value]
    if isinstance(value, dict):
        return {_without_nul(key): _without_nul(item) for key, item in value.items()}
    return value


def _this_month() -> str:
    return datetime.now(UTC).strftime("%Y-%m")


def _seconds(duration: Any) -> float | None:
    text = str(duration)
    if len(text) < 2 or text[-1] not in _UNIT_SECONDS or not text[:-1].isdigit():
        return None
    return int(text[:-1]) * _UNIT_SECONDS[text[-1]]


def _gpu_trend(query: dict[str, Any]) -> None:
    span = _seconds(query.get("range", "6h"))
    if span is not None and span > _GPU_TREND_RANGE_SECONDS:
        query["range"], span = "31d", _GPU_TREND_RANGE_SECONDS
    try:
        step = float(query.get("step", 300))
    except (TypeError, ValueError):
        return
    if span is not None and step > 0 and span / step > _GPU_TREND_POINTS:
        query["step"] = int(span // _GPU_TREND_POINTS) + 1


@schemathesis.hook
def map_case(context: schemathesis.HookContext, case: schemathesis.Case) -> schemathesis.Case:
    if case.meta is None or case.meta.generation.mode != GenerationMode.POSITIVE:
        return case
    operation = (case.operation.method.upper(), case.operation.path)
    if case.query:
        query = {name: value for name, value in case.query.items() if name != "cursor"}
        if operation == ("GET", "/v1/monitoring/gpu-trend"):
            _gpu_trend(query)
        if operation == ("GET", "/v1/reports/usage") and str(query.get("month", "")) > _this_month():
            query["month"] = _this_month()
        case.query = query
    if isinstance(case.body, (dict, list, str)):
        case.body = _without_nul(case.body)
    repair = _BODIES.get(operation)
    if repair is not None and case.body is not None:
        repair(case.body)
    return case
