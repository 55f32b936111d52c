"""Per-stage settings of the CDK app, from CDK context.

Every key can be given for all stages (`-c throttleRate=100`) or for one
(`-c prod:throttleRate=1000`); the per-stage form wins. Keys:

| key | default (dev / prod) | meaning |
|---|---|---|
| `oidcIssuer`, `oidcAudience` | none: a Cognito user pool is created | an external OIDC issuer for user JWTs |
| `alarmEmail` | none | e-mail address subscribed to the alarm topic |
| `throttleRate`, `throttleBurst` | 50/100 · 500/1000 | API Gateway stage throttling (requests/s, burst) |
| `wsThrottleRate`, `wsThrottleBurst` | 20/50 · 200/500 | WebSocket stage throttling |
| `leaseSeconds` | 60 | FLEETRUN_LEASE_SECONDS |
| `rateLimit` | 600 | FLEETRUN_RATE_LIMIT (write requests per user per minute) |
| `logRetentionDays` | 14 · 90 | CloudWatch Logs retention of the functions |
| `streamMaxRetries` | 10 | retries of a failing stream batch before it goes to the stream DLQ |
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
        "throttleRate": 500, "throttleBurst": 1000, "wsThrottleRate": 200, "wsThrottleBurst": 500,
        "logRetentionDays": 90,
    },
}
_COMMON: dict[str, Any] = {"leaseSeconds": 60, "rateLimit": 600, "streamMaxRetries": 10}


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
        intake_producers=_producers(get("intakeProducers")),
        harbor_url=get("harborUrl"),
        harbor_urls=get("harborUrls"),
        harbor_robot_name=get("harborRobotName"),
        harbor_robot_secret_arn=get("harborRobotSecretArn"),
        harbor_webhook_secret_arn=get("harborWebhookSecretArn"),
        notify_email_sender=get("notifyEmailSender"),
        dashboard_url=get("dashboardUrl"),
    )


def _producers(raw: Any) -> str:
    """`a, b` -> `a,b`; each name is what a user id may be (no spaces or commas)."""
    names = [name.strip() for name in str(raw or "").split(",") if name.strip()]
    for name in names:
        if len(name) > 128 or any(c.isspace() for c in name):
            raise ValueError(f"intakeProducers: {name!r} is not a user id (1-128 characters, no spaces)")
    return ",".join(names)
