"""fleetrun's entry points: each handler parses its event and calls one service."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from chalice.app import Chalice, Cron, DynamoDBEvent, Rate, Response, SQSEvent, WebsocketEvent

from chalicelib import config, lazy, resources
from chalicelib.api.errors import http_status
from chalicelib.api.http import Call, json_response, register
from chalicelib.domain.node_states import NODE_STATUSES
from chalicelib.errors import FleetrunError, ValidationFailed
from chalicelib.observability import chalice_middleware, logger, per_record
from chalicelib.sqs_batch import BatchProcessor, EventType, process_partial_response

# Every function of the app imports this module: what a handler calls is loaded when it is first
# called (chalicelib/lazy.py), so a function loads only the services its own handlers use
# (bench/coldstart.py). mypy reads the real imports below; add a service to both lists.
if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

    from chalicelib.api.openapi import build_openapi
    from chalicelib.dashboard import http as dashboard
    from chalicelib.notify import delivery, subscriptions
    from chalicelib.services import (
        agent,
        agent_reports,
        allocations,
        backfill,
        claims,
        deregistration,
        dispatch_queue,
        gpu_trend,
        images,
        intake,
        lifecycle,
        live_output,
        nodes,
        queries,
        reclaim,
        reports,
        runner_state,
        schedules,
        selectors,
        snapshot,
        statistics,
        stream,
        submit,
        sweeper,
        type_registry,
        work,
    )
    from chalicelib.services import timeseries as hourly_statistics
    from chalicelib.services.realtime import api as realtime_api
    from chalicelib.services.usage import Month
    from chalicelib.services.views import node_view, task_view
    from chalicelib.store import tasks
else:
    (agent, agent_reports, allocations, backfill, claims, deregistration, dispatch_queue, gpu_trend, images, intake,
     lifecycle, live_output, nodes, queries, reclaim, reports, runner_state, schedules, selectors, snapshot,
     statistics, stream, submit, sweeper, type_registry, work, hourly_statistics) = lazy.modules(
        "chalicelib.services", "agent", "agent_reports", "allocations", "backfill", "claims", "deregistration",
        "dispatch_queue", "gpu_trend", "images", "intake", "lifecycle", "live_output", "nodes", "queries", "reclaim",
        "reports", "runner_state", "schedules", "selectors", "snapshot", "statistics", "stream", "submit", "sweeper",
        "type_registry", "work", "timeseries")
    realtime_api = lazy.module("chalicelib.services.realtime.api")
    dashboard = lazy.module("chalicelib.dashboard.http")
    delivery, subscriptions = lazy.modules("chalicelib.notify", "delivery", "subscriptions")
    tasks = lazy.module("chalicelib.store.tasks")
    build_openapi = lazy.attribute("chalicelib.api.openapi", "build_openapi")
    Month = lazy.attribute("chalicelib.services.usage", "Month")
    node_view = lazy.attribute("chalicelib.services.views", "node_view")
    task_view = lazy.attribute("chalicelib.services.views", "task_view")

VERSION = "0.1.0"
#: Chalice needs a literal stream ARN at import (chalice issue 1882); the CDK app overrides it
STREAM_ARN = "arn:aws:dynamodb:us-east-1:000000000000:table/fleetrun/stream/1970-01-01T00:00:00.000"

# configure_logs=False: Chalice would otherwise set the "fleetrun" logger (the one Powertools
# uses) to ERROR with a plain handler, dropping INFO lines and bypassing the token scrubber
app = Chalice(app_name="fleetrun", configure_logs=False)
app.experimental_feature_flags.update(["WEBSOCKETS"])
chalice_middleware(app)


# --- meta -------------------------------------------------------------------------------
@register(app, "getHealth")
def health(call: Call) -> Response:
    body: dict[str, Any] = {"status": "ok", "version": VERSION, "node_statuses": list(NODE_STATUSES)}
    if config.websocket_url():
        body["websocket_url"] = config.websocket_url()
    return json_response(body)


@register(app, "getOpenApi")
def openapi(call: Call) -> Response:
    return json_response(build_openapi(VERSION))


# --- task types -------------------------------------------------------------------------
@register(app, "listTaskTypes")
def task_types(call: Call) -> Response:
    limit, cursor = call.page()
    return json_response(call.paged(type_registry.listing(limit, cursor)))


@register(app, "getTaskType")
def get_task_type(call: Call, type_name: str) -> Response:
    return json_response(type_registry.show(type_name))


@register(app, "createTaskType")
def create_task_type(call: Call) -> Response:
    task_type = type_registry.define(call.body(), call.user.user_id)
    return json_response(task_type.describe(), 201)


@register(app, "updateTaskType")
def update_task_type(call: Call, type_name: str) -> Response:
    return json_response(type_registry.update(type_name, call.body(), call.user.user_id).describe())


@register(app, "retireTaskType")
def retire_task_type(call: Call, type_name: str) -> Response:
    return json_response({**type_registry.retire(type_name).describe(), "retired": True})


# --- tasks ------------------------------------------------------------------------------
@register(app, "createTask")
def create_task(call: Call) -> Response:
    result = submit.submit(call.user.user_id, call.body(), call.header("idempotency-key"))
    body = task_view(result.task, result.targets)  # a replay's task and targets were just read
    body["warnings"] = runner_state.warnings_of(result.task, result.targets)
    if result.replayed:
        return json_response(body, 200, {"Idempotent-Replayed": "true"})
    return json_response(body, 202, {"Location": f"/v1/tasks/{result.task.task_id}"})


@register(app, "listTasks")
def list_tasks(call: Call) -> Response:
    limit, cursor = call.page()
    return json_response(call.paged(queries.list_tasks(call.user, call.query(), limit, cursor)))


@register(app, "getTask")
def get_task(call: Call, task_id: str) -> Response:
    return json_response(queries.get_task(call.user, task_id))


@register(app, "listNodeRuns")
def list_node_runs(call: Call, task_id: str) -> Response:
    limit, cursor = call.page()
    return json_response(call.paged(queries.list_runs(call.user, task_id, limit, cursor)))


@register(app, "listTaskEvents")
def list_events(call: Call, task_id: str) -> Response:
    limit, cursor = call.page()
    after = cursor or call.query().get("after")  # a cursor is an event id too, once verified
    return json_response(call.paged(queries.list_events(call.user, task_id, after, limit)))


@register(app, "dispatchTask")
def dispatch_task(call: Call, task_id: str) -> Response:
    body = call.body()
    task = queries.visible_task(call.user, task_id)
    if body.get("selector"):
        result = selectors.dispatch_selected(task)
    else:
        result = backfill.dispatch_nodes(task, body["target_nodes"])
    status = 202 if result["state"] == "in_progress" else 200  # the queue creates the rest in chunks
    return json_response({"dispatch": result, "task": queries.present(tasks.get(task_id))}, status)


@register(app, "cancelTask")
def cancel_task(call: Call, task_id: str) -> Response:
    task = lifecycle.cancel(queries.visible_task(call.user, task_id), call.user.user_id)
    return json_response(queries.present(task), 202)


@register(app, "retryTask")
def retry_task(call: Call, task_id: str) -> Response:
    scope = call.body().get("scope", "failed")
    task = lifecycle.retry(queries.visible_task(call.user, task_id), scope, call.user.user_id)
    return json_response(queries.present(task), 202)


@register(app, "confirmTask")
def confirm_task(call: Call, task_id: str) -> Response:
    task = lifecycle.confirm(queries.visible_task(call.user, task_id), call.user.user_id)
    return json_response(queries.present(task), 202)


@register(app, "discardTask")
def discard_task(call: Call, task_id: str) -> Response:
    task = lifecycle.discard(queries.visible_task(call.user, task_id), call.user.user_id)
    return json_response(queries.present(task), 202)


@register(app, "getStatistics")
def get_statistics(call: Call) -> Response:
    query = call.query()
    return json_response(statistics.statistics(call.user, query.get("type"), query.get("owner")))


# --- nodes ------------------------------------------------------------------------------
@register(app, "registerNode")
def register_node(call: Call) -> Response:
    body = call.body()
    node, token = nodes.register(body["node_id"], body.get("labels", {}), body.get("slots", 1))
    return json_response({"node_id": node.node_id, "token": token, "node": node_view(node)}, 201)


@register(app, "listNodes")
def list_nodes(call: Call) -> Response:
    limit, cursor = call.page()
    return json_response(call.paged(nodes.page_view(limit, cursor, call.query_values("label"))))


@register(app, "getNode")
def get_node(call: Call, node_id: str) -> Response:
    return json_response(node_view(nodes.get(node_id)))


@register(app, "updateNode")
def update_node(call: Call, node_id: str) -> Response:
    body = call.body()
    return json_response(node_view(nodes.update(node_id, body.get("labels"), body.get("slots"))))


@register(app, "rotateNodeToken")
def rotate_node_token(call: Call, node_id: str) -> Response:
    return json_response({"node_id": node_id, "token": nodes.rotate_token(node_id)})


@register(app, "deregisterNode")
def deregister_node(call: Call, node_id: str) -> Response:
    gone = deregistration.deregister(node_id)
    return json_response({"node_id": node_id, "deleted": True, "tasks_to_check": gone.tasks_to_check})


# --- monitoring -------------------------------------------------------------------------
@register(app, "getGpuTrend")
def gpu_trend_view(call: Call) -> Response:
    return json_response(gpu_trend.gpu_trend(gpu_trend.parse_query(call.query())))


@register(app, "getMonitoringSnapshot")
def monitoring_snapshot(call: Call) -> Response:
    return json_response(snapshot.read())


# --- node inventory: reclaim, allocations ----------------------------------------------
@register(app, "reclaimNode")
def reclaim_node(call: Call, node_id: str) -> Response:
    task = reclaim.start(call.user.user_id, node_id, call.body().get("user"))
    return json_response(task_view(task, [node_id]), 202, {"Location": f"/v1/tasks/{task.task_id}"})


@register(app, "allocateNode")
def allocate_node(call: Call, node_id: str) -> Response:
    return json_response(allocations.answer(*allocations.allocate(node_id, call.body()["user"])))


@register(app, "releaseNode")
def release_node(call: Call, node_id: str) -> Response:
    return json_response(allocations.answer(*allocations.release(node_id)))


@register(app, "listNodeAllocations")
def list_node_allocations(call: Call, node_id: str) -> Response:
    limit, cursor = call.page()
    return json_response(call.paged(allocations.page_view(node_id, limit, cursor)))


# --- usage reports ----------------------------------------------------------------------
@register(app, "getUsageReport")
def get_usage_report(call: Call) -> Response:
    query = call.query()
    if "month" not in query:
        raise ValidationFailed("month is required (YYYY-MM)", [{"path": "$query.month", "message": "required"}])
    found = reports.link(reports.ensure(Month.parse(query["month"]), query.get("format", "csv")))
    return json_response(found, 303, {"Location": found["url"]})


@app.schedule(Cron(0, 1, 1, "*", "?", "*"))
def monthly_usage_report(event: Any) -> None:
    reports.build_previous_month()


# --- agents -----------------------------------------------------------------------------
@register(app, "claimRuns")
def claim_runs(call: Call, node_id: str) -> Response:
    nodes.require_self(call.node, node_id)
    return json_response(claims.answer(node_id, call.body().get("max", 1), call.node_status, call.node_token_hash))


@register(app, "reportRuns")
def report_runs(call: Call, node_id: str) -> Response:
    nodes.require_self(call.node, node_id)
    return json_response(agent_reports.report(node_id, call.body(), http_status, call.node_status,
                                              call.node_token_hash))


@register(app, "heartbeatRun")
def heartbeat_run(call: Call, run_id: str) -> Response:
    body = call.body()
    return json_response(agent.heartbeat(call.node, run_id, body["attempt"], body.get("progress"), body.get("step")))


@register(app, "recordRunEvents")
def record_run_events(call: Call, run_id: str) -> Response:
    body = call.body()
    agent.record_events(call.node, run_id, body["attempt"], body["events"])
    return json_response({"accepted": True}, 202)


@register(app, "completeRun")
def complete_run(call: Call, run_id: str) -> Response:
    body = call.body()
    agent.complete(call.node, run_id, body["attempt"], body["status"], body.get("error_message"),
                   body.get("output"), body.get("events"))
    return json_response({"accepted": True})


@register(app, "reportPlanLost")
def report_plan_lost(call: Call, run_id: str) -> Response:
    agent.plan_lost(call.node, run_id, call.body()["attempt"])
    return json_response({"accepted": True}, 202)


@register(app, "appendRunOutput")
def append_run_output(call: Call, run_id: str) -> Response:
    body = call.body()
    return json_response(live_output.append(call.node, run_id, body["attempt"], body["offset"], body["data"]), 202)


@register(app, "getRunOutput")
def get_run_output(call: Call, task_id: str, node_id: str) -> Response:
    attempt, offset = live_output.parse_position(call.query())
    return json_response(live_output.read(call.user, task_id, node_id, attempt, offset))


# --- dashboard --------------------------------------------------------------------------
@register(app, "getStatisticsTimeseries")
def get_statistics_timeseries(call: Call) -> Response:
    query = call.query()
    hours = hourly_statistics.parse_hours(query.get("hours"))
    return json_response(hourly_statistics.timeseries(call.user, query.get("type"), query.get("owner"), hours))


@app.route("/", methods=["GET"])
def dashboard_index() -> Response:
    return dashboard.page("index.html", app.current_request)


@app.route("/ui/{name}", methods=["GET"])
def dashboard_asset(name: str) -> Response:
    return dashboard.page(name, app.current_request)


# --- events -----------------------------------------------------------------------------
# no annotated locals in handlers: chalice package's policy analyzer chokes on them
def _each_record(event: SQSEvent, handle: Callable[[SQSRecord], None], processor: BatchProcessor) -> dict[str, Any]:
    """Every record through `handle`; those that raise are reported for redelivery (ReportBatchItemFailures)."""
    return cast(dict[str, Any], process_partial_response(
        event=event.to_dict(), record_handler=per_record(handle), processor=processor, context=event.context,  # type: ignore[arg-type]
    ))


def _job(record: SQSRecord, queue: str) -> Any:
    """The record's JSON body, or None (logged) for a body that is not JSON: redelivering it cannot help."""
    try:
        return json.loads(record.body)
    except ValueError:
        logger.warning(f"{queue} job is not JSON; dropped", extra={"message_id": record.message_id})
        return None


_job_processor = BatchProcessor(event_type=EventType.SQS)


def _run_job(record: SQSRecord) -> None:
    job = _job(record, "dispatch")
    if job is not None:
        dispatch_queue.handle_job(job)


@app.on_sqs_message(queue=resources.DISPATCH_QUEUE.name, batch_size=resources.DISPATCH_QUEUE.batch_size)
def dispatch_worker(event: SQSEvent) -> dict[str, Any]:
    return _each_record(event, _run_job, _job_processor)


@app.on_dynamodb_record(stream_arn=STREAM_ARN, batch_size=resources.STREAM_BATCH_SIZE, starting_position="TRIM_HORIZON",
                        maximum_batching_window_in_seconds=resources.AGGREGATOR_BATCHING_WINDOW_SECONDS)
def stream_aggregator(event: DynamoDBEvent) -> dict[str, Any]:
    failed = stream.handle(event.to_dict()["Records"])
    return {"batchItemFailures": [{"itemIdentifier": seq} for seq in failed]}


# the stream's second reader (DynamoDB Streams serves two per shard): pushes and notifications,
# off the counting path (services/stream.py)
@app.on_dynamodb_record(stream_arn=STREAM_ARN, batch_size=resources.STREAM_BATCH_SIZE, starting_position="TRIM_HORIZON")
def stream_notifier(event: DynamoDBEvent) -> dict[str, Any]:
    failed = stream.notify(event.to_dict()["Records"])
    return {"batchItemFailures": [{"itemIdentifier": seq} for seq in failed]}


@app.schedule(Rate(1, unit=Rate.MINUTES))
def sweep(event: Any) -> None:
    sweeper.sweep()


@app.schedule(Cron(17, 3, "*", "*", "?", "*"))
def reconcile_statistics(event: Any) -> None:
    statistics.start_reconcile()  # in bounded steps on the dispatch queue (services/reconcile.py)
    snapshot.repair()  # monitoring: recount the nodes by status (the stream keeps them exact)
    selectors.index_unindexed_nodes()  # nodes registered before the label index existed


# --- intake and schedules ---------------------------------------------------------------
_intake_processor = BatchProcessor(event_type=EventType.SQS)


def _take_intake(record: SQSRecord) -> None:
    intake.handle(record.body, record.message_id)


@app.on_sqs_message(queue=resources.INTAKE_QUEUE.name, batch_size=resources.INTAKE_QUEUE.batch_size)
def intake_worker(event: SQSEvent) -> dict[str, Any]:
    return _each_record(event, _take_intake, _intake_processor)


@register(app, "createSchedule")
def create_schedule(call: Call) -> Response:
    return json_response(schedules.create(call.user, call.body()), 201)


@register(app, "listSchedules")
def list_schedules(call: Call) -> Response:
    limit, cursor = call.page()
    return json_response(call.paged(schedules.list_page(call.user, call.query().get("owner"), limit, cursor)))


@register(app, "getSchedule")
def get_schedule(call: Call, schedule_id: str) -> Response:
    return json_response(schedules.get(call.user, schedule_id))


@register(app, "deleteSchedule")
def delete_schedule(call: Call, schedule_id: str) -> Response:
    return json_response(schedules.delete(call.user, schedule_id))

# --- harbor image catalog ---------------------------------------------------------------
@register(app, "listImages")
def list_images(call: Call) -> Response:
    limit, cursor = call.page()
    return json_response(call.paged(images.list_images(call.query(), limit, cursor)))


@register(app, "syncImages")
def sync_images(call: Call) -> Response:
    body = call.body()
    result = images.request_sync(call.user.user_id, body.get("project"), body.get("repository"))
    return json_response(task_view(result.task, result.targets), 202, {"Location": f"/v1/tasks/{result.task.task_id}"})


@register(app, "harborWebhook")
def harbor_webhook(call: Call) -> Response:
    images.authenticate_hook(call.header("authorization"))  # before the body: strangers learn nothing
    result = images.harbor_hook(call.body())
    return json_response({"accepted": True, "task_id": result.task.task_id if result else None}, 202)


_work_processor = BatchProcessor(event_type=EventType.SQS)


def _run_work(record: SQSRecord) -> None:
    job = _job(record, "work")
    if job is not None:
        work.handle_job(job)


@app.on_sqs_message(queue=resources.WORK_QUEUE.name, batch_size=resources.WORK_QUEUE.batch_size)
def work_worker(event: SQSEvent) -> dict[str, Any]:
    return _each_record(event, _run_work, _work_processor)


@app.schedule(Cron(0, 2, "*", "*", "?", "*"))
def sync_images_daily(event: Any) -> None:
    images.scheduled_sync()


# --- real time (WebSocket API) ----------------------------------------------------------
@app.on_ws_connect()
def ws_connect(event: WebsocketEvent) -> dict[str, Any]:
    try:
        realtime_api.connect(event.connection_id, event.to_dict().get("queryStringParameters"))
    except FleetrunError as error:  # any non-2xx answer makes API Gateway refuse the connection
        return {"statusCode": http_status(error), "body": json.dumps(error.document())}
    return {"statusCode": 200}


@app.on_ws_message()
def ws_message(event: WebsocketEvent) -> dict[str, Any]:
    realtime_api.receive(event.connection_id, event.to_dict().get("body"))
    return {"statusCode": 200}


@app.on_ws_disconnect()
def ws_disconnect(event: WebsocketEvent) -> dict[str, Any]:
    realtime_api.disconnect(event.connection_id)
    return {"statusCode": 200}


# --- notifications ----------------------------------------------------------------------
@register(app, "createSubscription")
def create_subscription(call: Call) -> Response:
    return json_response(subscriptions.create(call.user, call.body()), 201)


@register(app, "listSubscriptions")
def list_subscriptions(call: Call) -> Response:
    limit, cursor = call.page()
    return json_response(call.paged(subscriptions.page(call.user, limit, cursor)))


@register(app, "getSubscription")
def get_subscription(call: Call, subscription_id: str) -> Response:
    return json_response(subscriptions.get(call.user, subscription_id))


@register(app, "deleteSubscription")
def delete_subscription(call: Call, subscription_id: str) -> Response:
    subscriptions.delete(call.user, subscription_id)
    return json_response({"subscription_id": subscription_id, "deleted": True})


@register(app, "listDeliveries")
def list_deliveries(call: Call, subscription_id: str) -> Response:
    limit, cursor = call.page()
    return json_response(call.paged(subscriptions.deliveries(call.user, subscription_id, limit, cursor)))


_notify_processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


def _deliver_notification(record: SQSRecord) -> None:
    delivery.handle(delivery.Received(
        body=record.body, message_id=record.message_id, receipt_handle=record.receipt_handle,
        attempt=int(record.attributes.approximate_receive_count or 1),
    ))


@app.on_sqs_message(queue=resources.NOTIFY_QUEUE.name, batch_size=resources.NOTIFY_QUEUE.batch_size)
def notify_worker(event: SQSEvent) -> dict[str, Any]:
    return _each_record(event, _deliver_notification, _notify_processor)
