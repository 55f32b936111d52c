"""How infra/ wires another app (tests/infra/fixture_app/app.py) with settings the real stacks
are not synthesized with: an external OIDC issuer instead of Cognito, Harbor image sync, and a
different set of queue consumers. (The WebSocket wiring is checked on the real app in
test_template.py: app.py has @app.on_ws_* handlers.)"""

from __future__ import annotations

from typing import Any

import pytest

from tests.infra import cfn
from tests.infra.contexts import FIXTURE_AUDIENCE, FIXTURE_HARBOR_SECRETS, FIXTURE_HARBOR_URL, FIXTURE_ISSUER

pytestmark = [pytest.mark.infra, pytest.mark.timeout(1200)]


@pytest.fixture(scope="module")
def template(synthesized_fixture_app) -> dict[str, Any]:
    print(f"\nsynthesized the fixture app in {synthesized_fixture_app.seconds:.1f} s")
    return synthesized_fixture_app.templates["dev"]


def test_each_queue_consumer_gets_its_queue_arn_partial_batches_and_receive_rights(template):
    ids = cfn.queue_ids(template)
    consumers = {fn: cfn.target(props["Queue"]) for fn, _, props in cfn.events(template, "SQS")}
    assert consumers == {
        "DispatchWorker": ids["fleetrun-dispatch"],
        "IntakeWorker": ids["fleetrun-intake"],
        "NotifyWorker": ids["fleetrun-notify"],
    }
    for _, _, props in cfn.events(template, "SQS"):
        assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    roles = {cfn.target(fn["Properties"]["Role"]): name for name, fn in cfn.functions(template).items()}
    receivers = {roles[owner]: cfn.target(s["Resource"]) for owner, s in cfn.identity_statements(template)
                 if "sqs:ReceiveMessage" in cfn.as_list(s["Action"])}
    assert receivers == consumers


def test_external_oidc_issuer_replaces_cognito(template):
    assert not cfn.resources(template, "AWS::Cognito::UserPool")
    for fn in cfn.functions(template).values():
        env = fn["Properties"]["Environment"]["Variables"]
        assert env["FLEETRUN_OIDC_ISSUER"] == FIXTURE_ISSUER
        assert env["FLEETRUN_OIDC_AUDIENCE"] == FIXTURE_AUDIENCE
    assert "UserPoolId" not in template["Outputs"]
    assert template["Outputs"]["OidcIssuer"]["Value"] == FIXTURE_ISSUER


def test_harbor_settings_reach_every_function_which_may_read_those_two_secrets_only(template):
    for fn in cfn.functions(template).values():
        env = fn["Properties"]["Environment"]["Variables"]
        assert env["FLEETRUN_HARBOR_URL"] == FIXTURE_HARBOR_URL
        assert env["FLEETRUN_HARBOR_ROBOT_NAME"] == "robot$sync"
        secrets = (env["FLEETRUN_HARBOR_ROBOT_SECRET_ARN"], env["FLEETRUN_HARBOR_WEBHOOK_SECRET_ARN"])
        assert secrets == FIXTURE_HARBOR_SECRETS
    reading = [s for _, s in cfn.identity_statements(template)
               if any(a.startswith("secretsmanager:") for a in cfn.as_list(s["Action"]))]
    # besides the two Harbor secrets, only the stack's own cursor-signing key
    cursor = [s for s in reading if s.get("Sid") == "CursorSecret"]
    assert len(cursor) == 1
    assert cursor[0]["Resource"]["Ref"].startswith("DataCursorSecret")
    assert [s for s in reading if s not in cursor] == [
        {"Sid": "ReadHarborSecrets", "Action": "secretsmanager:GetSecretValue", "Effect": "Allow",
         "Resource": list(FIXTURE_HARBOR_SECRETS)}]
