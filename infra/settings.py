"""Per-stage settings of the CDK app, from CDK context.

Every key can be given for all stages (`-c throttleRate=100`) or for one
(`-c prod:throttleRate=1000`); the per-stage form wins. Keys:

| key | default (dev / prod) | meaning |
|---|---|---|
| `oidcIssuer`, `oidcAudience` | none: a Cognito user pool is created | an external OIDC issuer for user JWTs |
| `alarmEmail` | none | e-mail address subscribed to the alarm topic |
| `throttleRate`, `throttleBurst` | 50/100 · 3000/5000 | REST API throttling (requests/s, burst) |
| `wsThrottleRate`, `wsThrottleBurst` | 20/50 · 200/500 | WebSocket stage throttling |
| `leaseSeconds` | 60 | FLEETRUN_LEASE_SECONDS |
| `rateLimit` | 600 | FLEETRUN_RATE_LIMIT (write requests per user per minute) |
| `logRetentionDays` | 14 · 90 | CloudWatch Logs retention of the functions |
| `retentionDays` | 90 | FLEETRUN_RETENTION_DAYS (API.md "Retention"); the outputs bucket's lifecycle too |
| `streamMaxRetries` | 10 | retries of a failing stream batch before it goes to the stream DLQ |
| `streamMaxRecordAge` | 21600 | seconds: an older stream record goes to the stream DLQ instead of being retried |
| `streamParallelization` | 4 | concurrent batches per stream shard (ParallelizationFactor) of each stream consumer |
| `intakeProducers` | none | FLEETRUN_INTAKE_PRODUCERS: owners an SQS intake message may name, comma-separated |
| `harborUrl`, `harborRobotName` | none: image sync off | FLEETRUN_HARBOR_URL, FLEETRUN_HARBOR_ROBOT_NAME |
| `harborUrls` | none: only `harborUrl` | FLEETRUN_HARBOR_URLS, more Harbor base URLs `images.sync` may read |
| `harborRobotSecretArn`, `harborWebhookSecretArn` | none | Secrets Manager secrets the functions may read |
| `notifyEmailSender` | none: the email channel is off | FLEETRUN_NOTIFY_EMAIL_SENDER, an SES-verified From address |
| `dashboardUrl` | none | FLEETRUN_DASHBOARD_URL, base of the task links in notifications |
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

STAGES = ("dev", "prod")


class _Context(Protocol):
    def try_get_context(self, key: str) -> Any: ...


_DEFAULTS: dict[str, dict[str, Any]] = {
    "dev": {
        "throttleRate": 50, "throttleBurst": 100, "wsThrottleRate": 20, "wsThrottleBurst": 50,
        "logRetentionDays": 14,
    },
    "prod": {
        # 10,000 agents: ~333 req/s idle (claims every 30 s at most), ~2,500 req/s at 1,000 node runs/s
        # (< 2 requests per node run plus a heartbeat per running run every 20 s); the burst is the
        # account's default per-region burst (infra/README.md, "Production settings")
        "throttleRate": 3000, "throttleBurst": 5000, "wsThrottleRate": 200, "wsThrottleBurst": 500,
        "logRetentionDays": 90,
    },
}
_COMMON: dict[str, Any] = {"leaseSeconds": 60, "rateLimit": 600, "streamMaxRetries": 10,
                           "streamMaxRecordAge": 6 * 3600, "streamParallelization": 4, "retentionDays": 90}

#: SQS event sources' ScalingConfig.MaximumConcurrency (2-1000): how many concurrent functions each
#: queue may drive, so a backlog on one queue cannot take the account's concurrency (or the table's
#: write capacity) from the API. Dispatch: one chunk (<= 1,000 runs) per job, ~2.5 s at 1,769 MB,
#: so 10 concurrent jobs create ~4,000 runs/s, four times the 1,000 node runs/s the service promises.
SQS_MAX_CONCURRENCY: dict[str, int] = {
    "fleetrun-dispatch": 10,
    "fleetrun-intake": 5,
    "fleetrun-work": 5,
    "fleetrun-notify": 20,
}
#: MemorySize of the functions whose work is CPU-bound (Lambda's CPU grows with memory; 1,769 MB is one
#: vCPU): dispatch does one conditional put per run (~2.4 ms CPU each, 16 threads), the stream readers
#: deserialize batches of up to 1,000 records. The others keep Chalice's 512 MB.
FUNCTION_MEMORY_MB: dict[str, int] = {
    "DispatchWorker": 1769,
    "StreamAggregator": 1024,
    "StreamNotifier": 1024,
}
#: the sweeper: one at a time (reserved concurrency 1), never retried (the next minute's sweep is the
#: retry) and an event that waited a minute is dropped (a throttled sweep must not pile up behind one)
SWEEPER = "Sweep"
SWEEPER_MAX_EVENT_AGE_SECONDS = 60


@dataclass(frozen=True)
class StageSettings:
    stage: str
    oidc_issuer: str | None
    oidc_audience: str | None
    alarm_email: str | None
    throttle_rate: float
    throttle_burst: int
    ws_throttle_rate: float
    ws_throttle_burst: int
    lease_seconds: int
    rate_limit: int
    log_retention_days: int
    stream_max_retries: int
    #: MaximumRecordAgeInSeconds of the stream sources (60 s to the stream's 24 h)
    stream_max_record_age: int = 6 * 3600
    #: ParallelizationFactor of the stream sources (1-10)
    stream_parallelization: int = 4
    #: comma-separated owners an intake message may name (FLEETRUN_INTAKE_PRODUCERS)
    intake_producers: str = ""
    harbor_url: str | None = None
    #: comma-separated Harbor base URLs `images.sync` may read besides harbor_url (FLEETRUN_HARBOR_URLS)
    harbor_urls: str | None = None
    harbor_robot_name: str | None = None
    harbor_robot_secret_arn: str | None = None
    harbor_webhook_secret_arn: str | None = None
    notify_email_sender: str | None = None
    dashboard_url: str | None = None
    #: FLEETRUN_RETENTION_DAYS (chalicelib/domain/retention.py)
    retention_days: int = 90

    @property
    def is_prod(self) -> bool:
        return self.stage == "prod"

    @property
    def harbor_environment(self) -> dict[str, str]:
        """FLEETRUN_HARBOR_* of the functions (only what is set)."""
        values = {
            "FLEETRUN_HARBOR_URL": self.harbor_url,
            "FLEETRUN_HARBOR_URLS": self.harbor_urls,
            "FLEETRUN_HARBOR_ROBOT_NAME": self.harbor_robot_name,
            "FLEETRUN_HARBOR_ROBOT_SECRET_ARN": self.harbor_robot_secret_arn,
            "FLEETRUN_HARBOR_WEBHOOK_SECRET_ARN": self.harbor_webhook_secret_arn,
        }
        return {k: str(v) for k, v in values.items() if v}

    @property
    def harbor_secret_arns(self) -> list[str]:
        return [a for a in (self.harbor_robot_secret_arn, self.harbor_webhook_secret_arn) if a]

    @property
    def prefix(self) -> str:
        """Physical names start with this, so both stages fit in one account."""
        return f"fleetrun-{self.stage}"


def stage_settings(node: _Context, stage: str) -> StageSettings:
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}: use one of {', '.join(STAGES)}")

    def get(key: str) -> Any:
        for candidate in (f"{stage}:{key}", key):
            value = node.try_get_context(candidate)
            if value not in (None, ""):
                return value
        return _DEFAULTS[stage].get(key, _COMMON.get(key))

    issuer, audience = get("oidcIssuer"), get("oidcAudience")
    if bool(issuer) != bool(audience):
        raise ValueError("give both oidcIssuer and oidcAudience, or neither (a Cognito user pool is made)")
    return StageSettings(
        stage=stage,
        oidc_issuer=issuer,
        oidc_audience=audience,
        alarm_email=get("alarmEmail"),
        throttle_rate=float(get("throttleRate")),
        throttle_burst=int(get("throttleBurst")),
        ws_throttle_rate=float(get("wsThrottleRate")),
        ws_throttle_burst=int(get("wsThrottleBurst")),
        lease_seconds=int(get("leaseSeconds")),
        rate_limit=int(get("rateLimit")),
        log_retention_days=int(get("logRetentionDays")),
        stream_max_retries=int(get("streamMaxRetries")),
        stream_max_record_age=_within("streamMaxRecordAge", int(get("streamMaxRecordAge")), 60, 24 * 3600),
        stream_parallelization=_within("streamParallelization", int(get("streamParallelization")), 1, 10),
        intake_producers=_producers(get("intakeProducers")),
        harbor_url=get("harborUrl"),
        harbor_urls=get("harborUrls"),
        harbor_robot_name=get("harborRobotName"),
        harbor_robot_secret_arn=get("harborRobotSecretArn"),
        harbor_webhook_secret_arn=get("harborWebhookSecretArn"),
        notify_email_sender=get("notifyEmailSender"),
        dashboard_url=get("dashboardUrl"),
        retention_days=_within("retentionDays", int(get("retentionDays")), 1, 36500),
    )


def _within(key: str, value: int, low: int, high: int) -> int:
    if not low <= value <= high:
        raise ValueError(f"{key}: {value} is not within {low}-{high}")
    return value


def _producers(raw: Any) -> str:
    """`a, b` -> `a,b`; each name is what a user id may be (no spaces or commas)."""
    names = [name.strip() for name in str(raw or "").split(",") if name.strip()]
    for name in names:
        if len(name) > 128 or any(c.isspace() for c in name):
            raise ValueError(f"intakeProducers: {name!r} is not a user id (1-128 characters, no spaces)")
    return ",".join(names)
