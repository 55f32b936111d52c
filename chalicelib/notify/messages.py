"""What each channel receives for one notification (the queued message: event + task snapshot).

- webhook: the JSON document below, signed by `delivery` (X-Fleetrun-* headers);
- slack: an incoming-webhook message, `text` as the notification fallback and Block Kit
  `blocks` (header, a mrkdwn section with fields, an actions block with a link button);
- dingtalk: a robot `markdown` message (`msgtype`, `markdown.title`, `markdown.text`);
- email: a subject with text and HTML parts.
"""

from __future__ import annotations

import html
from typing import Any

from chalicelib import config

_TITLES = {
    "task.completed": "completed", "task.failed": "failed", "task.partial_failure": "partially failed",
    "task.apply_pending": "is waiting for confirmation", "task.retried": "is being retried",
    "task.cancelled": "was cancelled",
}
_EMOJI = {
    "task.completed": ":white_check_mark:", "task.failed": ":x:", "task.partial_failure": ":warning:",
    "task.apply_pending": ":hourglass_flowing_sand:", "task.retried": ":repeat:", "task.cancelled": ":no_entry_sign:",
}


def task_link(task_id: str) -> str | None:
    base = config.dashboard_url().rstrip("/")
    return f"{base}/#/tasks/{task_id}" if base else None


def title(message: dict[str, Any]) -> str:
    task = message["task"]
    label = task.get("name") or task["type"]
    return f"fleetrun: {label} {_TITLES.get(message['event'], message['event'])}"


def webhook_document(message: dict[str, Any]) -> dict[str, Any]:
    task = message["task"]
    return {
        "delivery_id": message["delivery_id"],
        "event": message["event"],
        "occurred_at": message["occurred_at"],
        "subscription_id": message["subscription_id"],
        "task": task,
        "url": task_link(task["task_id"]),
    }


def _summary(task: dict[str, Any]) -> list[tuple[str, str]]:
    counts = task["node_counts"]
    nodes = f"{counts.get('succeeded', 0)} succeeded, {counts.get('failed', 0) + counts.get('timed_out', 0)} failed"
    rows = [("Task", task["task_id"]), ("Type", task["type"]), ("Status", task["status"]),
            ("Owner", task["owner"]), ("Attempt", str(task["attempt"])), ("Nodes", nodes)]
    if task.get("error_message"):
        rows.append(("Error", task["error_message"]))
    return rows


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_payload(message: dict[str, Any]) -> dict[str, Any]:
    task, heading = message["task"], title(message)
    link = task_link(task["task_id"])
    fields = [{"type": "mrkdwn", "text": f"*{name}:*\n{_slack_escape(value)[:500]}"} for name, value in _summary(task)]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": heading[:150], "emoji": True}},
        {"type": "section", "text": {"type": "mrkdwn", "text": f"{_EMOJI.get(message['event'], '')} "
                                     f"`{message['event']}` at {message['occurred_at']}"}, "fields": fields[:10]},
    ]
    if link:
        blocks.append({"type": "actions", "elements": [
            {"type": "button", "text": {"type": "plain_text", "text": "Open task"}, "url": link,
             "action_id": "open_task"},
        ]})
    return {"text": f"{heading} ({task['task_id']})", "blocks": blocks}


def dingtalk_payload(message: dict[str, Any]) -> dict[str, Any]:
    task, heading = message["task"], title(message)
    lines = [f"### {heading}", ""]
    lines += [f"- **{name}**: {value}" for name, value in _summary(task)]
    link = task_link(task["task_id"])
    if link:
        lines += ["", f"[Open task]({link})"]
    return {"msgtype": "markdown", "markdown": {"title": heading, "text": "\n".join(lines)}}


def email_parts(message: dict[str, Any]) -> tuple[str, str, str]:
    """(subject, text, html)."""
    task, heading = message["task"], title(message)
    link = task_link(task["task_id"])
    rows = _summary(task)
    text = "\n".join([heading, "", *(f"{name}: {value}" for name, value in rows)]
                     + ([f"\nOpen the task: {link}"] if link else []))
    cells = "".join(f"<tr><th align=\"left\">{html.escape(name)}</th><td>{html.escape(value)}</td></tr>"
                    for name, value in rows)
    anchor = f"<p><a href=\"{html.escape(link)}\">Open the task</a></p>" if link else ""
    body = f"<html><body><h2>{html.escape(heading)}</h2><table>{cells}</table>{anchor}</body></html>"
    return heading, text, body
