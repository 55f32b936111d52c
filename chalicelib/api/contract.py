"""The operations of the HTTP API (API.md), one row each: route, auth, role, body and answers.

`openapi.build_openapi` publishes this table; schema names refer to `schemas.SCHEMAS`.
Roles: `read` = viewer and up, `write` = operator and up, `admin` = admin only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from chalicelib.api.representations import TIMESTAMP
from chalicelib.domain.selectors import MAX_LABELS
from chalicelib.domain.statuses import TASK_STATUSES
from chalicelib.domain.task_requests import IDEMPOTENCY_KEY, NODE_ID
from chalicelib.store.output_chunks import MAX_POSITION
from chalicelib.validation import RFC3339_AFTER_YEAR

#: `user_or_node`: a user JWT (with the role) or any node token (an agent checking its steps)
Auth = Literal["none", "user", "node", "user_or_node"]
Role = Literal["read", "write", "admin"]


@dataclass(frozen=True)
class QueryParam:
    name: str
    schema: dict[str, Any]
    description: str = ""
    required: bool = False


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    operation_id: str
    summary: str
    auth: Auth
    role: Role | None
    request: str | None
    #: status -> schema name
    responses: Mapping[int, str]
    query: tuple[QueryParam, ...] = ()
    #: request headers, described in REQUEST_HEADERS
    headers: tuple[str, ...] = ()
    #: status -> response headers, described in RESPONSE_HEADERS
    response_headers: Mapping[int, tuple[str, ...]] = field(default_factory=dict)
    tag: str = "tasks"


#: schemas of the `{name}` segments of paths
PATH_PARAMETERS: Final[dict[str, dict[str, Any]]] = {
    "task_id": {"type": "string", "minLength": 1, "maxLength": 64},
    "node_id": NODE_ID,
    "run_id": {"type": "string", "minLength": 1, "maxLength": 256},
    "schedule_id": {"type": "string", "minLength": 1, "maxLength": 64},
    "subscription_id": {"type": "string", "minLength": 1, "maxLength": 64},
    "type_name": {"type": "string", "minLength": 1, "maxLength": 128},
}
REQUEST_HEADERS: Final[dict[str, QueryParam]] = {
    "Idempotency-Key": QueryParam(
        "Idempotency-Key",
        IDEMPOTENCY_KEY,
        "Same key and body from the same user: 200 with the original task; different body: 422.",
    ),
}
RESPONSE_HEADERS: Final[dict[str, QueryParam]] = {
    "Location": QueryParam(
        "Location", {"type": "string"}, "/v1/tasks/{task_id} of the created task; a report's download URL (303)",
    ),
    "Idempotent-Replayed": QueryParam("Idempotent-Replayed", {"type": "string", "enum": ["true"]}, "a replay"),
    "Retry-After": QueryParam("Retry-After", {"type": "integer", "minimum": 1}, "seconds to wait"),
}

LIMIT: Final = QueryParam("limit", {"type": "integer", "minimum": 1, "maximum": 200, "default": 50}, "page size")
CURSOR: Final = QueryParam(
    "cursor", {"type": "string"},
    "next_cursor of the previous page: opaque and signed, valid only for the route, filters and user that "
    "produced it (any other cursor: 400 validation_error)",
)
#: a `created_after`/`created_before` filter: RFC 3339, years 1970-9999 (an offset that moves the
#: moment out of them, such as 1970-01-01T00:30:00+01:00, is a 400 too)
CREATED: Final = {
    **TIMESTAMP, "pattern": f"^(19[7-9][0-9]|[2-9][0-9]{{3}}){RFC3339_AFTER_YEAR}$",
    "description": "RFC 3339 (any offset), a moment of the years 1970-9999 in UTC",
}
PAGE: Final = (LIMIT, CURSOR)
#: `GET /v1/nodes?label=pool:cdn&label=region:eu`: read from the label index, never a scan
LABEL_FILTER: Final = QueryParam(
    "label",
    {"type": "array", "maxItems": MAX_LABELS, "items": {
        "type": "string",
        "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f:]{1,128}:[^\\u0000-\\u001f\\u007f-\\u009f]{0,256}$"}},
    "key:value (split on the first ':'), repeatable: only nodes carrying every pair; with several, a page may "
    "hold fewer than limit nodes and still have a next_cursor",
)

#: error statuses by kind of operation; every error body is the Error schema
_READ: Final = (401, 403)
_READ_ONE: Final = (401, 403, 404)
_ACTION: Final = (401, 403, 404, 409, 429)
_AGENT: Final = (400, 401, 403, 404, 409, 413)


def answers(ok: Mapping[int, str], *errors: int) -> dict[int, str]:
    return {**ok, **dict.fromkeys(sorted(errors), "Error")}


def public(path: str, operation_id: str, summary: str, schema: str) -> Operation:
    return Operation("GET", path, operation_id, summary, "none", None, None, {200: schema}, tag="meta")


def user(method: str, path: str, operation_id: str, summary: str, role: Role, **more: Any) -> Operation:
    return Operation(method, path, operation_id, summary, "user", role, **more)


def agent(path: str, operation_id: str, summary: str, request: str, ok: Mapping[int, str]) -> Operation:
    return Operation("POST", path, operation_id, summary, "node", None, request, answers(ok, *_AGENT), tag="agents")


def task_action(action: str, summary: str, request: str | None = None) -> Operation:
    errors = (*_ACTION, 400, 413) if request else _ACTION
    return user(
        "POST", f"/v1/tasks/{{task_id}}/{action}", f"{action}Task", summary, "write",
        request=request, responses=answers({202: "Task"}, *errors),
    )


OPERATIONS: Final[tuple[Operation, ...]] = (
    public("/v1/health", "getHealth", "Liveness and version", "Health"),
    public("/v1/openapi.json", "getOpenApi", "This OpenAPI document", "OpenApiDocument"),
    Operation(
        "GET", "/v1/task-types", "listTaskTypes", "The task type registry: built-ins, then defined types by name",
        "user_or_node", "read", None, answers({200: "TaskTypeList"}, 400, *_READ), query=PAGE, tag="task-types",
    ),
    Operation(
        "GET", "/v1/task-types/{type_name}", "getTaskType", "One task type, latest version (retired: 404)",
        "user_or_node", "read", None, answers({200: "TaskType"}, *_READ_ONE), tag="task-types",
    ),
    user(
        "POST", "/v1/task-types", "createTaskType",
        "Define a task type (version 1), or revive a retired one as its next version; a live name: 409", "admin",
        request="CreateTaskTypeRequest", responses=answers({201: "TaskType"}, 400, 401, 403, 409, 413, 429),
        tag="task-types",
    ),
    user(
        "PUT", "/v1/task-types/{type_name}", "updateTaskType",
        "Make the next version of a task type; tasks already created keep theirs", "admin",
        request="UpdateTaskTypeRequest", responses=answers({200: "TaskType"}, 400, 413, *_ACTION), tag="task-types",
    ),
    user(
        "DELETE", "/v1/task-types/{type_name}", "retireTaskType",
        "Retire a task type: new tasks of it are refused, existing ones run on", "admin",
        request=None, responses=answers({200: "TaskType"}, *_ACTION), tag="task-types",
    ),
    user(
        "POST", "/v1/tasks", "createTask", "Create a task", "write",
        request="CreateTaskRequest",
        responses=answers({202: "CreatedTask", 200: "CreatedTask"}, 400, 401, 403, 413, 422, 429),
        headers=("Idempotency-Key",), response_headers={202: ("Location",), 200: ("Idempotent-Replayed",)},
    ),
    user(
        "GET", "/v1/tasks", "listTasks", "Tasks the caller may see, newest first", "read",
        request=None, responses=answers({200: "TaskPage"}, 400, *_READ),
        query=(
            QueryParam("status", {"type": "string", "enum": list(TASK_STATUSES)}),
            QueryParam("type", {"type": "string"}),
            QueryParam("tag", {"type": "string"}),
            QueryParam("owner", {"type": "string"}, "admin only"),
            QueryParam("created_after", CREATED),
            QueryParam("created_before", CREATED),
            *PAGE,
        ),
    ),
    user(
        "GET", "/v1/tasks/{task_id}", "getTask", "One task", "read",
        request=None, responses=answers({200: "Task"}, *_READ_ONE),
    ),
    user(
        "GET", "/v1/tasks/{task_id}/nodes", "listNodeRuns", "The node runs of a task", "read",
        request=None, responses=answers({200: "NodeRunPage"}, 400, *_READ_ONE), query=PAGE,
    ),
    user(
        "GET", "/v1/tasks/{task_id}/events", "listTaskEvents", "Events of a task, oldest first", "read",
        request=None, responses=answers({200: "EventPage"}, 400, *_READ_ONE),
        query=(QueryParam("after", {"type": "string"}, "only events after this event_id"), *PAGE),
    ),
    user(
        "POST", "/v1/tasks/{task_id}/dispatch", "dispatchTask", "Make sure every listed node has a run", "write",
        request="DispatchRequest",
        responses=answers({200: "DispatchResponse", 202: "DispatchResponse"}, 400, 413, *_ACTION),
    ),
    task_action("cancel", "Cancel a pending, running or apply_pending task"),
    task_action("retry", "Run failed (or all) nodes again", request="RetryRequest"),
    task_action("confirm", "Apply the plan of an apply_pending task"),
    task_action("discard", "Discard the plan of an apply_pending task"),
    user(
        "GET", "/v1/statistics", "getStatistics", "Task statistics", "read",
        request=None, responses=answers({200: "Statistics"}, 400, *_READ),
        query=(QueryParam("type", {"type": "string"}), QueryParam("owner", {"type": "string"}, "admin only")),
    ),
    user(
        "GET", "/v1/statistics/timeseries", "getStatisticsTimeseries",
        "Tasks per hour by terminal status, success rate and average duration per hour", "read",
        request=None, responses=answers({200: "StatisticsSeries"}, 400, *_READ),
        query=(
            QueryParam("hours", {"type": "integer", "minimum": 1, "maximum": 168, "default": 24}, "how many hours"),
            QueryParam("type", {"type": "string"}),
            QueryParam("owner", {"type": "string"}, "admin only"),
        ),
    ),
    user(
        "POST", "/v1/nodes", "registerNode", "Register a node; answers its agent token once", "admin",
        request="RegisterNodeRequest", responses=answers({201: "NodeRegistered"}, 400, 401, 403, 409, 413, 429),
        tag="nodes",
    ),
    user(
        "GET", "/v1/nodes", "listNodes", "Registered nodes, in id order", "read",
        request=None, responses=answers({200: "NodePage"}, 400, *_READ), query=(LABEL_FILTER, *PAGE), tag="nodes",
    ),
    user(
        "GET", "/v1/nodes/{node_id}", "getNode", "One node", "read",
        request=None, responses=answers({200: "Node"}, *_READ_ONE), tag="nodes",
    ),
    user(
        "PATCH", "/v1/nodes/{node_id}", "updateNode", "Replace a node's labels and/or slots", "admin",
        request="UpdateNodeRequest", responses=answers({200: "Node"}, 400, 413, *_ACTION), tag="nodes",
    ),
    user(
        "POST", "/v1/nodes/{node_id}/token", "rotateNodeToken",
        "Issue the node a new agent token, shown once; the old one is refused (401) from now on", "admin",
        request=None, responses=answers({200: "NodeToken"}, *_ACTION), tag="nodes",
    ),
    user(
        "DELETE", "/v1/nodes/{node_id}", "deregisterNode",
        "Deregister a node: its token is refused at once, its waiting runs fail (`node deregistered`), "
        "its running runs are asked to cancel; the id may be registered again", "admin",
        request=None, responses=answers({200: "NodeDeregistered"}, *_ACTION), tag="nodes",
    ),
    # --- image catalog ---
    user(
        "GET", "/v1/images", "listImages", "The image catalog synced from Harbor", "read",
        request=None, responses=answers({200: "ImagePage"}, 400, *_READ), tag="images",
        query=(
            QueryParam("project", {"type": "string"}, "one project only"),
            QueryParam("include_removed", {"type": "string", "enum": ["true", "false"], "default": "false"},
                       "also tags gone from Harbor"),
            *PAGE,
        ),
    ),
    user(
        "POST", "/v1/images/sync", "syncImages", "Create an images.sync task against the configured Harbor", "admin",
        request="ImageSyncRequest", responses=answers({202: "Task"}, 400, 401, 403, 409, 413, 429),
        response_headers={202: ("Location",)}, tag="images",
    ),
    Operation(
        "POST", "/v1/hooks/harbor", "harborWebhook",
        "Harbor's webhook: a pushed or deleted artifact syncs its repository (Authorization: the shared secret)",
        "none", None, "HarborWebhookEvent", answers({202: "HarborHookAccepted"}, 400, 401, 409, 413),
        tag="images",
    ),
    # --- monitoring ---
    user(
        "GET", "/v1/monitoring/gpu-trend", "getGpuTrend", "GPU utilisation and memory per host, from Prometheus",
        "read", request=None, responses=answers({200: "GpuTrend"}, 400, 503, *_READ), tag="monitoring",
        query=(
            QueryParam("range", {"type": "string", "pattern": "^[1-9][0-9]{0,5}[smhdw]$", "default": "6h"},
                       "how far back, at most 31d"),
            QueryParam("step", {"type": "integer", "minimum": 1, "maximum": 86400, "default": 300},
                       "seconds between points; range/step + 1 <= 11000"),
            QueryParam("host", NODE_ID, "only this host (the Hostname label)"),
        ),
    ),
    user(
        "GET", "/v1/monitoring/snapshot", "getMonitoringSnapshot",
        "Node counts by status, running tasks, node runs in flight (at most 10 s old)", "read",
        request=None, responses=answers({200: "MonitoringSnapshot"}, *_READ), tag="monitoring",
    ),
    # --- node inventory: reclaim, allocations ---
    user(
        "POST", "/v1/nodes/{node_id}/reclaim", "reclaimNode",
        "Put the node in maintenance and create its machine.reclaim task", "admin",
        request="ReclaimNodeRequest", responses=answers({202: "Task"}, 400, 413, *_ACTION),
        response_headers={202: ("Location",)}, tag="nodes",
    ),
    user(
        "POST", "/v1/nodes/{node_id}/allocate", "allocateNode", "Allocate an idle node to a user", "admin",
        request="AllocateNodeRequest", responses=answers({200: "NodeAllocation"}, 400, 413, *_ACTION), tag="nodes",
    ),
    user(
        "POST", "/v1/nodes/{node_id}/release", "releaseNode", "End the node's allocation; the node is idle", "admin",
        request=None, responses=answers({200: "NodeAllocation"}, *_ACTION), tag="nodes",
    ),
    user(
        "GET", "/v1/nodes/{node_id}/allocations", "listNodeAllocations", "A node's allocations, newest first",
        "admin", request=None, responses=answers({200: "AllocationPage"}, 400, 429, *_READ_ONE), query=PAGE,
        tag="nodes",
    ),
    # --- usage reports ---
    user(
        "GET", "/v1/reports/usage", "getUsageReport",
        "The month's usage report file: 303 to a presigned download URL (also in the body)", "admin",
        request=None, responses=answers({303: "UsageReportLink"}, 400, 401, 403, 429),
        query=(
            QueryParam("month", {"type": "string", "pattern": "^(19[7-9][0-9]|[2-9][0-9]{3})-(0[1-9]|1[0-2])$"},
                       "YYYY-MM, a month of the years 1970-9999 that has started", required=True),
            QueryParam("format", {"type": "string", "enum": ["csv", "xlsx"], "default": "csv"}),
        ),
        response_headers={303: ("Location",)}, tag="reports",
    ),
    agent("/v1/agents/{node_id}/claim", "claimRuns", "Lease up to `max` pending runs", "ClaimRequest", {200: "Claim"}),
    agent(
        "/v1/agents/{node_id}/report", "reportRuns",
        "Several heartbeats and completions, and a claim, in one request: each item answered on its own "
        "(a stale attempt is that item's 409)", "AgentReportRequest", {200: "AgentReport"},
    ),
    agent(
        "/v1/runs/{run_id}/heartbeat", "heartbeatRun", "Extend the lease; 409 when lost", "HeartbeatRequest",
        {200: "HeartbeatResponse"},
    ),
    agent("/v1/runs/{run_id}/events", "recordRunEvents", "Record events", "RunEventsRequest", {202: "Accepted"}),
    agent("/v1/runs/{run_id}/complete", "completeRun", "Finish a run", "CompleteRequest", {200: "Accepted"}),
    agent(
        "/v1/runs/{run_id}/plan-lost", "reportPlanLost", "The runner lost the plan context", "PlanLostRequest",
        {202: "Accepted"},
    ),
    agent(
        "/v1/runs/{run_id}/output", "appendRunOutput",
        "Live output while a step runs, in order: a repeat of a stored chunk is a no-op, a gap is a 409 "
        "carrying `expected_offset`, past FLEETRUN_OUTPUT_MAX_BYTES a 413",
        "OutputChunkRequest", {202: "OutputAccepted"},
    ),
    user(
        "GET", "/v1/tasks/{task_id}/nodes/{node_id}/output", "getRunOutput",
        "One attempt's output of a node run, any size, paged by `offset` (`next_offset`)", "read",
        request=None, responses=answers({200: "RunOutput"}, 400, *_READ_ONE),
        query=(
            QueryParam("attempt", {"type": "integer", "minimum": 1, "maximum": MAX_POSITION},
                       "default: the run's current attempt"),
            QueryParam("offset", {"type": "integer", "minimum": 0, "maximum": MAX_POSITION, "default": 0},
                       "bytes (UTF-8) to skip"),
        ),
    ),
    # --- schedules ---
    user(
        "POST", "/v1/schedules", "createSchedule", "Create a schedule whose firings create tasks", "write",
        request="CreateScheduleRequest", responses=answers({201: "Schedule"}, 400, 401, 403, 413, 429),
        tag="schedules",
    ),
    user(
        "GET", "/v1/schedules", "listSchedules", "Schedules the caller may see, newest first", "read",
        request=None, responses=answers({200: "SchedulePage"}, 400, *_READ),
        query=(QueryParam("owner", {"type": "string"}, "admin only"), *PAGE), tag="schedules",
    ),
    user(
        "GET", "/v1/schedules/{schedule_id}", "getSchedule", "One schedule", "read",
        request=None, responses=answers({200: "Schedule"}, *_READ_ONE), tag="schedules",
    ),
    user(
        "DELETE", "/v1/schedules/{schedule_id}", "deleteSchedule", "Delete a schedule; answers what was deleted",
        "write", request=None, responses=answers({200: "Schedule"}, 401, 403, 404, 429), tag="schedules",
    ),
    # --- notification subscriptions ---
    user(
        "POST", "/v1/subscriptions", "createSubscription",
        "Subscribe a webhook, Slack, DingTalk or e-mail target (an operator: to their own tasks; an admin: to any)",
        "write", request="CreateSubscriptionRequest", responses=answers({201: "Subscription"}, 400, 401, 403, 413, 429),
        tag="subscriptions",
    ),
    user(
        "GET", "/v1/subscriptions", "listSubscriptions", "Your subscriptions (an admin: every one), newest first",
        "read", request=None, responses=answers({200: "SubscriptionPage"}, 400, *_READ), query=PAGE,
        tag="subscriptions",
    ),
    user(
        "GET", "/v1/subscriptions/{subscription_id}", "getSubscription", "One subscription", "read",
        request=None, responses=answers({200: "Subscription"}, *_READ_ONE), tag="subscriptions",
    ),
    user(
        "DELETE", "/v1/subscriptions/{subscription_id}", "deleteSubscription", "Delete a subscription", "write",
        request=None, responses=answers({200: "SubscriptionDeleted"}, 401, 403, 404, 429), tag="subscriptions",
    ),
    user(
        "GET", "/v1/subscriptions/{subscription_id}/deliveries", "listDeliveries",
        "Delivery attempts of a subscription, newest first", "read",
        request=None, responses=answers({200: "DeliveryPage"}, 400, *_READ_ONE), query=PAGE, tag="subscriptions",
    ),
)
