"""Settings, read from the environment when first needed (never at import).

Tests and the local runtime set the environment first; `reset()` forgets cached values.
"""

from __future__ import annotations

import os
from functools import cache


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return int(raw) if raw not in (None, "") else default


@cache
def table_name() -> str:
    return os.environ.get("FLEETRUN_TABLE", "fleetrun")


@cache
def region() -> str:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"


@cache
def dispatch_queue_url() -> str:
    return os.environ.get("FLEETRUN_DISPATCH_QUEUE_URL", "")


@cache
def outputs_bucket() -> str:
    return os.environ.get("FLEETRUN_OUTPUTS_BUCKET", "fleetrun-outputs")


@cache
def kms_key_id() -> str:
    return os.environ.get("FLEETRUN_KMS_KEY_ID", "alias/fleetrun")


@cache
def lease_seconds() -> int:
    return _int("FLEETRUN_LEASE_SECONDS", 60)


@cache
def rate_limit_per_minute() -> int:
    return _int("FLEETRUN_RATE_LIMIT", 600)


@cache
def local_mode() -> bool:
    return os.environ.get("FLEETRUN_LOCAL", "") not in ("", "0", "false")


@cache
def jwt_secret() -> str:
    """HS256 secret; only honoured in local mode or when explicitly configured."""
    secret = os.environ.get("FLEETRUN_JWT_SECRET", "")
    if not secret and local_mode():
        return "local-dev-secret"
    return secret


@cache
def cursor_secret() -> str:
    """HMAC key of the `next_cursor`s of list answers: `FLEETRUN_CURSOR_SECRET_ARN` (Secrets
    Manager; the stack generates it) or `FLEETRUN_CURSOR_SECRET`. Read once per container: every
    list page needs it. Empty: chalicelib/api/cursors.py derives one from `jwt_secret()`."""
    return _secret("FLEETRUN_CURSOR_SECRET")


@cache
def oidc_issuer() -> str:
    return os.environ.get("FLEETRUN_OIDC_ISSUER", "")


@cache
def oidc_audience() -> str:
    return os.environ.get("FLEETRUN_OIDC_AUDIENCE", "")


def _positive(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    return int(raw) if raw.isdigit() and int(raw) > 0 else default


def retention_days() -> int:
    """API.md "Retention": tasks, their runs, events and outputs are kept this many days after
    the task ends (FLEETRUN_RETENTION_DAYS, default 90)."""
    return _positive("FLEETRUN_RETENTION_DAYS", 90)


def output_max_bytes() -> int:
    """FLEETRUN_OUTPUT_MAX_BYTES: how much live output one attempt may store (agents keep head
    and tail within the same figure; default 4 MiB)."""
    return _positive("FLEETRUN_OUTPUT_MAX_BYTES", 4 * 1024 * 1024)


@cache
def undispatched_grace_seconds() -> int:
    """How long an acknowledged task may wait for its dispatch before the sweeper re-sends it."""
    return _int("FLEETRUN_UNDISPATCHED_GRACE_SECONDS", 60)


@cache
def recount_grace_seconds() -> int:
    """How long an active task's counters may stay still before the sweeper recounts it from
    its runs (services/recount.py)."""
    return _int("FLEETRUN_RECOUNT_GRACE_SECONDS", 120)


@cache
def public_url() -> str:
    return os.environ.get("FLEETRUN_PUBLIC_URL", "")


# --- intake and schedules ---
@cache
def intake_queue_url() -> str:
    return os.environ.get("FLEETRUN_INTAKE_QUEUE_URL", "")


@cache
def intake_queue_arn() -> str:
    return os.environ.get("FLEETRUN_INTAKE_QUEUE_ARN", "")


@cache
def intake_dlq_url() -> str:
    """Where invalid intake messages go, with the reason as a message attribute."""
    return os.environ.get("FLEETRUN_INTAKE_DLQ_URL", "")


@cache
def intake_dlq_arn() -> str:
    return os.environ.get("FLEETRUN_INTAKE_DLQ_ARN", "")


@cache
def intake_producers() -> frozenset[str]:
    """Owners an intake message may name (comma-separated); none by default."""
    raw = os.environ.get("FLEETRUN_INTAKE_PRODUCERS", "")
    return frozenset(name.strip() for name in raw.split(",") if name.strip())


@cache
def schedule_group() -> str:
    return os.environ.get("FLEETRUN_SCHEDULE_GROUP", "fleetrun")


@cache
def scheduler_role_arn() -> str:
    return os.environ.get("FLEETRUN_SCHEDULER_ROLE_ARN", "")

# --- harbor image catalog ---
@cache
def work_queue_url() -> str:
    return os.environ.get("FLEETRUN_WORK_QUEUE_URL", "")


@cache
def harbor_url() -> str:
    """The Harbor `POST /v1/images/sync` and the daily schedule read; empty: not configured."""
    return os.environ.get("FLEETRUN_HARBOR_URL", "").rstrip("/")


@cache
def harbor_urls() -> tuple[str, ...]:
    """`FLEETRUN_HARBOR_URLS`: the Harbor base URLs an `images.sync` task may read besides
    FLEETRUN_HARBOR_URL (comma-separated); an operator cannot point the service anywhere else."""
    raw = os.environ.get("FLEETRUN_HARBOR_URLS", "")
    return tuple(url.strip().rstrip("/") for url in raw.split(",") if url.strip())


@cache
def harbor_robot_name() -> str:
    return os.environ.get("FLEETRUN_HARBOR_ROBOT_NAME", "")


def harbor_robot_secret() -> str:
    """The robot account's secret: `FLEETRUN_HARBOR_ROBOT_SECRET_ARN` (Secrets Manager, read on
    each use so a rotation needs no restart) or, for local mode, `FLEETRUN_HARBOR_ROBOT_SECRET`."""
    return _secret("FLEETRUN_HARBOR_ROBOT_SECRET")


def harbor_webhook_secret() -> str:
    """The shared secret Harbor's webhook policy sends as its auth header; empty: receiver off."""
    return _secret("FLEETRUN_HARBOR_WEBHOOK_SECRET")


def _secret(name: str) -> str:
    arn = os.environ.get(f"{name}_ARN", "")
    if arn:
        from chalicelib import aws

        return str(aws.client("secretsmanager").get_secret_value(SecretId=arn)["SecretString"])
    return os.environ.get(name, "")


@cache
def harbor_page_size() -> int:
    return _int("FLEETRUN_HARBOR_PAGE_SIZE", 100)


@cache
def harbor_retry_backoff_seconds() -> float:
    raw = os.environ.get("FLEETRUN_HARBOR_RETRY_BACKOFF_SECONDS")
    return float(raw) if raw not in (None, "") else 1.0


# --- monitoring: Prometheus (GPU trend) ---
@cache
def prometheus_url() -> str:
    """Base URL of the Prometheus HTTP API (e.g. http://prometheus:9090); empty = not configured."""
    return os.environ.get("FLEETRUN_PROMETHEUS_URL", "").rstrip("/")


@cache
def prometheus_bearer_token() -> str:
    return os.environ.get("FLEETRUN_PROMETHEUS_BEARER_TOKEN", "")


@cache
def prometheus_basic_auth() -> tuple[str, str] | None:
    user = os.environ.get("FLEETRUN_PROMETHEUS_USERNAME", "")
    return (user, os.environ.get("FLEETRUN_PROMETHEUS_PASSWORD", "")) if user else None


# --- real time ---
@cache
def websocket_endpoint() -> str:
    """The `@connections` management endpoint the app posts to (AWS: `https://<api>.execute-api.
    <region>.amazonaws.com/<stage>`; local runtime: its gateway). Empty: no pushes."""
    return os.environ.get("FLEETRUN_WEBSOCKET_ENDPOINT", "").rstrip("/")


@cache
def websocket_url() -> str:
    """The `wss://` (local: `ws://`) URL clients connect to, advertised by `GET /v1/health`."""
    return os.environ.get("FLEETRUN_WEBSOCKET_URL", "")


# --- node inventory and usage reports ---
@cache
def node_offline_seconds() -> int:
    """How long a node's agent may stay silent before the sweeper marks the node offline."""
    return max(6, _int("FLEETRUN_NODE_OFFLINE_SECONDS", 180))


@cache
def reports_bucket() -> str:
    """Where usage reports are stored (the outputs bucket unless set)."""
    return os.environ.get("FLEETRUN_REPORTS_BUCKET") or outputs_bucket()
# --- two-phase tasks ---
@cache
def confirmation_window_seconds() -> int:
    """How long a planned two-phase task waits for `confirm` before it is discarded (default 24 h)."""
    return _int("FLEETRUN_CONFIRMATION_WINDOW_SECONDS", 24 * 3600)


def reset() -> None:
    """Forget every cached setting (tests change the environment between cases): every getter
    of this module that caches, so a new one cannot be left out."""
    for getter in list(globals().values()):
        if callable(getter) and hasattr(getter, "cache_clear"):
            getter.cache_clear()


# --- notifications ------------------------------------------------------------------------
@cache
def notify_queue_url() -> str:
    return os.environ.get("FLEETRUN_NOTIFY_QUEUE_URL", "")


@cache
def notify_email_sender() -> str:
    """The SES-verified From address of e-mail notifications; empty: the email channel is off."""
    return os.environ.get("FLEETRUN_NOTIFY_EMAIL_SENDER", "")


@cache
def notify_timeout_seconds() -> float:
    """Connect and read timeout of one webhook/Slack/DingTalk delivery."""
    raw = os.environ.get("FLEETRUN_NOTIFY_TIMEOUT_SECONDS", "")
    return float(raw) if raw else 5.0


@cache
def notify_backoff_seconds() -> int:
    """First retry delay of a failed delivery; doubles per attempt (capped at 15 minutes)."""
    return _int("FLEETRUN_NOTIFY_BACKOFF_SECONDS", 10)


@cache
def notify_allow_local_targets() -> bool:
    """Allow http:// and loopback/private addresses as notification targets (default: local mode only)."""
    raw = os.environ.get("FLEETRUN_NOTIFY_ALLOW_LOCAL_TARGETS", "")
    if raw == "":
        return local_mode()
    return raw not in ("0", "false")


@cache
def dashboard_url() -> str:
    """Base of the task links in notifications (`<base>/#/tasks/<id>`); default FLEETRUN_PUBLIC_URL."""
    return os.environ.get("FLEETRUN_DASHBOARD_URL", "") or public_url()
