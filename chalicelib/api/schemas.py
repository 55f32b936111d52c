"""JSON Schemas (Draft 2020-12) of the request bodies, and `SCHEMAS`: every schema by name.

`validation.parse` validates against these very dicts and `openapi.build_openapi` publishes
them as `components.schemas`, so the contract is written once. Request bodies reject unknown
fields (`additionalProperties: false`). `default` documents what the service assumes for a
missing field; `parse` does not fill it in.
"""

from __future__ import annotations

from typing import Final

from chalicelib.api.output_schemas import OUTPUT_REQUEST_SCHEMAS, OUTPUT_SCHEMAS
from chalicelib.api.representations import PROGRESS, RESPONSE_SCHEMAS, TIMESTAMP, page_of, record
from chalicelib.domain import type_definitions
from chalicelib.domain.selectors import MAX_LABELS
from chalicelib.domain.task_requests import (
    INTAKE_MESSAGE,
    NODE_ID,
    SCHEDULE_FIRING,
    TARGET_NODES,
    TASK_REQUEST,
    Schema,
    body,
    nullable,
    plain_text,
)
from chalicelib.domain.task_types import REGISTRY, TaskType
from chalicelib.services import twophase


def parameters_component(task_type: str) -> str:
    """The component holding a type's parameter schema: `iac.plan_apply` → `Parameters_iac_plan_apply`."""
    return "Parameters_" + task_type.replace(".", "_")


_STRING_: Final[Schema] = {"type": "string"}
ATTEMPT: Final[Schema] = {"type": "integer", "minimum": 1, "description": "the attempt the run was claimed for"}
STEP: Final[Schema] = {"type": "string", "maxLength": 128}
MESSAGE: Final[Schema] = {"type": "string", "maxLength": 4096}

_PARAMETER_SCHEMAS_DOC = "; ".join(
    f"`{name}`: [{parameters_component(name)}](#/components/schemas/{parameters_component(name)})"
    for name in sorted(REGISTRY)
)


def published(schemas: dict[str, Schema]) -> dict[str, Schema]:
    """The schemas as the OpenAPI document shows them: a task request (also a schedule's) is one
    of the types, each with its parameter schema, and a subscription's channel says whether it
    takes a secret. Requests are validated in two steps instead
    (the common fields here, then the type's parameters in submit, which answers an unknown type
    with `unknown_task_type` rather than a failed `oneOf`; the channel's rule with its own
    message), so only the document carries these."""
    from chalicelib.notify.events import CHANNELS
    from chalicelib.notify.subscriptions import SECRET_ALLOWED, SECRET_REQUIRED

    variants = [*(_task_variant(REGISTRY[name]) for name in sorted(REGISTRY)), _DEFINED_TYPE_VARIANT]
    schedule = schemas["CreateScheduleRequest"]
    secret_rules = [
        {"if": {"properties": {"channel": {"enum": sorted(SECRET_REQUIRED)}}},
         "then": {"required": ["secret"]}},
        {"if": {"properties": {"channel": {"enum": sorted(set(CHANNELS) - SECRET_ALLOWED)}}},
         "then": {"not": {"required": ["secret"]}}},
    ]
    return {
        **schemas,
        "CreateSubscriptionRequest": {**schemas["CreateSubscriptionRequest"], "allOf": secret_rules},
        "CreateTaskRequest": {**schemas["CreateTaskRequest"], "oneOf": variants},
        "CreateScheduleRequest": {
            **schedule,
            "properties": {**schedule["properties"], "task": {**schedule["properties"]["task"], "oneOf": variants}},
        },
    }


#: a request of a type defined through /v1/task-types: its parameters are checked against that type's
#: stored schema (GET /v1/task-types/{name}); defined types are agent-executed
_DEFINED_TYPE_VARIANT: Final[Schema] = {
    "description": "a type defined through /v1/task-types (parameters: its parameters_schema)",
    "properties": {"type": {"not": {"enum": sorted(REGISTRY)}}},
    "required": ["type"],
}


def _task_variant(task_type: TaskType) -> Schema:
    """What a request of one type must also be: its parameters, and target nodes given for an
    agent-executed type (one for a two-phase type), none for a type the service runs itself."""
    parameters = {"$ref": f"#/components/schemas/{parameters_component(task_type.name)}"}
    variant: Schema = {"properties": {"type": {"const": task_type.name}, "parameters": parameters}}
    required = ["type"]
    if task_type.parameters_schema.get("required"):
        required.append("parameters")
    targeted = [{"required": ["target_nodes"]}, {"required": ["target_selector"]}]
    if task_type.agent_executed:
        variant["anyOf"] = targeted  # target_nodes, a target_selector, or both
        if task_type.requires_confirmation:
            variant["properties"]["target_nodes"] = {"maxItems": twophase.MAX_TARGETS}
    else:
        variant["not"] = {"anyOf": targeted}
    return {**variant, "required": required}


CreateTaskRequest: Final[Schema] = {
    **TASK_REQUEST,
    "description": (
        "Create a task. `parameters` is validated against the parameter schema of the chosen type: "
        + _PARAMETER_SCHEMAS_DOC
        + ". Parameters a type marks secret read \"***\" in every answer."
    ),
}

DispatchRequest: Final[Schema] = {
    **body(
        {
            "target_nodes": TARGET_NODES,
            "selector": {"const": True, "description": "re-resolve the task's target_selector: runs for the "
                                                       "nodes that match now and have none"},
        },
        description="Exactly one of `target_nodes` and `selector: true`.",
    ),
    "minProperties": 1,
    "maxProperties": 1,
}

RetryRequest: Final[Schema] = body(
    {"scope": {"type": "string", "enum": ["failed", "all"], "default": "failed"}},
    description="`failed`: only failed, timed out and cancelled nodes run again; `all`: every node.",
)

#: a node's labels (`pool: cdn`): keys and values are names, so no control characters
LABELS: Final[Schema] = {
    "type": "object",
    "maxProperties": MAX_LABELS,
    "propertyNames": plain_text(1, 128),
    "additionalProperties": plain_text(0, 256),
}

RegisterNodeRequest: Final[Schema] = body(
    {
        "node_id": NODE_ID,
        "labels": LABELS,
        "slots": {"type": "integer", "minimum": 1, "maximum": 1024, "default": 1},
    },
    required=("node_id",),
)

UpdateNodeRequest: Final[Schema] = {
    **body(
        {"labels": {**LABELS, "description": "replaces every label"}, "slots": {"type": "integer", "minimum": 1,
                                                                               "maximum": 1024}},
        description="The node's new labels and/or slots; what is left out stays.",
    ),
    "minProperties": 1,
}

#: a user's login name on the machines (the `user` of machine.reclaim)
MACHINE_USER: Final[Schema] = {"type": "string", "pattern": "^[a-z_][a-z0-9_-]{0,31}$"}
AllocateNodeRequest: Final[Schema] = body({"user": MACHINE_USER}, required=("user",))
ReclaimNodeRequest: Final[Schema] = body(
    {"user": {**MACHINE_USER, "description": "whose account to clean; default: the user of the open allocation"}},
)

ClaimRequest: Final[Schema] = body({"max": {"type": "integer", "minimum": 1, "maximum": 50, "default": 1}})

HeartbeatRequest: Final[Schema] = body({"attempt": ATTEMPT, "progress": PROGRESS, "step": STEP}, required=("attempt",))

RunEvent: Final[Schema] = body(
    {
        "type": {"type": "string", "enum": ["info", "success", "warning", "error"]},
        "step": STEP,
        "message": MESSAGE,
        "progress": PROGRESS,
        "data": {"type": "object"},
    },
    required=("type",),
)
RUN_EVENTS: Final[Schema] = {"type": "array", "items": RunEvent, "minItems": 1, "maxItems": 100}

RunEventsRequest: Final[Schema] = body({"attempt": ATTEMPT, "events": RUN_EVENTS}, required=("attempt", "events"))

CompleteRequest: Final[Schema] = body(
    {
        "attempt": ATTEMPT,
        "status": {"type": "string", "enum": ["succeeded", "failed", "cancelled"]},
        "error_message": nullable(MESSAGE),
        "output": nullable({"type": "string", "maxLength": 65_536}),
        "events": {**RUN_EVENTS, "description": "last events, recorded with the completion"},
    },
    required=("attempt", "status"),
)

PlanLostRequest: Final[Schema] = body({"attempt": ATTEMPT}, required=("attempt",))

# --- the batched agent report (services/agent_reports.py) ---
#: the most heartbeats, and the most completions, one report carries (a claim leases at most 50)
MAX_REPORT_ITEMS: Final = 50
_RUN_ID: Final[Schema] = {"type": "string", "minLength": 1, "maxLength": 256,
                          "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]+$", "description": "`<task_id>.<node>`"}
ReportHeartbeat: Final[Schema] = body(
    {**HeartbeatRequest["properties"], "run_id": _RUN_ID,
     "events": {**RUN_EVENTS, "description": "events buffered since the last report, recorded if the lease holds"}},
    required=("run_id", "attempt"),
    description="One run's heartbeat: what `POST /v1/runs/{run_id}/heartbeat` takes, plus `run_id` and events.",
)
ReportCompletion: Final[Schema] = body(
    {**CompleteRequest["properties"], "run_id": _RUN_ID},
    required=("run_id", "attempt", "status"),
    description="One run's completion: what `POST /v1/runs/{run_id}/complete` takes, plus `run_id`.",
)
AgentReportRequest: Final[Schema] = body(
    {
        "heartbeats": {"type": "array", "items": ReportHeartbeat, "maxItems": MAX_REPORT_ITEMS},
        "completions": {"type": "array", "items": ReportCompletion, "maxItems": MAX_REPORT_ITEMS},
        "claim": {**ClaimRequest, "description": "lease up to `max` more runs, after the completions"},
    },
    description="Several heartbeats and completions, and a claim, in one request; each item is answered on its "
                "own with the status its single route would answer.",
)
_ITEM_STATUS: Final[Schema] = {"type": "integer", "description": "the HTTP status the single route would answer"}
_ITEM_ERROR: Final[Schema] = {"type": "object", "description": "the error document's `error` when `status` is not 200"}
AgentReport: Final[Schema] = {
    "type": "object",
    "properties": {
        "heartbeats": {"type": "array", "items": {
            "type": "object", "required": ["run_id", "status"],
            "properties": {"run_id": _STRING_, "status": _ITEM_STATUS, "error": _ITEM_ERROR,
                           "lease_expires_at": TIMESTAMP, "cancel_requested": {"type": "boolean"}},
        }},
        "completions": {"type": "array", "items": {
            "type": "object", "required": ["run_id", "status"],
            "properties": {"run_id": _STRING_, "status": _ITEM_STATUS, "error": _ITEM_ERROR,
                           "replayed": {"type": "boolean", "description": "an identical completion was already "
                                                                          "recorded (nothing counted twice)"}},
        }},
        "claim": {
            "type": "object", "required": ["status"],
            "properties": {"status": _ITEM_STATUS, "error": _ITEM_ERROR, "runs": {"type": "array"},
                           "retry_after_seconds": {"type": "number", "minimum": 0}},
            "description": "only when the request claimed: the claim route's answer (`runs`), with a status",
        },
    },
    "required": ["heartbeats", "completions"],
    "description": "Each item's answer, in the request's order.",
}

# --- image catalog ---
REPOSITORY: Final[Schema] = {"type": "string", "pattern": "^[a-z0-9][a-z0-9._-]*(/[a-z0-9][a-z0-9._-]*)+$",
                             "maxLength": 255, "description": "a full repository name: project/repo"}
ImageSyncRequest: Final[Schema] = body(
    {
        "project": {"type": "string", "pattern": "^[a-z0-9][a-z0-9._-]{0,254}$", "description": "one project only"},
        "repository": {**REPOSITORY, "description": "one repository only (project/repo)"},
    },
    description="Sync the configured Harbor: everything (empty body), one project or one repository.",
)
HarborWebhookEvent: Final[Schema] = {
    "type": "object",
    "properties": {
        "type": {"type": "string", "description": "PUSH_ARTIFACT and DELETE_ARTIFACT sync the repository"},
        "occur_at": {"type": "integer"},
        "operator": {"type": "string"},
        "event_data": {"type": "object", "properties": {"repository": {"type": "object"},
                                                         "resources": {"type": "array"}}},
    },
    "required": ["type"],
    "description": "Harbor's webhook payload (Default format); other fields are ignored.",
}

REQUEST_SCHEMAS: Final[dict[str, Schema]] = {
    "ImageSyncRequest": ImageSyncRequest,
    "HarborWebhookEvent": HarborWebhookEvent,
    "CreateTaskRequest": CreateTaskRequest,
    "DispatchRequest": DispatchRequest,
    "RetryRequest": RetryRequest,
    "RegisterNodeRequest": RegisterNodeRequest,
    "UpdateNodeRequest": UpdateNodeRequest,
    "AllocateNodeRequest": AllocateNodeRequest,
    "ReclaimNodeRequest": ReclaimNodeRequest,
    "ClaimRequest": ClaimRequest,
    "HeartbeatRequest": HeartbeatRequest,
    "RunEvent": RunEvent,
    "RunEventsRequest": RunEventsRequest,
    "CompleteRequest": CompleteRequest,
    "PlanLostRequest": PlanLostRequest,
    "AgentReportRequest": AgentReportRequest,
}

#: every schema of the contract by component name: what `parse` validates and OpenAPI publishes
SCHEMAS: Final[dict[str, Schema]] = {**REQUEST_SCHEMAS, **RESPONSE_SCHEMAS, "AgentReport": AgentReport}

# --- intake and schedules -------------------------------------------------------------------
IntakeMessage: Final[Schema] = INTAKE_MESSAGE
ScheduleFiring: Final[Schema] = SCHEDULE_FIRING

CreateScheduleRequest: Final[Schema] = body(
    {
        "name": plain_text(1, 128),
        "expression": {
            "type": "string", "minLength": 1, "maxLength": 256,
            "description": 'EventBridge Scheduler syntax, UTC: "rate(1 hour)" or "cron(0 2 * * ? *)"',
        },
        "task": {**CreateTaskRequest, "description": "the POST /v1/tasks body each firing submits"},
    },
    required=("name", "expression", "task"),
)

Schedule: Final[Schema] = record(
    {
        "schedule_id": {"type": "string"},
        "name": {"type": "string"},
        "owner": {"type": "string"},
        "expression": {"type": "string"},
        "task": {"type": "object", "description": 'the POST /v1/tasks body; secret parameters read "***"'},
        "created_at": TIMESTAMP,
        "next_fire_at": {**nullable(TIMESTAMP), "description": "the next firing time (UTC), null if none"},
    },
    "A schedule: each firing creates one task, idempotent on (schedule, scheduled time).",
)
SchedulePage: Final[Schema] = page_of(Schedule, "Schedules, newest first.")

SCHEDULE_SCHEMAS: Final[dict[str, Schema]] = {
    "IntakeMessage": IntakeMessage,
    "ScheduleFiring": ScheduleFiring,
    "CreateScheduleRequest": CreateScheduleRequest,
    "Schedule": Schedule,
    "SchedulePage": SchedulePage,
}
SCHEMAS.update(SCHEDULE_SCHEMAS)


# --- notification subscriptions -----------------------------------------------------------
def _subscription_schemas() -> dict[str, Schema]:
    from chalicelib.api.representations import TIMESTAMP, page_of, record
    from chalicelib.notify.events import CHANNELS, EVENTS

    events: Schema = {"type": "array", "items": {"type": "string", "enum": list(EVENTS)}, "minItems": 1,
                      "uniqueItems": True}
    filter_value: Schema = plain_text(1, 128)
    request = body(
        {
            "channel": {"type": "string", "enum": list(CHANNELS)},
            "target": {"type": "string", "minLength": 3, "maxLength": 2048,
                       "description": "https URL (webhook, Slack incoming webhook, DingTalk robot) or e-mail address"},
            "secret": {"type": "string", "minLength": 8, "maxLength": 256,
                       "description": "webhook: HMAC key of X-Fleetrun-Signature (required); dingtalk: the robot's "
                                      "signing secret (optional); never returned"},
            "events": {**events, "default": list(EVENTS)},
            "filter": body({"type": filter_value, "tag": filter_value},
                           description="only tasks of this type and/or carrying this tag"),
        },
        required=("channel", "target"),
    )
    string, nullable_string = {"type": "string"}, nullable({"type": "string"})
    subscription = record(
        {
            "subscription_id": string, "owner": string,
            "scope": {"type": "string", "enum": ["all", "own"], "description": "all: an admin's (every task)"},
            "channel": {"type": "string", "enum": list(CHANNELS)},
            "target": {**string, "description": "credentials (query values, Slack's webhook path) read ***"},
            "secret_set": {"type": "boolean"}, "events": events,
            "filter": record({"type": nullable_string, "tag": nullable_string}), "created_at": TIMESTAMP,
        },
        "A notification subscription. The secret is never returned.",
    )
    delivery = record(
        {
            "delivery_id": {**string, "description": "the same for every attempt and replay of one notification"},
            "event": string, "task_id": string, "attempt": {"type": "integer", "minimum": 1},
            "status": {"type": "string", "enum": ["delivered", "failed", "dead_lettered"]},
            "status_code": nullable({"type": "integer"}), "duration_ms": {"type": "integer", "minimum": 0},
            "error": nullable_string, "at": TIMESTAMP,
        },
        "One delivery attempt.",
    )
    return {
        "CreateSubscriptionRequest": request,
        "Subscription": subscription,
        "SubscriptionPage": page_of(subscription, "Subscriptions, newest first."),
        "SubscriptionDeleted": record({"subscription_id": string, "deleted": {"const": True}}),
        "Delivery": delivery,
        "DeliveryPage": page_of(delivery, "Delivery attempts, newest first."),
    }


SUBSCRIPTION_SCHEMAS: Final[dict[str, Schema]] = _subscription_schemas()
REQUEST_SCHEMAS["CreateSubscriptionRequest"] = SUBSCRIPTION_SCHEMAS["CreateSubscriptionRequest"]
SCHEMAS.update(SUBSCRIPTION_SCHEMAS)

# --- task types you define (the rules beyond these: domain/type_definitions.check) -----------
TASK_TYPE_SCHEMAS: Final[dict[str, Schema]] = {
    "CreateTaskTypeRequest": type_definitions.DEFINITION,
    "UpdateTaskTypeRequest": type_definitions.NEW_VERSION,
}
REQUEST_SCHEMAS.update(TASK_TYPE_SCHEMAS)
SCHEMAS.update(TASK_TYPE_SCHEMAS)

# --- live output (api/output_schemas.py) ------------------------------------------------------
REQUEST_SCHEMAS.update(OUTPUT_REQUEST_SCHEMAS)
SCHEMAS.update(OUTPUT_SCHEMAS)
