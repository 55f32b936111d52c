"""EventBridge Scheduler for the local runtime: fire the schedules `POST /v1/schedules` created.

moto stores schedules but never fires them. This stand-in reads them back through the Scheduler
API (the same schedules the app created), computes their firing times with the app's own
expression parser, and does what EventBridge Scheduler does for an SQS target: fills the
context placeholders of the target input and sends it to the target queue. From there the
intake pump delivers it to `intake_worker`, the same code path as in AWS.

Rate schedules fire at their creation minute and every interval after; cron schedules at every
matching minute after their creation. How far each schedule has fired is reported to
`on_fired` (the runtime keeps it in its durable state), so a restarted runtime neither fires a
firing twice nor skips the ones that fell due while it was down.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from chalicelib.domain import schedule_expressions

logger = logging.getLogger("fleetrun.local.scheduler")


def scheduled_time(at: datetime) -> str:
    """`<aws.scheduler.scheduled-time>` as EventBridge Scheduler renders it (ISO 8601, UTC, seconds)."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class SchedulerStandIn:
    def __init__(self, scheduler: Any, sqs: Any, group: str, *, fired_until: dict[str, str] | None = None,
                 on_fired: Callable[[dict[str, str]], None] | None = None) -> None:
        self.scheduler, self.sqs, self.group = scheduler, sqs, group
        #: schedule name -> the time up to which its firings were sent
        self._fired_until: dict[str, datetime] = {
            name: datetime.fromisoformat(at) for name, at in (fired_until or {}).items()}
        self.on_fired = on_fired
        self._queue_urls: dict[str, str] = {}

    def tick(self, now: datetime | None = None) -> int:
        """Send every firing due since the last tick; returns how many were sent."""
        now = now or datetime.now(UTC)
        sent = 0
        seen = set()
        for schedule in self._schedules():
            name = schedule["Name"]
            seen.add(name)
            if schedule.get("State", "ENABLED") != "ENABLED":
                continue
            expression = schedule_expressions.parse(schedule["ScheduleExpression"])
            created = _utc(schedule["CreationDate"])
            after = self._fired_until.get(name) or _start(expression, created)
            for at in expression.firings(created, after, now):
                self.fire(schedule, at)
                sent += 1
            self._fired_until[name] = max(after, now)
        for gone in set(self._fired_until) - seen:
            del self._fired_until[gone]
        if sent and self.on_fired is not None:
            self.on_fired({name: at.isoformat() for name, at in self._fired_until.items()})
        return sent

    def fire(self, schedule: dict[str, Any], at: datetime, attempt: int = 1) -> None:
        """Deliver one firing of `schedule` (a GetSchedule answer) scheduled for `at`."""
        target = schedule["Target"]
        body = (
            target.get("Input", "")
            .replace("<aws.scheduler.scheduled-time>", scheduled_time(at))
            .replace("<aws.scheduler.schedule-arn>", schedule["Arn"])
            .replace("<aws.scheduler.execution-id>", str(uuid.uuid4()))
            .replace("<aws.scheduler.attempt-number>", str(attempt))
        )
        self.sqs.send_message(QueueUrl=self._queue_url(target["Arn"]), MessageBody=body)
        logger.info("schedule %s fired for %s", schedule["Name"], scheduled_time(at))

    def get(self, name: str) -> dict[str, Any] | None:
        """The schedule `name`, or None when it was deleted since it was listed."""
        try:
            schedule: dict[str, Any] = self.scheduler.get_schedule(GroupName=self.group, Name=name)
        except self.scheduler.exceptions.ResourceNotFoundException:
            return None
        return schedule

    def run_forever(self, stop: threading.Event, interval: float = 2.0) -> None:
        while not stop.wait(interval):
            try:
                self.tick()
            except Exception:
                logger.exception("firing schedules failed; trying again in %.0f s", interval)

    def _schedules(self) -> list[dict[str, Any]]:
        names: list[str] = []
        token: str | None = None
        while True:
            page = self.scheduler.list_schedules(GroupName=self.group, **({"NextToken": token} if token else {}))
            names += [summary["Name"] for summary in page.get("Schedules", [])]
            token = page.get("NextToken")
            if not token:
                break
        return [schedule for schedule in map(self.get, names) if schedule is not None]

    def _queue_url(self, arn: str) -> str:
        if arn not in self._queue_urls:
            _, _, service, _, account, name = arn.split(":", 5)
            if service != "sqs":
                raise ValueError(f"the local scheduler delivers only to SQS queues, not {arn}")
            self._queue_urls[arn] = self.sqs.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)["QueueUrl"]
        return self._queue_urls[arn]


def _start(expression: schedule_expressions.Expression, created: datetime) -> datetime:
    """Exclusive lower bound of a new schedule's firings: a rate fires at its creation minute."""
    if isinstance(expression, schedule_expressions.Rate):
        return created.replace(second=0, microsecond=0) - timedelta(microseconds=1)
    return created


def _utc(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromtimestamp(float(value), UTC)
