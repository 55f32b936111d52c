"""One attempt to deliver a notification on its channel, reduced to an `Outcome`.

Signatures:
- webhook: `X-Fleetrun-Signature: sha256=<hex HMAC-SHA256("<timestamp>.<body>", secret)>`
  with `X-Fleetrun-Timestamp` (unix seconds), `X-Fleetrun-Event`, `X-Fleetrun-Delivery`;
- dingtalk: the robot's signed URL: `timestamp` (ms) and `sign` = URL-encoded base64 of
  HMAC-SHA256(key=secret, "<timestamp>\\n<secret>") added to the query; a robot answers
  HTTP 200 with `{"errcode": 0}` on success and another errcode on failure;
- slack: the incoming webhook answers 200 `ok`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_plus

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib import config, secrets
from chalicelib.errors import TransportError
from chalicelib.notify import messages, targets, transport

_ERROR_LIMIT = 300


@dataclass(frozen=True)
class Outcome:
    ok: bool
    status_code: int | None
    error: str | None
    duration_ms: int


def webhook_signature(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def dingtalk_sign(secret: str, timestamp_ms: str) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256).digest()
    return quote_plus(base64.b64encode(digest).decode())


def deliver(channel: str, target: str, secret: str, message: dict[str, Any]) -> Outcome:
    """Send `message`; never raises for a destination's failure (the Outcome says it)."""
    started = time.monotonic()
    try:
        status, error = _SENDERS[channel](target, secret, message)
    except TransportError as failure:
        status, error = None, str(failure)
    except (BotoCoreError, ClientError) as failure:
        status, error = None, f"SES: {_ses_problem(failure)}"
    elapsed = int((time.monotonic() - started) * 1000)
    if error is not None:
        needles = [*targets.credentials_of(channel, target), secret]
        error = str(secrets.redact(error, needles))[:_ERROR_LIMIT]
    return Outcome(error is None, status, error, elapsed)


def _webhook(target: str, secret: str, message: dict[str, Any]) -> tuple[int | None, str | None]:
    body = json.dumps(messages.webhook_document(message), separators=(",", ":")).encode()
    timestamp = str(int(time.time()))
    headers = {
        "X-Fleetrun-Event": message["event"],
        "X-Fleetrun-Delivery": message["delivery_id"],
        "X-Fleetrun-Timestamp": timestamp,
        "X-Fleetrun-Signature": webhook_signature(secret, timestamp, body),
    }
    answer = transport.post_json(target, body, headers, config.notify_timeout_seconds())
    return answer.status, None if 200 <= answer.status < 300 else f"HTTP {answer.status}"


def _slack(target: str, secret: str, message: dict[str, Any]) -> tuple[int | None, str | None]:
    body = json.dumps(messages.slack_payload(message)).encode()
    answer = transport.post_json(target, body, {}, config.notify_timeout_seconds())
    if answer.status == 200:
        return answer.status, None
    return answer.status, f"HTTP {answer.status}: {_text(answer.body)}"


def _dingtalk(target: str, secret: str, message: dict[str, Any]) -> tuple[int | None, str | None]:
    url = target
    if secret:
        timestamp = str(int(time.time() * 1000))
        url += ("&" if "?" in target else "?") + f"timestamp={timestamp}&sign={dingtalk_sign(secret, timestamp)}"
    body = json.dumps(messages.dingtalk_payload(message), ensure_ascii=False).encode()
    answer = transport.post_json(url, body, {}, config.notify_timeout_seconds())
    if answer.status != 200:
        return answer.status, f"HTTP {answer.status}"
    try:
        reply = json.loads(answer.body or b"{}")
    except ValueError:
        return answer.status, "DingTalk answered something other than JSON"
    if not isinstance(reply, dict) or reply.get("errcode", 0) != 0:
        problem = reply.get("errmsg", "") if isinstance(reply, dict) else ""
        return answer.status, f"DingTalk errcode {reply.get('errcode') if isinstance(reply, dict) else '?'}: {problem}"
    return answer.status, None


def _email(target: str, secret: str, message: dict[str, Any]) -> tuple[int | None, str | None]:
    subject, text, html = messages.email_parts(message)
    transport.send_email(target, subject, text, html)
    return None, None


def _text(body: bytes) -> str:
    return body.decode("utf-8", "replace")[:200]


def _ses_problem(failure: Exception) -> str:
    if isinstance(failure, ClientError):
        error = failure.response.get("Error", {})
        return f"{error.get('Code', 'error')}: {error.get('Message', '')}"
    return type(failure).__name__


_SENDERS = {"webhook": _webhook, "slack": _slack, "dingtalk": _dingtalk, "email": _email}
