"""One stage of fleetrun: data stores, identity, the Chalice app, schedules, alarms, outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aws_cdk import CfnOutput, Stack, Tags
from aws_cdk import aws_iam as iam
from constructs import Construct

from infra import iam_policies
from infra.alarms import Alarms
from infra.chalice_app import ChaliceApp
from infra.data import DataStores, queue_env_name
from infra.identity import Identity
from infra.packaging import ROOT
from infra.schedules import UserSchedules
from infra.settings import StageSettings

INTAKE_QUEUE = "fleetrun-intake"


class FleetrunStack(Stack):
    """The stack's construct id is the stage name: `chalice.cdk.Chalice` takes its stage from it."""

    def __init__(self, scope: Construct, settings: StageSettings, source_dir: Path = ROOT, **kwargs: Any) -> None:
        super().__init__(scope, settings.stage, stack_name=settings.prefix,
                         description=f"fleetrun ({settings.stage}): serverless task orchestration", **kwargs)
        Tags.of(self).add("app", "fleetrun")
        Tags.of(self).add("stage", settings.stage)
        self.settings = settings
        self.data = DataStores(self, "Data", settings)
        self.identity = Identity(self, "Identity", settings)
        self.schedules = UserSchedules(self, "UserSchedules", settings, self.data.queues[INTAKE_QUEUE])
        self.app = ChaliceApp(self, settings, self.data, self._environment(),
                              api_only_statements=self.schedules.api_statements(), source_dir=source_dir,
                              function_statements={"IntakeWorker": self.schedules.intake_worker_statements(),
                                                   **self._notify_statements()})
        self.alarms = Alarms(self, "Alarms", settings, self.data, self.app)
        self._outputs()

    def _environment(self) -> dict[str, str]:
        """What chalicelib/config.py reads (POWERTOOLS_* come from .chalice/config.json)."""
        s, data = self.settings, self.data
        env = {
            "FLEETRUN_TABLE": data.table.table_name,
            "FLEETRUN_OUTPUTS_BUCKET": data.outputs_bucket.bucket_name,
            "FLEETRUN_KMS_KEY_ID": data.key.key_arn,
            "FLEETRUN_CURSOR_SECRET_ARN": data.cursor_secret.secret_arn,
            "FLEETRUN_OIDC_ISSUER": self.identity.issuer,
            "FLEETRUN_OIDC_AUDIENCE": self.identity.audience,
            "FLEETRUN_LEASE_SECONDS": str(s.lease_seconds),
            "FLEETRUN_RATE_LIMIT": str(s.rate_limit),
            "FLEETRUN_RETENTION_DAYS": str(s.retention_days),
            "FLEETRUN_INTAKE_PRODUCERS": s.intake_producers,
            "POWERTOOLS_SERVICE_NAME": "fleetrun",
            "POWERTOOLS_METRICS_NAMESPACE": "Fleetrun",
        }
        env.update({queue_env_name(q.spec): q.queue.queue_url for q in data.queues.values()})
        env.update(self.schedules.environment())
        env.update(s.harbor_environment)
        env.update({name: value for name, value in (
            ("FLEETRUN_NOTIFY_EMAIL_SENDER", s.notify_email_sender), ("FLEETRUN_DASHBOARD_URL", s.dashboard_url),
        ) if value})
        return env

    def _notify_statements(self) -> dict[str, list[iam.PolicyStatement]]:
        """The notify worker may send e-mail from the configured sender (nothing else may)."""
        sender = self.settings.notify_email_sender
        return {"NotifyWorker": [iam_policies.send_email(self, sender)]} if sender else {}

    def _outputs(self) -> None:
        CfnOutput(self, "ApiUrl", value=self.app.api_url, description="HTTPS API (base of /v1/...)")
        if self.app.has_websocket:
            CfnOutput(self, "WebSocketUrl", value=self.app.websocket_url, description="WebSocket API")
        CfnOutput(self, "TableName", value=self.data.table.table_name)
        CfnOutput(self, "OidcIssuer", value=self.identity.issuer)
        CfnOutput(self, "OidcAudience", value=self.identity.audience)
        if self.identity.user_pool is not None and self.identity.client is not None:
            CfnOutput(self, "UserPoolId", value=self.identity.user_pool.user_pool_id)
            CfnOutput(self, "UserPoolClientId", value=self.identity.client.user_pool_client_id)
        CfnOutput(self, "AlarmTopicArn", value=self.alarms.topic.topic_arn)
        CfnOutput(self, "ScheduleGroupName", value=str(self.schedules.group.name))
        intake = self.data.queues[INTAKE_QUEUE]
        CfnOutput(self, "IntakeQueueUrl", value=intake.queue.queue_url,
                  description="automation sends POST /v1/tasks bodies plus owner and idempotency_key here")
        CfnOutput(self, "IntakeDeadLetterQueueUrl", value=intake.dlq.queue_url,
                  description="invalid intake messages, with the reason in their message attributes")
        CfnOutput(self, "OutputsBucketName", value=self.data.outputs_bucket.bucket_name)
