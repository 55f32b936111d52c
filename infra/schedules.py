"""EventBridge Scheduler for user schedules (`POST /v1/schedules`): a group of its own and the role
the schedules assume to put their firing message on the intake queue (dead letters to the intake DLQ),
and what the API and the intake worker may do with them."""

from __future__ import annotations

from aws_cdk import Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_scheduler as scheduler
from constructs import Construct

from infra.data import AppQueue
from infra.settings import StageSettings


class UserSchedules(Construct):
    def __init__(self, scope: Construct, construct_id: str, settings: StageSettings, intake: AppQueue) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        self.group = scheduler.CfnScheduleGroup(self, "Group", name=settings.prefix)
        self.role = iam.Role(
            self, "Role",
            assumed_by=iam.ServicePrincipal("scheduler.amazonaws.com", conditions={
                "StringEquals": {"aws:SourceAccount": stack.account},
            }),
            description=f"fleetrun {settings.stage}: user schedules put task requests on the intake queue",
            inline_policies={"Intake": iam.PolicyDocument(statements=[iam.PolicyStatement(
                actions=["sqs:SendMessage"], resources=[intake.queue.queue_arn, intake.dlq.queue_arn],
            )])},
        )
        self.intake = intake

    def api_statements(self) -> list[iam.PolicyStatement]:
        """What the API function needs to manage the schedules of this group."""
        stack = Stack.of(self)
        return [
            iam.PolicyStatement(
                sid="UserSchedules",
                # what chalicelib/services/schedules.py calls (listing reads the table, not the scheduler)
                actions=["scheduler:CreateSchedule", "scheduler:DeleteSchedule", "scheduler:GetSchedule"],
                resources=[stack.format_arn(service="scheduler", resource="schedule",
                                            resource_name=f"{self.group.name}/*")],
            ),
            iam.PolicyStatement(
                sid="PassSchedulerRole", actions=["iam:PassRole"], resources=[self.role.role_arn],
                conditions={"StringEquals": {"iam:PassedToService": "scheduler.amazonaws.com"}},
            ),
        ]

    def intake_worker_statements(self) -> list[iam.PolicyStatement]:
        """The intake worker dead-letters invalid messages itself (with the reason as attributes)."""
        return [iam.PolicyStatement(sid="IntakeDeadLetters", actions=["sqs:SendMessage"],
                                    resources=[self.intake.dlq.queue_arn])]

    def environment(self) -> dict[str, str]:
        return {
            "FLEETRUN_SCHEDULE_GROUP": str(self.group.name),
            "FLEETRUN_SCHEDULER_ROLE_ARN": self.role.role_arn,
            "FLEETRUN_INTAKE_QUEUE_ARN": self.intake.queue.queue_arn,
            "FLEETRUN_INTAKE_DLQ_ARN": self.intake.dlq.queue_arn,
            "FLEETRUN_INTAKE_DLQ_URL": self.intake.dlq.queue_url,
        }
