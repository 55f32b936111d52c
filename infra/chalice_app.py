"""The Chalice app (`chalice.cdk.Chalice`) with what `chalice package` cannot express.

`chalice package` emits a SAM template; the construct includes it with `CfnInclude`. Here every
function of that template gets:

- its own role (least privilege: the data-plane policy plus the event sources it consumes),
  its own log group with retention, active tracing and the environment `chalicelib/config.py`
  reads;
- for each SQS event: the real queue ARN (Chalice only knows the queue's name) and
  `FunctionResponseTypes: [ReportBatchItemFailures]`;
- for each DynamoDB stream event: the table's real stream ARN (app.py holds a placeholder,
  chalice issue 1882), `ReportBatchItemFailures`, bisect-on-error, bounded retries and the
  stream dead-letter queue as on-failure destination;
- each schedule becomes an EventBridge rule of its own (retries and a maximum event age).

The REST API gets contract answers where API Gateway answers by itself: an unknown path, a
method a path lacks, throttling, a timed-out function (`infra/rest_api.py`).

Chalice never sets `FunctionResponseTypes` (see PITFALLS.md): without it Lambda ignores the
`batchItemFailures` a handler returns and retries or deletes the whole batch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aws_cdk import Duration, Fn, RemovalPolicy, Stack
from aws_cdk import aws_apigateway as apigateway
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from chalice.cdk import Chalice

from infra import iam_policies, rest_api
from infra.data import AppQueue, DataStores
from infra.packaging import ROOT, install_package_filter, stage_config
from infra.settings import (
    FUNCTION_MEMORY_MB,
    SQS_MAX_CONCURRENCY,
    SWEEPER,
    SWEEPER_MAX_EVENT_AGE_SECONDS,
    StageSettings,
)

REPORT_BATCH_ITEM_FAILURES = ["ReportBatchItemFailures"]
SERVERLESS_FUNCTION = "AWS::Serverless::Function"
#: logical ids Chalice gives the API and WebSocket resources
REST_API, WEBSOCKET_API, WEBSOCKET_STAGE = "RestAPI", "WebsocketAPI", "WebsocketAPIStage"
#: one JSON line per request in the APIs' access logs (no header, no body, no token)
REST_ACCESS_LOG_FORMAT = json.dumps({
    "requestId": "$context.requestId", "ip": "$context.identity.sourceIp", "time": "$context.requestTime",
    "method": "$context.httpMethod", "resource": "$context.resourcePath", "status": "$context.status",
    "bytes": "$context.responseLength", "latencyMs": "$context.responseLatency",
    "integrationLatencyMs": "$context.integrationLatency", "gatewayError": "$context.error.responseType",
})
WEBSOCKET_ACCESS_LOG_FORMAT = json.dumps({
    "requestId": "$context.requestId", "ip": "$context.identity.sourceIp", "time": "$context.requestTime",
    "eventType": "$context.eventType", "route": "$context.routeKey", "status": "$context.status",
    "connectionId": "$context.connectionId", "integrationLatencyMs": "$context.integrationLatency",
})


@dataclass
class WiredFunction:
    """One Lambda function of the Chalice app, after wiring."""

    logical_id: str
    handler: str
    timeout: int
    event_types: list[str] = field(default_factory=list)
    role: iam.Role | None = None

    @property
    def reads_stream(self) -> bool:
        return "DynamoDB" in self.event_types


class ChaliceApp:
    """Adds the Chalice app of `settings.stage` to `stack` and wires it to `data`.

    The Chalice construct takes its stage from its scope's id, so it must sit directly in the
    stage's stack (whose construct id is the stage name).
    """

    def __init__(self, stack: Stack, settings: StageSettings, data: DataStores, environment: dict[str, str],
                 api_only_statements: list[iam.PolicyStatement], source_dir: Path = ROOT,
                 function_statements: dict[str, list[iam.PolicyStatement]] | None = None) -> None:
        self.stack, self.settings, self.data = stack, settings, data
        install_package_filter()
        self.chalice = Chalice(stack, "ChaliceApp", source_dir=str(source_dir), stage_config=stage_config())
        self.sam = _packaged_template(self.chalice)
        self.has_websocket = WEBSOCKET_API in self.sam["Resources"]
        if self.has_websocket:
            # the app posts to connections through the first, and GET /v1/health advertises the second
            environment = {**environment, "FLEETRUN_WEBSOCKET_ENDPOINT": self.websocket_management_endpoint,
                           "FLEETRUN_WEBSOCKET_URL": self.websocket_url}
        self.data_policy = iam.ManagedPolicy(
            stack, "DataAccessPolicy",
            description=f"fleetrun {settings.stage}: what every function of the app may do with its data",
            statements=(iam_policies.data_plane(stack, data) + self._websocket_statements()
                        + iam_policies.read_secrets(settings.harbor_secret_arns)),
        )
        self.functions: dict[str, WiredFunction] = {}
        self.api_logging_role = self._api_gateway_logging_role()
        for logical_id, resource in self.sam["Resources"].items():
            if resource["Type"] == SERVERLESS_FUNCTION:
                extra = api_only_statements if logical_id == "APIHandler" else []
                extra = extra + (function_statements or {}).get(logical_id, [])
                self.functions[logical_id] = self._wire_function(logical_id, resource["Properties"], environment,
                                                                 extra)
        self._configure_rest_api()
        if self.has_websocket:
            self._configure_websocket_api()

    # --- functions ---------------------------------------------------------------------------
    def _wire_function(self, logical_id: str, props: dict[str, Any], environment: dict[str, str],
                       extra_statements: list[iam.PolicyStatement]) -> WiredFunction:
        cfn = self.chalice.get_resource(logical_id)
        log_group = logs.CfnLogGroup(
            self.stack, f"{logical_id}LogGroup",
            log_group_name=f"/fleetrun/{self.settings.stage}/{logical_id}",
            retention_in_days=self.settings.log_retention_days,
        )
        log_group.apply_removal_policy(RemovalPolicy.RETAIN if self.settings.is_prod else RemovalPolicy.DESTROY)
        statements = iam_policies.function_basics(self.stack, log_group.attr_arn) + list(extra_statements)
        events_ = props.get("Events", {})
        wired = WiredFunction(logical_id=logical_id, handler=props["Handler"], timeout=int(props.get("Timeout", 60)),
                              event_types=[e["Type"] for e in events_.values()])
        for event_name, event in events_.items():
            statements += self._wire_event(cfn, wired, event_name, event)
        if events_ and all(e["Type"] == "Schedule" for e in events_.values()):
            cfn.add_property_deletion_override("Events")
        wired.role = iam.Role(
            self.stack, f"{logical_id}Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"fleetrun {self.settings.stage}: {props['Handler']}",
            managed_policies=[self.data_policy],
            # inline, so the permissions exist before Lambda validates the event source mappings
            inline_policies={"Function": iam.PolicyDocument(statements=statements)},
        )
        cfn.add_property_override("Role", wired.role.role_arn)
        cfn.add_property_override("Tracing", "Active")
        cfn.add_property_override("LoggingConfig", {"LogGroup": log_group.ref, "LogFormat": "Text"})
        if logical_id in FUNCTION_MEMORY_MB:
            cfn.add_property_override("MemorySize", FUNCTION_MEMORY_MB[logical_id])
        if logical_id == SWEEPER:
            self._one_sweeper_at_a_time(cfn)
        for key, value in environment.items():
            self.chalice.add_environment_variable(key, value, logical_id)
        return wired

    def _wire_event(self, cfn: Any, fn: WiredFunction, event_name: str,
                    event: dict[str, Any]) -> list[iam.PolicyStatement]:
        path = f"Events.{event_name}.Properties"
        kind, props = event["Type"], event.get("Properties", {})
        if kind == "SQS":
            queue = self._queue_for(props["Queue"])
            if queue.spec.visibility_timeout < fn.timeout:
                raise ValueError(f"{queue.spec.name}: visibility timeout {queue.spec.visibility_timeout}s is shorter "
                                 f"than {fn.logical_id}'s timeout {fn.timeout}s (Lambda refuses the event source)")
            cfn.add_property_override(f"{path}.Queue", queue.queue.queue_arn)
            cfn.add_property_override(f"{path}.FunctionResponseTypes", REPORT_BATCH_ITEM_FAILURES)
            cfn.add_property_override(f"{path}.ScalingConfig",
                                      {"MaximumConcurrency": SQS_MAX_CONCURRENCY[queue.spec.name]})
            return iam_policies.consume_queue(queue.queue)
        if kind == "DynamoDB":
            cfn.add_property_override(f"{path}.Stream", self.data.table.table_stream_arn)
            cfn.add_property_override(f"{path}.FunctionResponseTypes", REPORT_BATCH_ITEM_FAILURES)
            cfn.add_property_override(f"{path}.BisectBatchOnFunctionError", True)
            cfn.add_property_override(f"{path}.MaximumRetryAttempts", self.settings.stream_max_retries)
            # the stream keeps a record 24 h and then drops it silently; older than this, Lambda sends
            # its description to the stream DLQ instead (alarmed), and the sweeper's recount repairs
            # the counters it carried (infra/README.md, "Production settings")
            cfn.add_property_override(f"{path}.MaximumRecordAgeInSeconds", self.settings.stream_max_record_age)
            # batches of one shard in parallel; records of one item stay in order
            cfn.add_property_override(f"{path}.ParallelizationFactor", self.settings.stream_parallelization)
            cfn.add_property_override(f"{path}.DestinationConfig",
                                      {"OnFailure": {"Destination": self.data.stream_dlq.queue_arn}})
            return iam_policies.read_stream(self.stack, self.data) + iam_policies.send_to(self.data.stream_dlq)
        if kind == "Schedule":
            self._schedule_rule(cfn, fn, event_name, props["Schedule"])
            cfn.add_property_deletion_override(f"Events.{event_name}")
            return []
        raise NotImplementedError(f"infra/ does not wire {kind} events yet ({fn.logical_id}.{event_name})")

    def _queue_for(self, queue_ref: Any) -> AppQueue:
        """Chalice writes `arn:${AWS::Partition}:sqs:...:<queue name>` (or the literal ARN it was given)."""
        arn = queue_ref.get("Fn::Sub", "") if isinstance(queue_ref, dict) else str(queue_ref)
        name = arn.rsplit(":", 1)[-1]
        if name not in self.data.queues:
            raise ValueError(f"app.py consumes queue {name!r}, which chalicelib/resources.py does not declare")
        return self.data.queues[name]

    def _schedule_rule(self, cfn: Any, fn: WiredFunction, event_name: str, expression: str) -> None:
        function = lambda_.Function.from_function_attributes(
            self.stack, f"{fn.logical_id}Ref", function_arn=cfn.get_att("Arn").to_string(), same_environment=True,
        )
        sweeper = fn.logical_id == SWEEPER  # the next minute's sweep is its retry
        target = (targets.LambdaFunction(function, retry_attempts=0,
                                         max_event_age=Duration.seconds(SWEEPER_MAX_EVENT_AGE_SECONDS)) if sweeper
                  else targets.LambdaFunction(function, retry_attempts=2, max_event_age=Duration.minutes(10)))
        events.Rule(
            self.stack, f"{event_name}Rule",
            description=f"fleetrun {self.settings.stage}: {fn.handler} on {expression}",
            schedule=events.Schedule.expression(expression),
            targets=[target],
        )

    def _one_sweeper_at_a_time(self, cfn: Any) -> None:
        """Reserved concurrency 1: two sweeps never race over the same due work. EventBridge
        invokes asynchronously; Lambda would retry a failed or throttled sweep twice and keep a
        throttled event for up to 6 h: no retries, and an event a minute old is dropped."""
        cfn.add_property_override("ReservedConcurrentExecutions", 1)
        lambda_.CfnEventInvokeConfig(
            self.stack, f"{SWEEPER}EventInvokeConfig", function_name=cfn.ref, qualifier="$LATEST",
            maximum_retry_attempts=0, maximum_event_age_in_seconds=SWEEPER_MAX_EVENT_AGE_SECONDS,
        )

    # --- APIs --------------------------------------------------------------------------------
    def _api_gateway_logging_role(self) -> apigateway.CfnAccount:
        """API Gateway writes access logs (REST and WebSocket) with the account's CloudWatch role,
        one per account and region: set here, kept when the stack goes (other APIs may use it)."""
        role = iam.Role(self.stack, "ApiGatewayCloudWatchRole",
                        assumed_by=iam.ServicePrincipal("apigateway.amazonaws.com"),
                        managed_policies=[iam.ManagedPolicy.from_aws_managed_policy_name(
                            "service-role/AmazonAPIGatewayPushToCloudWatchLogs")])
        role.apply_removal_policy(RemovalPolicy.RETAIN)
        account = apigateway.CfnAccount(self.stack, "ApiGatewayAccount", cloud_watch_role_arn=role.role_arn)
        account.apply_removal_policy(RemovalPolicy.RETAIN)
        return account

    def _access_log_group(self, name: str) -> logs.CfnLogGroup:
        group = logs.CfnLogGroup(self.stack, f"{name}AccessLogGroup",
                                 log_group_name=f"/fleetrun/{self.settings.stage}/{name}-access",
                                 retention_in_days=self.settings.log_retention_days)
        group.apply_removal_policy(RemovalPolicy.RETAIN if self.settings.is_prod else RemovalPolicy.DESTROY)
        return group

    def _configure_rest_api(self) -> None:
        api = self.chalice.get_resource(REST_API)
        api.add_property_override("Name", self.rest_api_name)
        api.add_property_override("TracingEnabled", True)
        api.add_property_override("AccessLogSetting", {"DestinationArn": self._access_log_group("RestApi").attr_arn,
                                                       "Format": REST_ACCESS_LOG_FORMAT})
        api.add_resource_dependency(self.api_logging_role)  # the account's role first, or the stage refuses access logs
        api.add_property_override("MethodSettings", [{
            "ResourcePath": "/*",
            "HttpMethod": "*",
            "ThrottlingRateLimit": self.settings.throttle_rate,
            "ThrottlingBurstLimit": self.settings.throttle_burst,
            "MetricsEnabled": True,
        }])
        # API Gateway's own answers (unknown path, other method, throttling, ...) as contract errors
        definition = self.sam["Resources"][REST_API]["Properties"]["DefinitionBody"]
        api.add_property_override(rest_api.override_path("DefinitionBody", rest_api.GATEWAY_RESPONSES),
                                  rest_api.gateway_responses())
        for path, operations in definition["paths"].items():
            api.add_property_override(rest_api.override_path("DefinitionBody", "paths", path, rest_api.ANY_METHOD),
                                      rest_api.method_not_allowed(rest_api.methods_of(operations)))

    def _configure_websocket_api(self) -> None:
        stage = self.chalice.get_resource(WEBSOCKET_STAGE)
        stage.add_property_override("DefaultRouteSettings", {
            "ThrottlingRateLimit": self.settings.ws_throttle_rate,
            "ThrottlingBurstLimit": self.settings.ws_throttle_burst,
        })
        stage.add_property_override("AccessLogSettings", {
            "DestinationArn": self._access_log_group("WebSocketApi").attr_arn,
            "Format": WEBSOCKET_ACCESS_LOG_FORMAT,
        })
        stage.add_resource_dependency(self.api_logging_role)

    def _websocket_statements(self) -> list[iam.PolicyStatement]:
        if not self.has_websocket:
            return []
        # POST pushes; DELETE closes a connection whose token expired (services/realtime/expiry.py)
        return [iam.PolicyStatement(
            sid="PostToWebSocketConnections",
            actions=["execute-api:ManageConnections"],
            resources=[self.stack.format_arn(
                service="execute-api", resource=self.websocket_api_id,
                resource_name=f"{self.api_gateway_stage}/{method}/@connections/*",
            ) for method in ("POST", "DELETE")],
        )]

    @property
    def rest_api_name(self) -> str:
        return self.settings.prefix

    @property
    def api_gateway_stage(self) -> str:
        return str(self.sam["Resources"][REST_API]["Properties"]["StageName"])

    @property
    def api_url(self) -> str:
        return self.chalice.sam_template.get_output("EndpointURL").value  # type: ignore[no-any-return]

    @property
    def websocket_url(self) -> str:
        return self.chalice.sam_template.get_output("WebsocketConnectEndpointURL").value  # type: ignore[no-any-return]

    @property
    def websocket_api_id(self) -> str:
        return self.chalice.get_resource(WEBSOCKET_API).ref  # type: ignore[no-any-return]

    @property
    def websocket_stage(self) -> str:
        return str(self.sam["Resources"][WEBSOCKET_STAGE]["Properties"]["StageName"])

    @property
    def websocket_management_endpoint(self) -> str:
        return Fn.sub("https://${Api}.execute-api.${AWS::Region}.${AWS::URLSuffix}/" + self.websocket_stage,
                      {"Api": self.websocket_api_id})

    def function_name(self, logical_id: str) -> str:
        return self.chalice.get_resource(logical_id).ref  # type: ignore[no-any-return]


def _packaged_template(chalice: Chalice) -> dict[str, Any]:
    """The SAM template `chalice package` wrote (chalice 1.34's construct keeps it in `_sam_package_dir`)."""
    path = Path(chalice._sam_package_dir) / "sam.json"
    return json.loads(path.read_text())  # type: ignore[no-any-return]
