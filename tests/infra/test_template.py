"""The synthesized stacks (`python infra/app.py -c stage=dev,prod`) have what the issue asks for.

Each test names the item of the issue it covers; `cfn.py` reads the parsed template, CDK's
`assertions.Template` checks shapes.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from aws_cdk.assertions import Match, Template

from chalicelib import resources
from infra.settings import FUNCTION_MEMORY_MB, SQS_MAX_CONCURRENCY, SWEEPER_MAX_EVENT_AGE_SECONDS
from tests.infra import cfn
from tests.infra.contexts import NOTIFY_SENDER

pytestmark = [pytest.mark.infra, pytest.mark.timeout(1200)]
STAGES = ["dev", "prod"]
REQUIRED_ENV = [
    "FLEETRUN_TABLE", "FLEETRUN_DISPATCH_QUEUE_URL", "FLEETRUN_OUTPUTS_BUCKET", "FLEETRUN_KMS_KEY_ID",
    "FLEETRUN_CURSOR_SECRET_ARN",
    "FLEETRUN_OIDC_ISSUER", "FLEETRUN_OIDC_AUDIENCE", "FLEETRUN_LEASE_SECONDS", "FLEETRUN_RATE_LIMIT",
    "FLEETRUN_RETENTION_DAYS",
    "POWERTOOLS_SERVICE_NAME", "POWERTOOLS_METRICS_NAMESPACE",
]
APP_QUEUES = ["fleetrun-dispatch", "fleetrun-work", "fleetrun-notify", "fleetrun-intake"]


@pytest.fixture(scope="module")
def templates(synthesized) -> dict[str, dict[str, Any]]:
    print(f"\nsynthesized dev and prod in {synthesized.seconds:.1f} s")
    return synthesized.templates


@pytest.fixture(scope="module")
def cdk_templates(templates) -> dict[str, Any]:
    return {stage: Template.from_json(t) for stage, t in templates.items()}


def _table(template: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    [(logical_id, table)] = cfn.resources(template, "AWS::DynamoDB::Table").items()
    return logical_id, table


# --- table ---------------------------------------------------------------------------------
@pytest.mark.parametrize("stage", STAGES)
def test_table_keys_and_indexes_come_from_resources(templates, stage):
    # GIVEN the single source of truth
    expected = resources.table_definition(f"fleetrun-{stage}")
    # WHEN the stack's table is read
    _, table = _table(templates[stage])
    props = table["Properties"]
    # THEN keys, attributes, indexes and billing are the same
    assert props["TableName"] == expected["TableName"]
    assert props["KeySchema"] == expected["KeySchema"]
    assert sorted(props["AttributeDefinitions"], key=str) == sorted(expected["AttributeDefinitions"], key=str)
    assert sorted(props["GlobalSecondaryIndexes"], key=lambda i: i["IndexName"]) == sorted(
        expected["GlobalSecondaryIndexes"], key=lambda i: i["IndexName"])
    assert props["BillingMode"] == expected["BillingMode"]


@pytest.mark.parametrize("stage", STAGES)
def test_table_stream_ttl_and_point_in_time_recovery(cdk_templates, stage):
    assert resources.STREAM_VIEW_TYPE == "NEW_AND_OLD_IMAGES"
    cdk_templates[stage].has_resource_properties("AWS::DynamoDB::Table", {
        "StreamSpecification": {"StreamViewType": "NEW_AND_OLD_IMAGES"},
        "TimeToLiveSpecification": {"AttributeName": resources.TTL_ATTRIBUTE_NAME, "Enabled": True},
        "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
    })


def test_prod_table_is_protected_and_retained(cdk_templates, templates):
    cdk_templates["prod"].has_resource("AWS::DynamoDB::Table", {
        "Properties": Match.object_like({"DeletionProtectionEnabled": True}),
        "DeletionPolicy": "Retain",
        "UpdateReplacePolicy": "Retain",
    })
    # dev can be torn down
    _, dev = _table(templates["dev"])
    assert dev["Properties"].get("DeletionProtectionEnabled") is False
    assert dev["DeletionPolicy"] == "Delete"


def test_prod_keeps_dead_letters_key_bucket_and_users(templates):
    prod = templates["prod"]
    kept = {k for k, v in prod["Resources"].items() if v.get("DeletionPolicy") == "Retain"}
    dlqs = {k for k, v in cfn.resources(prod, "AWS::SQS::Queue").items() if v["Properties"]["QueueName"].endswith(
        "-dlq-prod")}
    assert dlqs
    assert dlqs <= kept
    for kind in ("AWS::KMS::Key", "AWS::S3::Bucket", "AWS::Cognito::UserPool"):
        assert set(cfn.resources(prod, kind)) <= kept, kind


@pytest.mark.parametrize("stage", STAGES)
def test_live_output_objects_expire_with_their_chunk_items(cdk_templates, stage):
    # live chunks with their items (retention + 1), final outputs with their runs (retention + 7)
    cdk_templates[stage].has_resource_properties("AWS::S3::Bucket", {
        "LifecycleConfiguration": {"Rules": [
            Match.object_like({"Prefix": "outputs/live/", "ExpirationInDays": 91, "Status": "Enabled"}),
            Match.object_like({"Prefix": "outputs/", "ExpirationInDays": 97, "Status": "Enabled"}),
        ]},
    })


# --- queues --------------------------------------------------------------------------------
@pytest.mark.parametrize("stage", STAGES)
def test_every_queue_has_a_dead_letter_queue_with_redrive(templates, stage):
    # GIVEN the specs in chalicelib/resources.py
    specs = {spec.name: spec for spec in resources.QUEUES}
    assert sorted(specs) == sorted(APP_QUEUES)
    template = templates[stage]
    queues = cfn.resources(template, "AWS::SQS::Queue")
    ids = cfn.queue_ids(template)
    for name, spec in specs.items():
        # WHEN the queue and its DLQ are read
        queue = queues[ids[name]]["Properties"]
        # THEN it redrives to its own DLQ after the spec's receive count
        redrive = queue["RedrivePolicy"]
        assert cfn.target(redrive["deadLetterTargetArn"]) == ids[spec.dlq_name], name
        assert redrive["maxReceiveCount"] == spec.max_receive_count
        assert queue["VisibilityTimeout"] == spec.visibility_timeout
        assert queue["QueueName"] == f"{name}-{stage}"
    # every queue that is not itself a dead-letter queue has one
    for logical_id, queue in queues.items():
        if not queue["Properties"]["QueueName"].endswith(f"-dlq-{stage}"):
            assert "RedrivePolicy" in queue["Properties"], logical_id


def test_queues_are_encrypted_and_refuse_plain_http(templates):
    template = templates["dev"]
    queues = cfn.resources(template, "AWS::SQS::Queue")
    for queue in queues.values():
        assert queue["Properties"]["SqsManagedSseEnabled"] is True
    protected = set()
    for policy in cfn.resources(template, "AWS::SQS::QueuePolicy").values():
        statements = policy["Properties"]["PolicyDocument"]["Statement"]
        if any(s["Effect"] == "Deny" and s.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport") == "false"
               for s in statements):
            protected |= {cfn.target(q) for q in policy["Properties"]["Queues"]}
    assert protected == set(queues)


# --- event sources -------------------------------------------------------------------------
@pytest.mark.parametrize("stage", STAGES)
def test_every_sqs_and_stream_source_reports_batch_item_failures(templates, stage):
    template = templates[stage]
    sources = list(cfn.events(template, "SQS")) + list(cfn.events(template, "DynamoDB")) + list(
        cfn.events(template, "Kinesis"))
    assert {fn for fn, _, _ in sources} >= {"DispatchWorker", "StreamAggregator"}
    for fn, event, props in sources:
        assert props.get("FunctionResponseTypes") == ["ReportBatchItemFailures"], f"{fn}.{event}"
    for mapping in cfn.resources(template, "AWS::Lambda::EventSourceMapping").values():
        assert mapping["Properties"].get("FunctionResponseTypes") == ["ReportBatchItemFailures"]


def test_sqs_sources_use_the_real_queue_arn_and_batch_size(templates):
    template = templates["dev"]
    ids = cfn.queue_ids(template)
    specs = {"DispatchWorker": resources.DISPATCH_QUEUE, "IntakeWorker": resources.INTAKE_QUEUE,
             "WorkWorker": resources.WORK_QUEUE, "NotifyWorker": resources.NOTIFY_QUEUE}
    consumers = {fn: props for fn, _, props in cfn.events(template, "SQS")}
    assert set(consumers) == set(specs)
    for fn, spec in specs.items():
        props = consumers[fn]
        assert props["Queue"] == {"Fn::GetAtt": [ids[spec.name], "Arn"]}
        assert props["BatchSize"] == spec.batch_size
        # a backlog on one queue cannot take the account's concurrency from the API
        assert props["ScalingConfig"] == {"MaximumConcurrency": SQS_MAX_CONCURRENCY[spec.name]}
        assert 2 <= SQS_MAX_CONCURRENCY[spec.name] <= 1000
        timeout = cfn.functions(template)[fn]["Properties"]["Timeout"]
        assert spec.visibility_timeout >= timeout
    # a Harbor sync may take minutes: the work worker gets more than the default 120 s
    assert cfn.functions(template)["WorkWorker"]["Properties"]["Timeout"] == 600


@pytest.mark.parametrize("stage", STAGES)
def test_stream_source_is_the_tables_stream_with_bisect_retries_and_on_failure(templates, stage):
    template = templates[stage]
    table_id, _ = _table(template)
    stream_dlq = cfn.queue_ids(template)["fleetrun-stream-dlq"]
    sources = list(cfn.events(template, "DynamoDB"))
    # the stream's two readers (DynamoDB Streams serves two per shard): counting, and telling
    assert sorted(fn for fn, _, _ in sources) == ["StreamAggregator", "StreamNotifier"]
    for _, _, props in sources:
        # the placeholder ARN of app.py is gone
        assert props["Stream"] == {"Fn::GetAtt": [table_id, "StreamArn"]}
        assert props["BisectBatchOnFunctionError"] is True
        assert 0 < props["MaximumRetryAttempts"] <= 10
        assert cfn.target(props["DestinationConfig"]["OnFailure"]["Destination"]) == stream_dlq
        assert props["BatchSize"] == resources.STREAM_BATCH_SIZE
        assert props["StartingPosition"] == "TRIM_HORIZON"
        # a record is given up (to the stream DLQ) before the stream's 24 h trim drops it silently
        assert props["MaximumRecordAgeInSeconds"] == 6 * 3600
        assert props["ParallelizationFactor"] == 4
    # the counting reader fills its batches for up to a second: a task item's writes per second
    # are bounded by shards x parallelization, not by its node count
    windows = {fn: props.get("MaximumBatchingWindowInSeconds", 0) for fn, _, props in sources}
    assert windows == {"StreamAggregator": resources.AGGREGATOR_BATCHING_WINDOW_SECONDS, "StreamNotifier": 0}


# --- the Chalice app -----------------------------------------------------------------------
@pytest.mark.parametrize("stage", STAGES)
def test_every_function_has_its_own_role_environment_and_log_group(templates, stage):
    template = templates[stage]
    roles = cfn.resources(template, "AWS::IAM::Role")
    fns = cfn.functions(template)
    assert set(fns) == {"APIHandler", "DispatchWorker", "StreamAggregator", "StreamNotifier", "Sweep",
                        "ReconcileStatistics", "IntakeWorker", "WorkWorker", "SyncImagesDaily", "MonthlyUsageReport",
                        "NotifyWorker", "WebsocketConnect", "WebsocketMessage", "WebsocketDisconnect"}
    seen_roles = set()
    for name, fn in fns.items():
        props = fn["Properties"]
        role = cfn.target(props["Role"])
        assert role in roles, f"{name} runs with {props['Role']}"
        seen_roles.add(role)
        env = props["Environment"]["Variables"]
        assert set(REQUIRED_ENV) <= set(env), f"{name} lacks {set(REQUIRED_ENV) - set(env)}"
        assert env["FLEETRUN_TABLE"] == {"Ref": _table(template)[0]}
        assert props["Tracing"] == "Active"
        assert cfn.target(props["LoggingConfig"]["LogGroup"]) in cfn.resources(template, "AWS::Logs::LogGroup")
    assert len(seen_roles) == len(fns)


def test_schedules_are_eventbridge_rules(templates):
    template = templates["dev"]
    rules = {rule["Properties"]["ScheduleExpression"]: rule["Properties"]
             for rule in cfn.resources(template, "AWS::Events::Rule").values()}
    assert cfn.target(rules["rate(1 minute)"]["Targets"][0]["Arn"]) == "Sweep"
    assert cfn.target(rules["cron(17 3 * * ? *)"]["Targets"][0]["Arn"]) == "ReconcileStatistics"
    assert cfn.target(rules["cron(0 1 1 * ? *)"]["Targets"][0]["Arn"]) == "MonthlyUsageReport"
    for expression, rule in rules.items():
        assert rule["State"] == "ENABLED"
        if expression != "rate(1 minute)":
            assert rule["Targets"][0]["RetryPolicy"]["MaximumRetryAttempts"] >= 1
    # the sweeper is not retried: the next minute's sweep is its retry
    assert rules["rate(1 minute)"]["Targets"][0]["RetryPolicy"] == {
        "MaximumRetryAttempts": 0, "MaximumEventAgeInSeconds": SWEEPER_MAX_EVENT_AGE_SECONDS}
    # SAM would make rules of its own: the Schedule events are gone
    assert not list(cfn.events(template, "Schedule"))
    permitted = {(cfn.target(p["Properties"]["FunctionName"]), cfn.target(p["Properties"]["SourceArn"]))
                 for p in cfn.resources(template, "AWS::Lambda::Permission").values()
                 if p["Properties"]["Principal"] == "events.amazonaws.com"}
    rule_ids = {r["Properties"]["ScheduleExpression"]: k
                for k, r in cfn.resources(template, "AWS::Events::Rule").items()}
    assert permitted == {("Sweep", rule_ids["rate(1 minute)"]), ("ReconcileStatistics", rule_ids["cron(17 3 * * ? *)"]),
                         ("SyncImagesDaily", rule_ids["cron(0 2 * * ? *)"]),
                         ("MonthlyUsageReport", rule_ids["cron(0 1 1 * ? *)"])}


def test_user_schedules_have_a_group_and_a_role_that_only_feeds_intake(templates):
    template = templates["dev"]
    [group] = cfn.resources(template, "AWS::Scheduler::ScheduleGroup").values()
    assert group["Properties"]["Name"] == "fleetrun-dev"
    roles = cfn.resources(template, "AWS::IAM::Role")
    [(role_id, role)] = [(k, r) for k, r in roles.items()
                         if r["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]["Principal"].get("Service")
                         == "scheduler.amazonaws.com"]
    statements = [s for _, s in cfn.identity_statements({"Resources": {role_id: role}})]
    ids = cfn.queue_ids(template)
    assert statements == [{"Action": "sqs:SendMessage", "Effect": "Allow", "Resource": [
        {"Fn::GetAtt": [ids["fleetrun-intake"], "Arn"]}, {"Fn::GetAtt": [ids["fleetrun-intake-dlq"], "Arn"]}]}]
    env = cfn.functions(template)["APIHandler"]["Properties"]["Environment"]["Variables"]
    assert env["FLEETRUN_SCHEDULE_GROUP"] == "fleetrun-dev"
    assert cfn.target(env["FLEETRUN_SCHEDULER_ROLE_ARN"]) == role_id
    assert cfn.target(env["FLEETRUN_INTAKE_QUEUE_ARN"]) == ids["fleetrun-intake"]
    assert cfn.target(env["FLEETRUN_INTAKE_DLQ_ARN"]) == ids["fleetrun-intake-dlq"]
    assert cfn.target(env["FLEETRUN_INTAKE_DLQ_URL"]) == ids["fleetrun-intake-dlq"]


def test_only_the_api_manages_user_schedules_of_its_group_and_passes_only_the_scheduler_role(templates):
    template = templates["dev"]
    roles = {cfn.target(fn["Properties"]["Role"]): name for name, fn in cfn.functions(template).items()}
    scheduler_role = next(k for k, r in cfn.resources(template, "AWS::IAM::Role").items()
                          if r["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]["Principal"].get("Service")
                          == "scheduler.amazonaws.com")
    schedule_statements = [(roles.get(owner, owner), s) for owner, s in cfn.identity_statements(template)
                           if any(a.startswith("scheduler:") for a in cfn.as_list(s["Action"]))]
    [(owner, statement)] = schedule_statements
    assert owner == "APIHandler"
    assert set(cfn.as_list(statement["Action"])) == {
        "scheduler:CreateSchedule", "scheduler:DeleteSchedule", "scheduler:GetSchedule"}
    [resource] = cfn.as_list(statement["Resource"])
    assert ":schedule/fleetrun-dev/*" in json.dumps(resource)
    passes = [(roles.get(owner, owner), s) for owner, s in cfn.identity_statements(template)
              if "iam:PassRole" in cfn.as_list(s["Action"])]
    assert [(owner, [cfn.target(r) for r in cfn.as_list(s["Resource"])]) for owner, s in passes] == [
        ("APIHandler", [scheduler_role])]
    assert passes[0][1]["Condition"] == {"StringEquals": {"iam:PassedToService": "scheduler.amazonaws.com"}}


def test_only_the_intake_worker_and_the_scheduler_may_send_to_the_intake_dlq(templates):
    template = templates["dev"]
    ids = cfn.queue_ids(template)
    roles = {cfn.target(fn["Properties"]["Role"]): name for name, fn in cfn.functions(template).items()}
    senders = {roles.get(owner, owner) for owner, s in cfn.identity_statements(template)
               if "sqs:SendMessage" in cfn.as_list(s["Action"])
               and ids["fleetrun-intake-dlq"] in {cfn.target(r) for r in cfn.as_list(s["Resource"])}}
    scheduler_role = next(k for k, r in cfn.resources(template, "AWS::IAM::Role").items()
                          if r["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]["Principal"].get("Service")
                          == "scheduler.amazonaws.com")
    assert senders == {"IntakeWorker", scheduler_role}


@pytest.mark.parametrize("stage", STAGES)
def test_websocket_api_of_app_pys_on_ws_handlers_is_throttled_output_postable_and_alarmed(templates, stage):
    # GIVEN app.py's @app.on_ws_* handlers THEN the stack has their WebSocket API
    template = templates[stage]
    [_] = cfn.resources(template, "AWS::ApiGatewayV2::Api").values()
    [ws_stage] = cfn.resources(template, "AWS::ApiGatewayV2::Stage").values()
    settings = ws_stage["Properties"]["DefaultRouteSettings"]
    assert settings["ThrottlingRateLimit"] > 0
    assert settings["ThrottlingBurstLimit"] > 0
    assert str(template["Outputs"]["WebSocketUrl"]["Value"]["Fn::Sub"]).startswith("wss://${WebsocketAPI}")
    # AND only that API's connections may be posted to, by functions told its endpoint
    manage = [s for _, s in cfn.identity_statements(template) if s["Action"] == "execute-api:ManageConnections"]
    assert manage
    assert all("WebsocketAPI" in cfn.mentions(s["Resource"]) for s in manage)
    # (POST pushes; DELETE closes a connection whose token expired)
    granted = json.dumps([s["Resource"] for s in manage])
    assert "POST/@connections/*" in granted
    assert "DELETE/@connections/*" in granted
    for fn in cfn.functions(template).values():
        env = fn["Properties"]["Environment"]["Variables"]
        assert "WebsocketAPI" in cfn.mentions(env["FLEETRUN_WEBSOCKET_ENDPOINT"])
    # AND its integration errors raise an alarm
    alarms = [a["Properties"] for a in cfn.resources(template, "AWS::CloudWatch::Alarm").values()
              if a["Properties"]["MetricName"] == "IntegrationError"]
    assert len(alarms) == 1
    assert {d["Name"] for d in alarms[0]["Dimensions"]} == {"ApiId", "Stage"}


# --- identity, throttling, alarms, outputs -------------------------------------------------
def test_cognito_user_pool_issues_the_api_tokens(cdk_templates, templates):
    template = templates["dev"]
    [(pool_id, pool)] = cfn.resources(template, "AWS::Cognito::UserPool").items()
    assert pool["Properties"]["AdminCreateUserConfig"]["AllowAdminCreateUserOnly"] is True
    groups = {g["Properties"]["GroupName"] for g in cfn.resources(template, "AWS::Cognito::UserPoolGroup").values()}
    assert groups == {"admin", "operator", "viewer"}
    [(client_id, _)] = cfn.resources(template, "AWS::Cognito::UserPoolClient").items()
    for fn in cfn.functions(template).values():
        env = fn["Properties"]["Environment"]["Variables"]
        assert env["FLEETRUN_OIDC_ISSUER"] == {"Fn::GetAtt": [pool_id, "ProviderURL"]}
        assert env["FLEETRUN_OIDC_AUDIENCE"] == {"Ref": client_id}


@pytest.mark.parametrize(("stage", "rate", "burst"), [("dev", 50, 100), ("prod", 3000, 5000)])
def test_api_is_throttled(cdk_templates, stage, rate, burst):
    cdk_templates[stage].has_resource_properties("AWS::Serverless::Api", {
        "Name": f"fleetrun-{stage}",
        "StageName": stage,
        "MethodSettings": [Match.object_like({
            "ResourcePath": "/*", "HttpMethod": "*", "ThrottlingRateLimit": rate, "ThrottlingBurstLimit": burst,
        })],
    })


@pytest.mark.parametrize("stage", STAGES)
def test_api_gateways_own_answers_are_contract_errors_that_echo_nothing(templates, stage):
    # GIVEN the REST API's OpenAPI body
    [api] = cfn.resources(templates[stage], "AWS::Serverless::Api").values()
    body = api["Properties"]["DefinitionBody"]
    responses = body["x-amazon-apigateway-gateway-responses"]

    def answer(kind: str) -> tuple[int, str]:
        document = json.loads(responses[kind]["responseTemplates"]["application/json"])
        return responses[kind]["statusCode"], document["error"]["code"]

    # THEN an unknown path is a 404 not_found, with a bearer token too (INCOMPLETE_SIGNATURE)
    assert answer("MISSING_AUTHENTICATION_TOKEN") == answer("INCOMPLETE_SIGNATURE") == (404, "not_found")
    assert answer("DEFAULT_4XX") == (400, "validation_error")
    assert answer("DEFAULT_5XX") == (503, "service_unavailable")
    assert answer("THROTTLED") == (429, "rate_limited")
    assert responses["THROTTLED"]["responseParameters"] == {"gatewayresponse.header.Retry-After": "'1'"}
    # AND no template reads anything (no `$context.error.messageString`, no request parameter)
    assert not [kind for kind, response in responses.items() if "$" in json.dumps(response["responseTemplates"])]


@pytest.mark.parametrize("stage", STAGES)
def test_every_path_answers_a_method_it_lacks_with_405_and_allow(templates, stage):
    [api] = cfn.resources(templates[stage], "AWS::Serverless::Api").values()
    paths = api["Properties"]["DefinitionBody"]["paths"]
    assert "/v1/openapi" not in paths  # a `.` in a path is one key, not two levels
    for path, item in paths.items():
        methods = sorted(k.upper() for k in item if k in ("get", "put", "post", "delete", "patch", "head", "options"))
        integration = item["x-amazon-apigateway-any-method"]["x-amazon-apigateway-integration"]
        answer = integration["responses"]["default"]
        assert (integration["type"], answer["statusCode"]) == ("mock", "405"), path
        assert answer["responseParameters"] == {"method.response.header.Allow": f"'{', '.join(methods)}'"}, path
        document = json.loads(answer["responseTemplates"]["application/json"])
        assert document["error"] == {"code": "method_not_allowed", "allow": methods,
                                     "message": "this route does not have that method (allow: the methods it has)"}
    assert paths["/v1/tasks"]["x-amazon-apigateway-any-method"]["x-amazon-apigateway-integration"]["responses"][
        "default"]["responseParameters"]["method.response.header.Allow"] == "'GET, POST'"


@pytest.mark.parametrize("stage", STAGES)
def test_alarms_cover_dead_letters_stream_age_lambda_errors_throttles_and_api_5xx(templates, stage):
    template = templates[stage]
    [topic_id] = cfn.resources(template, "AWS::SNS::Topic")
    alarms = list(cfn.resources(template, "AWS::CloudWatch::Alarm").values())
    for alarm in alarms:
        assert [cfn.target(a) for a in alarm["Properties"]["AlarmActions"]] == [topic_id]

    def watched(metric: str) -> list[dict[str, Any]]:
        return [a["Properties"] for a in alarms if a["Properties"]["MetricName"] == metric]

    queue_names = {k: v["Properties"]["QueueName"] for k, v in cfn.resources(template, "AWS::SQS::Queue").items()}
    dlqs = {k for k, name in queue_names.items() if name.endswith(f"-dlq-{stage}")}
    assert len(dlqs) == len(APP_QUEUES) + 1  # + the stream's on-failure destination
    depth_targets = {cfn.target(d["Value"]) for a in watched("ApproximateNumberOfMessagesVisible")
                     for d in a["Dimensions"] if d["Name"] == "QueueName"}
    assert depth_targets == dlqs
    fns = set(cfn.functions(template))
    for metric in ("Errors", "Throttles"):
        assert {cfn.target(a["Dimensions"][0]["Value"]) for a in watched(metric)} == fns, metric
    ages = watched("IteratorAge")
    assert {cfn.target(age["Dimensions"][0]["Value"]) for age in ages} == {"StreamAggregator", "StreamNotifier"}
    assert {age["Statistic"] for age in ages} == {"Maximum"}
    [api] = watched("5XXError")
    assert {d["Name"]: d["Value"] for d in api["Dimensions"]} == {"ApiName": f"fleetrun-{stage}", "Stage": stage}


@pytest.mark.parametrize("stage", STAGES)
def test_outputs_api_url_and_table_name(templates, stage):
    outputs = templates[stage]["Outputs"]
    assert outputs["ApiUrl"]["Value"] == {
        "Fn::Sub": f"https://${{RestAPI}}.execute-api.${{AWS::Region}}.${{AWS::URLSuffix}}/{stage}/"}
    assert outputs["TableName"]["Value"] == {"Ref": _table(templates[stage])[0]}
    ids = cfn.queue_ids(templates[stage])
    assert outputs["IntakeQueueUrl"]["Value"] == {"Ref": ids["fleetrun-intake"]}
    assert outputs["IntakeDeadLetterQueueUrl"]["Value"] == {"Ref": ids["fleetrun-intake-dlq"]}


# --- least privilege -----------------------------------------------------------------------
@pytest.mark.parametrize("stage", STAGES)
def test_no_iam_statement_on_the_table_has_a_wildcard_action(templates, stage):
    template = templates[stage]
    table_id, _ = _table(template)
    on_table = [(owner, s) for owner, s in cfn.identity_statements(template)
                if table_id in cfn.mentions(s.get("Resource"))]
    assert on_table, "no statement grants anything on the table"
    for owner, statement in on_table:
        for action in cfn.as_list(statement["Action"]):
            assert "*" not in action, f"{owner}: {action}"
    # and no identity policy allows a wildcard action anywhere
    for owner, statement in cfn.identity_statements(template):
        if statement["Effect"] == "Allow":
            assert not any("*" in a for a in cfn.as_list(statement["Action"])), owner


@pytest.mark.parametrize("stage", STAGES)
def test_queue_statements_name_their_queues(templates, stage):
    template = templates[stage]
    queue_ids = set(cfn.resources(template, "AWS::SQS::Queue"))
    for owner, statement in cfn.identity_statements(template):
        if any(a.startswith("sqs:") for a in cfn.as_list(statement["Action"])):
            for resource in cfn.as_list(statement["Resource"]):
                assert cfn.target(resource) in queue_ids, f"{owner}: {resource}"


def test_only_consumers_may_receive_and_read_the_stream(templates):
    template = templates["dev"]
    ids = cfn.queue_ids(template)
    roles = {cfn.target(fn["Properties"]["Role"]): name for name, fn in cfn.functions(template).items()}

    def who(action: str) -> dict[str, set[str | None]]:
        found: dict[str, set[str | None]] = {}
        for owner, s in cfn.identity_statements(template):
            if action in cfn.as_list(s["Action"]):
                found.setdefault(roles.get(owner, owner), set()).update(
                    cfn.target(r) for r in cfn.as_list(s["Resource"]))
        return found

    assert who("sqs:ReceiveMessage") == {"DispatchWorker": {ids["fleetrun-dispatch"]},
                                         "IntakeWorker": {ids["fleetrun-intake"]},
                                         "WorkWorker": {ids["fleetrun-work"]},
                                         "NotifyWorker": {ids["fleetrun-notify"]}}
    assert set(who("dynamodb:GetRecords")) == {"StreamAggregator", "StreamNotifier"}
    table_actions = next(set(cfn.as_list(s["Action"])) for _, s in cfn.identity_statements(template)
                         if s.get("Sid") == "TableItems")
    assert table_actions == {
        "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:Query",
        "dynamodb:Scan", "dynamodb:BatchGetItem", "dynamodb:BatchWriteItem", "dynamodb:ConditionCheckItem",
    }


@pytest.mark.parametrize("stage", STAGES)
def test_without_harbor_settings_the_only_secret_read_is_the_generated_cursor_secret(templates, stage):
    template = templates[stage]
    (secret_id, secret), = cfn.resources(template, "AWS::SecretsManager::Secret").items()
    assert secret["Properties"]["GenerateSecretString"]["PasswordLength"] >= 32  # generated, never a literal
    readable = set()
    for owner, statement in cfn.identity_statements(template):
        actions = cfn.as_list(statement["Action"])
        if any(a.startswith("secretsmanager:") for a in actions):
            assert actions == ["secretsmanager:GetSecretValue"], owner
            readable.update(cfn.target(r) for r in cfn.as_list(statement["Resource"]))
    assert readable == {secret_id}
    for fn in cfn.functions(template).values():
        assert cfn.target(fn["Properties"]["Environment"]["Variables"]["FLEETRUN_CURSOR_SECRET_ARN"]) == secret_id


# --- notifications -------------------------------------------------------------------------
def test_only_the_notify_worker_may_send_email_and_only_from_the_configured_sender(templates):
    # prod is synthesized with -c prod:notifyEmailSender=… (conftest), dev without
    def senders(template: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
        roles = {cfn.target(fn["Properties"]["Role"]): name for name, fn in cfn.functions(template).items()}
        found: dict[str, list[dict[str, Any]]] = {}
        for owner, statement in cfn.identity_statements(template):
            if "ses:SendEmail" in cfn.as_list(statement["Action"]):
                found.setdefault(roles.get(owner, owner), []).append(statement)
        return found

    assert senders(templates["dev"]) == {}
    [statement] = senders(templates["prod"])["NotifyWorker"]
    assert statement["Condition"] == {"StringEquals": {"ses:FromAddress": NOTIFY_SENDER}}
    env = cfn.functions(templates["prod"])["NotifyWorker"]["Properties"]["Environment"]["Variables"]
    assert env["FLEETRUN_NOTIFY_EMAIL_SENDER"] == NOTIFY_SENDER
    assert cfn.target(env["FLEETRUN_NOTIFY_QUEUE_URL"]) == cfn.queue_ids(templates["prod"])["fleetrun-notify"]
    assert "FLEETRUN_NOTIFY_EMAIL_SENDER" not in cfn.functions(templates["dev"])["NotifyWorker"]["Properties"][
        "Environment"]["Variables"]


# --- production settings (issue 17) --------------------------------------------------------
@pytest.mark.parametrize("stage", STAGES)
def test_one_sweeper_at_a_time_and_lambda_never_retries_it(templates, stage):
    template = templates[stage]
    sweep = cfn.functions(template)["Sweep"]["Properties"]
    assert sweep["ReservedConcurrentExecutions"] == 1
    [config] = cfn.resources(template, "AWS::Lambda::EventInvokeConfig").values()
    props = config["Properties"]
    assert cfn.target(props["FunctionName"]) == "Sweep"
    assert props["Qualifier"] == "$LATEST"
    assert props["MaximumRetryAttempts"] == 0
    assert props["MaximumEventAgeInSeconds"] == SWEEPER_MAX_EVENT_AGE_SECONDS
    # no other function is limited
    others = [name for name, fn in cfn.functions(template).items()
              if "ReservedConcurrentExecutions" in fn["Properties"] and name != "Sweep"]
    assert others == []


@pytest.mark.parametrize("stage", STAGES)
def test_dispatch_and_stream_readers_get_more_memory(templates, stage):
    fns = cfn.functions(templates[stage])
    assert {name: fns[name]["Properties"]["MemorySize"] for name in FUNCTION_MEMORY_MB} == {
        "DispatchWorker": 1769, "StreamAggregator": 1024, "StreamNotifier": 1024}
    assert fns["APIHandler"]["Properties"]["MemorySize"] == 512


@pytest.mark.parametrize("stage", STAGES)
def test_both_apis_write_json_access_logs_to_retained_log_groups(templates, stage):
    template = templates[stage]
    groups = cfn.resources(template, "AWS::Logs::LogGroup")
    [api] = cfn.resources(template, "AWS::Serverless::Api").values()
    [ws_stage] = cfn.resources(template, "AWS::ApiGatewayV2::Stage").values()
    for setting in (api["Properties"]["AccessLogSetting"], ws_stage["Properties"]["AccessLogSettings"]):
        group = cfn.target(setting["DestinationArn"])
        assert group in groups
        assert groups[group]["Properties"]["LogGroupName"].startswith(f"/fleetrun/{stage}/")
        assert groups[group]["Properties"]["RetentionInDays"] == (90 if stage == "prod" else 14)
        fields = json.loads(setting["Format"])
        assert fields["requestId"] == "$context.requestId"
        assert fields["status"] == "$context.status"
        assert not [v for v in fields.values() if "authorizer" in v or "header" in v.lower()]  # no token
    # AND API Gateway may write them (the account's CloudWatch role), before either stage exists
    [(account_id, account)] = cfn.resources(template, "AWS::ApiGateway::Account").items()
    role = cfn.target(account["Properties"]["CloudWatchRoleArn"])
    assert "AmazonAPIGatewayPushToCloudWatchLogs" in json.dumps(
        cfn.resources(template, "AWS::IAM::Role")[role]["Properties"]["ManagedPolicyArns"])
    assert account_id in cfn.as_list(api.get("DependsOn"))
    assert account_id in cfn.as_list(ws_stage.get("DependsOn"))
