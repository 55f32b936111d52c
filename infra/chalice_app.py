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
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from chalice.cdk import Chalice

from infra import iam_policies, rest_api
from infra.data import AppQueue, DataStores
from infra.packaging import ROOT, stage_config
from infra.settings import StageSettings

REPORT_BATCH_ITEM_FAILURES = ["ReportBatchItemFailures"]
SERVERLESS_FUNCTION = "AWS::Serverless::Function"
#: logical ids Chalice gives the API and WebSocket resources
REST_API, WEBSOCKET_API, WEBSOCKET_STAGE = "RestAPI", "WebsocketAPI", "WebsocketAPIStage"


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
            return iam_policies.consume_queue(queue.queue)
        if kind == "DynamoDB":
            cfn.add_property_override(f"{path}.Stream", self.data.table.table_stream_arn)
            cfn.add_property_override(f"{path}.FunctionResponseTypes", REPORT_BATCH_ITEM_FAILURES)
            cfn.add_property_override(f"{path}.BisectBatchOnFunctionError", True)
            cfn.add_property_override(f"{path}.MaximumRetryAttempts", self.settings.stream_max_retries)
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
        events.Rule(
            self.stack, f"{event_name}Rule",
            description=f"fleetrun {self.settings.stage}: {fn.handler} on {expression}",
            schedule=events.Schedule.expression(expression),
            targets=[targets.LambdaFunction(function, retry_attempts=2, max_event_age=Duration.minutes(10))],
        )

    # --- APIs --------------------------------------------------------------------------------
    def _configure_rest_api(self) -> None:
        api = self.chalice.get_resource(REST_API)
        api.add_property_override("Name", self.rest_api_name)
        api.add_property_override("TracingEnabled", True)
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
