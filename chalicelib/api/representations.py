"""JSON Schemas (Draft 2020-12) of what the API answers: the representations of API.md.

Response schemas leave `additionalProperties` open: API.md lets the service add fields.
Every listed field is required: a field with no value is present as `null`.
`chalicelib.api.schemas` gathers these with the request schemas into `SCHEMAS`.
"""

from __future__ import annotations

from typing import Final

from chalicelib.domain.node_states import NODE_STATUSES
from chalicelib.domain.statuses import RUN_STATUSES, TASK_STATUSES
from chalicelib.domain.task_requests import MAX_ERRORS, NODE_ID, Schema, nullable

TIMESTAMP: Final[Schema] = {"type": "string", "format": "date-time", "description": "RFC 3339 UTC"}
PROGRESS: Final[Schema] = {"type": "integer", "minimum": 0, "maximum": 100}
COUNT: Final[Schema] = {"type": "integer", "minimum": 0}



def record(properties: dict[str, Schema], description: str = "") -> Schema:
    """An object whose every property is present (nullable ones as `null`); extra fields allowed."""
    schema: Schema = {"type": "object", "properties": properties, "required": list(properties)}
    if description:
        schema["description"] = description
    return schema


def optional(names: tuple[str, ...], schema: Schema) -> Schema:
    """`schema` without `names` among its required properties (answers send them; the contract's
    older examples leave them out)."""
    return {**schema, "required": [name for name in schema["required"] if name not in names]}


def counts_of(keys: tuple[str, ...]) -> Schema:
    return record({key: COUNT for key in keys})


def page_of(item: Schema, description: str) -> Schema:
    return record(
        {"items": {"type": "array", "items": item}, "next_cursor": nullable({"type": "string"})}, description
    )


_STRING: Final[Schema] = {"type": "string"}
_NULLABLE_STRING: Final[Schema] = nullable(_STRING)

DispatchResult: Final[Schema] = optional(("state",), record(
    {"triggered": {"type": "boolean"},
     "state": {"type": "string", "enum": ["pending", "in_progress", "done"],
               "description": "in_progress: the dispatch queue still creates node runs in chunks; "
                              "the task's counts are final once it is done (pending: not begun)"},
     "target_node_count": COUNT, "created_count": COUNT, "skipped_count": COUNT},
    "What the last dispatch did: node runs created for new targets, existing ones skipped.",
))

Task: Final[Schema] = record(
    {
        "task_id": _STRING,
        "type": _STRING,
        "type_version": {"type": "integer", "minimum": 1,
                         "description": "the version of the type the task was created with (built-ins: 1)"},
        "name": _NULLABLE_STRING,
        "owner": _STRING,
        "status": {"type": "string", "enum": list(TASK_STATUSES)},
        "stage": _NULLABLE_STRING,
        "progress": PROGRESS,
        "target_nodes": {"type": "array", "items": NODE_ID},
        "parameters": {"type": "object", "description": 'secret parameters read "***"'},
        "tags": {"type": "array", "items": _STRING},
        "priority": {"type": "integer", "minimum": 1, "maximum": 10},
        "max_concurrency": {"type": "integer", "minimum": 1},
        "max_errors": MAX_ERRORS,
        "concurrency_key": _NULLABLE_STRING,
        "runner_node": nullable(NODE_ID),
        "target_selector": {
            **nullable({"type": "object"}),
            "description": 'the request\'s target_selector (`{"labels": {...}}`), re-resolved by dispatch '
                           '{"selector": true}; null without one',
        },
        "claim_timeout_seconds": {"type": "integer", "minimum": 30, "maximum": 86_400,
                                  "description": "a node run nobody claims this long after it became claimable "
                                                 "ends timed_out"},
        "waiting_for": {
            "type": ["object", "null"],
            "properties": {"task_id": _STRING, "owner": _NULLABLE_STRING},
            "required": ["task_id", "owner"],
            "description": "while the task waits for its concurrency_key: the task holding it (or ahead in "
                           "its queue); null otherwise",
        },
        "attempt": {"type": "integer", "minimum": 1},
        "node_counts": counts_of(RUN_STATUSES),
        "dispatch": DispatchResult,
        "error_message": _NULLABLE_STRING,
        "created_at": TIMESTAMP,
        "started_at": nullable(TIMESTAMP),
        "completed_at": nullable(TIMESTAMP),
        "updated_at": TIMESTAMP,
        "revision": {"type": "integer", "minimum": 0,
                     "description": "grows with every change of the task, counts and progress included (which "
                                    "leave `updated_at`): of two copies of a task (a read, a push), the one with "
                                    "the higher revision is newer"},
    },
    "A task; `completed_at` is set only in a terminal status.",
)
TaskPage: Final[Schema] = page_of(Task, "Tasks, newest first.")
TaskWarning: Final[Schema] = record(
    {
        "code": {"type": "string", "enum": ["unknown_runners"]},
        "message": _STRING,
        "nodes": {"type": "array", "items": NODE_ID, "description": "the first 100 of them, sorted"},
        "count": COUNT,
    },
    "Something about the task that will keep it from running as asked (it was created all the same).",
)
CreatedTask: Final[Schema] = {
    **Task,
    "properties": {**Task["properties"], "warnings": {"type": "array", "items": TaskWarning}},
    "required": [*Task["required"], "warnings"],
    "description": "The task as created (or as it is now, on a replay), with `warnings` ([] when none).",
}

NodeRun: Final[Schema] = record(
    {
        "run_id": _STRING,
        "task_id": _STRING,
        "node": NODE_ID,
        "runner": NODE_ID,
        "status": {"type": "string", "enum": list(RUN_STATUSES)},
        "attempt": {"type": "integer", "minimum": 1},
        "progress": PROGRESS,
        "step": _NULLABLE_STRING,
        "error_message": _NULLABLE_STRING,
        "started_at": nullable(TIMESTAMP),
        "completed_at": nullable(TIMESTAMP),
        "updated_at": nullable(TIMESTAMP),
    },
    "The run of one task on one target node; `run_id` is stable per (task, node). Of two states of "
    "a run (a read, a WebSocket `runs` push), the one with the higher (`attempt`, `updated_at`) is newer.",
)
NodeRunPage: Final[Schema] = page_of(NodeRun, "The node runs of a task.")

Event: Final[Schema] = record(
    {
        "event_id": _STRING,
        "at": TIMESTAMP,
        "type": {"type": "string", "description": "info, success, warning, error or a service event (task.created)"},
        "step": _NULLABLE_STRING,
        "node": nullable(NODE_ID),
        "message": _STRING,
        "progress": nullable(PROGRESS),
        "data": {"type": "object"},
    },
    "One entry of a task's log.",
)
EventPage: Final[Schema] = page_of(Event, "Events of a task, oldest first.")

DispatchResponse: Final[Schema] = record({"dispatch": DispatchResult, "task": Task})

Statistics: Final[Schema] = record(
    {
        "total_tasks": COUNT,
        "by_status": counts_of(TASK_STATUSES),
        "running_tasks": COUNT,
        "completed_tasks": COUNT,
        "failed_tasks": COUNT,
        "type_stats": {"type": "object", "additionalProperties": COUNT},
        "success_rate": nullable({"type": "number", "minimum": 0, "maximum": 100}),
        "avg_duration_seconds": nullable({"type": "number", "minimum": 0}),
        "node_runs": counts_of(("succeeded", "failed", "timed_out", "cancelled")),
        "as_of": TIMESTAMP,
    },
    "Task counts; success_rate = completed / (completed + partial_failure + failed) x 100, null if none finished.",
)

StatisticsHour: Final[Schema] = record(
    {
        "hour": {**TIMESTAMP, "description": "start of the hour (UTC)"},
        "by_status": counts_of(("completed", "partial_failure", "failed", "cancelled", "discarded")),
        "finished": {**COUNT, "description": "completed + partial_failure + failed"},
        "success_rate": nullable({"type": "number", "minimum": 0, "maximum": 100}),
        "avg_duration_seconds": nullable({"type": "number", "minimum": 0}),
    },
    "Tasks that reached a terminal status in one hour (by their completed_at); a retried task leaves its hour.",
)
StatisticsSeries: Final[Schema] = record(
    {
        "hours": {"type": "integer", "minimum": 1},
        "buckets": {"type": "array", "items": StatisticsHour},
        "as_of": TIMESTAMP,
    },
    "Hourly statistics, oldest hour first, the current hour last; hours without tasks are present with zeros.",
)

TaskType: Final[Schema] = record(
    {
        "name": _STRING,
        "version": {"type": "integer", "minimum": 1, "description": "the latest version (built-ins: 1)"},
        "builtin": {"type": "boolean", "description": "part of the service; false for types defined here"},
        "description": _STRING,
        "steps": {"type": "array", "items": _STRING, "description": "the steps of the run (of the plan phase)"},
        "apply_steps": {"type": "array", "items": _STRING, "description": "the steps after confirm"},
        "parameters_schema": {"type": "object", "description": "JSON Schema (Draft 2020-12) of `parameters`"},
        "secret_parameters": {"type": "array", "items": _STRING},
        "requires_confirmation": {"type": "boolean"},
        "default_max_concurrency": {"type": "integer", "minimum": 1},
        "max_attempts": {"type": "integer", "minimum": 1},
        "executor": {"type": "string", "enum": ["agent", "service"]},
        "run_timeout_seconds": {"type": ["integer", "null"], "minimum": 1,
                                "description": "how long the agent lets a run's steps take in all (null: its default)"},
    },
    "A task type, built-in or defined (latest version).",
)
TaskTypeList: Final[Schema] = page_of(
    TaskType, "The built-ins (on the first page) and the live defined types by name, latest versions.",
)

Node: Final[Schema] = record(
    {
        "node_id": NODE_ID,
        "labels": {"type": "object", "additionalProperties": _STRING},
        "slots": {"type": "integer", "minimum": 1},
        "status": {"type": "string", "enum": list(NODE_STATUSES)},
        "last_seen_at": nullable(TIMESTAMP),
        "created_at": TIMESTAMP,
        "status_changed_at": nullable(TIMESTAMP),
        "allocation": {
            "type": ["object", "null"],
            "description": "the open allocation of an `allocated` node",
            "properties": {"allocation_id": _STRING, "user": _STRING, "started_at": TIMESTAMP},
        },
        "reclaim": {
            "type": ["object", "null"],
            "description": "the reclaim of a node in `maintenance`: `running`, or `failed` (a new reclaim may start)",
            "properties": {
                "task_id": _STRING, "user": _STRING, "outcome": {"type": "string", "enum": ["running", "failed"]},
            },
        },
        "offline_since": {**nullable(TIMESTAMP), "description": "when an `offline` node went silent"},
        "offline_from": {
            **nullable({"type": "string", "enum": list(NODE_STATUSES)}),
            "description": "the status an `offline` node returns to when its agent is seen again",
        },
    },
    "A registered node (a machine with an agent).",
)
NodePage: Final[Schema] = page_of(Node, "Registered nodes.")
Allocation: Final[Schema] = record(
    {
        "allocation_id": _STRING,
        "node_id": NODE_ID,
        "user": _STRING,
        "started_at": TIMESTAMP,
        "ended_at": nullable(TIMESTAMP),
        "ended_by": {**_NULLABLE_STRING, "description": "`release`, `reclaim` or `deregister`"},
        "hours": {"type": "number", "minimum": 0, "description": "up to now while open"},
    },
    "One allocation of a node to a user.",
)
AllocationPage: Final[Schema] = page_of(Allocation, "A node's allocations, newest first.")
NodeAllocation: Final[Schema] = record(
    {"node": Node, "allocation": Allocation}, "The node after the change and the allocation it opened or ended.",
)
NodeRegistered: Final[Schema] = record(
    {"node_id": NODE_ID, "token": {"type": "string", "description": "the node's agent token, shown once"}, "node": Node}
)
NodeToken: Final[Schema] = record(
    {"node_id": NODE_ID, "token": {"type": "string", "description": "the node's new agent token, shown once"}},
    "A rotated node token: the previous one is refused from now on.",
)
NodeDeregistered: Final[Schema] = record(
    {
        "node_id": NODE_ID,
        "deleted": {"const": True},
        "tasks_to_check": {**COUNT, "description": "active tasks in which the node's runs end in the background: "
                                                   "waiting ones `failed` (`node deregistered`), running ones "
                                                   "asked to cancel"},
    },
    "A deregistered node: the id may be registered again.",
)

UsageReportLink: Final[Schema] = record(
    {
        "month": _STRING,
        "format": {"type": "string", "enum": ["csv", "xlsx"]},
        "url": {"type": "string", "description": "presigned GET of the file (also the Location header)"},
        "expires_in": {"type": "integer", "description": "seconds the URL stays valid"},
        "filename": _STRING,
        "as_of": TIMESTAMP,
        "complete": {"type": "boolean", "description": "the month had ended: the figures are final"},
    },
    "Where a usage report file is.",
)

ClaimedRun: Final[Schema] = record(
    {
        "run_id": _STRING,
        "task_id": _STRING,
        "node": NODE_ID,
        "type": _STRING,
        "phase": {"type": "string", "enum": ["plan", "apply", "run"]},
        "step": _STRING,
        "steps": {"type": "array", "items": _STRING},
        "run_timeout_seconds": {"type": ["integer", "null"], "minimum": 1,
                                "description": "how long the run's steps may take in all (the type's limit; "
                                               "null: the agent's own per-step default)"},
        "attempt": {"type": "integer", "minimum": 1},
        "parameters": {"type": "object", "description": "secrets in clear: this route only"},
        "secret_values": {"type": "array", "items": _STRING,
                          "description": "every secret value of the parameters (nested ones too), in clear: "
                                         "the agent scrubs them from live output before chunking it"},
        "lease_expires_at": TIMESTAMP,
    },
    "A run now `running` and leased to the claiming agent until `lease_expires_at`.",
)
Claim: Final[Schema] = {
    "type": "object",
    "properties": {
        "runs": {"type": "array", "items": ClaimedRun},
        "retry_after_seconds": {
            "type": "number", "minimum": 0,
            "description": "only in an empty answer while runs of this runner are being dispatched: "
                           "ask again after this many seconds instead of backing off",
        },
    },
    "required": ["runs"],
}
HeartbeatResponse: Final[Schema] = record({"lease_expires_at": TIMESTAMP, "cancel_requested": {"type": "boolean"}})
Accepted: Final[Schema] = record({"accepted": {"const": True}})
Health: Final[Schema] = {
    "type": "object",
    "properties": {
        "status": {"type": "string", "description": "ok when healthy"},
        "version": _STRING,
        "websocket_url": {"type": "string", "description": "where to connect for pushed task updates (API.md "
                          "'Real time'); absent when the deployment has no WebSocket API"},
        "node_statuses": {
            "type": "array", "items": {"type": "string", "enum": list(NODE_STATUSES)},
            "description": "every node status, in the order clients show them (the enum of Node.status)",
        },
    },
    "required": ["status", "version", "node_statuses"],
}
OpenApiDocument: Final[Schema] = {"type": "object", "description": "This OpenAPI 3.1 document."}

Error: Final[Schema] = record(
    {
        "error": {
            "type": "object",
            "properties": {
                "code": _STRING,
                "message": _STRING,
                "details": {
                    "type": "array",
                    "items": record({"path": _STRING, "message": _STRING}),
                    "description": "validation_error only: each problem with its JSON path, like $.target_nodes[3]",
                },
            },
            "required": ["code", "message"],
            "additionalProperties": True,
        }
    },
    "Every error. Some codes carry extra fields (current_status, allowed_from, retry_after, ...).",
)

# --- image catalog ---
Image: Final[Schema] = record(
    {
        "project": _STRING,
        "repository": {"type": "string", "description": "full name: project/repo"},
        "tag": _STRING,
        "digest": {"type": "string", "description": "sha256:..."},
        "size_bytes": COUNT,
        "pushed_at": nullable(TIMESTAMP),
        "synced_at": {**TIMESTAMP, "description": "when a sync last wrote this row (seen first, changed, removed)"},
        "removed_at": {**nullable(TIMESTAMP), "description": "set when the tag is gone from Harbor"},
    },
    "One tag of the image catalog synced from Harbor.",
)
ImagePage: Final[Schema] = page_of(Image, "The image catalog, by repository and tag.")
HarborHookAccepted: Final[Schema] = record(
    {"accepted": {"const": True}, "task_id": _NULLABLE_STRING},
    "The event was received; `task_id` is the sync it started (null for an event that starts none).",
)
# --- monitoring ---
GpuTrend: Final[Schema] = record(
    {
        "series": {"type": "array", "items": record({
            "host": _STRING,
            "metric": {"type": "string", "enum": ["DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_FB_USED"]},
            "unit": {"type": "string", "description": "percent (utilisation, averaged over the host's GPUs) or "
                                                      "MiB (framebuffer used, summed over them)"},
            # a pair of numbers rather than `prefixItems`: schemathesis 4.32 reads prefixItems as
            # Draft 4's tuple `items` and then rejects the document it made
            "points": {"type": "array", "items": {
                "type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2,
                "description": "[unix time (whole seconds), value]",
            }},
        })},
        "source": {"const": "prometheus"},
        "start": {"type": "integer"},
        "end": {"type": "integer"},
        "step": {"type": "integer", "minimum": 1},
    },
    "GPU series per host and metric from Prometheus; 503 when Prometheus is not configured or unreachable.",
)
MonitoringSnapshot: Final[Schema] = record(
    {
        "nodes": {"type": "object", "additionalProperties": COUNT,
                  "description": "nodes by status: idle, allocated, maintenance, offline and any other status seen"},
        "total_nodes": COUNT,
        "running_tasks": COUNT,
        "active_tasks": counts_of(("pending", "running", "apply_pending", "cancelling")),
        "node_runs_in_flight": {**COUNT, "description": "node runs claimed and not finished (running + apply_pending)"},
        "node_runs_waiting": {**COUNT, "description": "node runs nobody has claimed yet (pending)"},
        "node_runs": counts_of(("pending", "running", "apply_pending")),
        "as_of": {**TIMESTAMP, "description": "when the task and run figures were read; at most 10 s ago"},
    },
    "The fleet at a glance, from one cached item (constant read cost).",
)

RESPONSE_SCHEMAS: Final[dict[str, Schema]] = {
    "Image": Image,
    "ImagePage": ImagePage,
    "HarborHookAccepted": HarborHookAccepted,
    "Task": Task,
    "TaskPage": TaskPage,
    "TaskWarning": TaskWarning,
    "CreatedTask": CreatedTask,
    "NodeRun": NodeRun,
    "NodeRunPage": NodeRunPage,
    "Event": Event,
    "EventPage": EventPage,
    "DispatchResult": DispatchResult,
    "DispatchResponse": DispatchResponse,
    "Statistics": Statistics,
    "StatisticsHour": StatisticsHour,
    "StatisticsSeries": StatisticsSeries,
    "TaskType": TaskType,
    "TaskTypeList": TaskTypeList,
    "Node": Node,
    "NodePage": NodePage,
    "NodeRegistered": NodeRegistered,
    "NodeToken": NodeToken,
    "NodeDeregistered": NodeDeregistered,
    "Allocation": Allocation,
    "AllocationPage": AllocationPage,
    "NodeAllocation": NodeAllocation,
    "UsageReportLink": UsageReportLink,
    "ClaimedRun": ClaimedRun,
    "Claim": Claim,
    "HeartbeatResponse": HeartbeatResponse,
    "Accepted": Accepted,
    "Health": Health,
    "OpenApiDocument": OpenApiDocument,
    "Error": Error,
    "GpuTrend": GpuTrend,
    "MonitoringSnapshot": MonitoringSnapshot,
}
