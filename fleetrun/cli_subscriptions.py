"""`fleetrun subscriptions …`: notification subscriptions and their delivery logs."""

from __future__ import annotations

from typing import Any, Final

import click
from rich.console import Console, RenderableType
from rich.text import Text

from fleetrun.cli_render import day_time
from fleetrun.cli_session import Session, json_option, pass_session, print_json
from fleetrun.cli_table import Column, id_cells, render

EVENTS = ("task.completed", "task.failed", "task.partial_failure", "task.apply_pending", "task.retried",
          "task.cancelled")
_DELIVERY_STYLES = {"delivered": "green", "failed": "yellow", "dead_lettered": "red"}


SUBSCRIPTION_COLUMNS: Final = (
    Column("id"), Column("channel"), Column("target", priority=1, min_width=16, overflow="ellipsis"),
    Column("events", priority=2, min_width=12, overflow="wrap"),
    Column("filter", priority=3, min_width=8, overflow="ellipsis"),
    Column("owner", priority=4, min_width=8, overflow="ellipsis"), Column("created", priority=5),
)
DELIVERY_COLUMNS: Final = (
    Column("at"), Column("status"), Column("event", priority=1), Column("code", priority=2, justify="right"),
    Column("error", priority=3, min_width=12, overflow="ellipsis"), Column("task", priority=4),
    Column("attempt", priority=5, justify="right"), Column("ms", priority=6, justify="right"),
    Column("delivery", priority=7),
)


def subscriptions_table(items: list[dict[str, Any]], console: Console, *, wide: bool = False) -> RenderableType:
    shown_ids = id_cells((item["subscription_id"] for item in items), console, wide)
    rows = []
    for item in items:
        filters = ", ".join(f"{k}={v}" for k, v in (item.get("filter") or {}).items() if v) or "-"
        events = "all" if set(item["events"]) == set(EVENTS) else ", ".join(item["events"])
        rows.append((shown_ids[item["subscription_id"]], item["channel"],
                     item["target"], events, filters, f"{item['owner']} ({item['scope']})",
                     day_time(item["created_at"])))
    return render(SUBSCRIPTION_COLUMNS, rows, console, wide=wide)


def deliveries_table(items: list[dict[str, Any]], console: Console, *, wide: bool = False) -> RenderableType:
    tasks = id_cells((item["task_id"] for item in items), console, wide)
    deliveries = id_cells((item["delivery_id"] for item in items), console, wide)
    rows = []
    for item in items:
        code = item.get("status_code")
        rows.append((day_time(item["at"]), Text(item["status"], style=_DELIVERY_STYLES.get(item["status"], "")),
                     item["event"], "-" if code is None else str(code), item.get("error") or "",
                     tasks[item["task_id"]], str(item["attempt"]), str(item["duration_ms"]),
                     deliveries[item["delivery_id"]]))
    return render(DELIVERY_COLUMNS, rows, console, wide=wide)


@click.group("subscriptions")
def subscriptions_group() -> None:
    """Notify a webhook, Slack, DingTalk or an e-mail address when tasks finish.

    \b
    Examples:
      fleetrun subscriptions create --channel webhook --target https://ci.example.com/hook --secret "$HOOK_SECRET"
      fleetrun subscriptions create --channel slack --target https://hooks.slack.com/services/T/B/X \\
          --event task.failed --event task.partial_failure --type slurm.scale_up
      fleetrun subscriptions create --channel email --target ops@example.com --tag cdn
      fleetrun subscriptions list
      fleetrun subscriptions deliveries SUBSCRIPTION_ID
    """


@subscriptions_group.command("create")
@click.option("--channel", required=True, type=click.Choice(["webhook", "slack", "dingtalk", "email"]))
@click.option("--target", required=True, metavar="URL|ADDRESS",
              help="https URL (webhook, Slack incoming webhook, DingTalk robot) or an e-mail address.")
@click.option("--secret", envvar="FLEETRUN_SUBSCRIPTION_SECRET", metavar="SECRET",
              help="webhook: the HMAC key of X-Fleetrun-Signature (required); dingtalk: the robot's signing "
                   "secret. Or $FLEETRUN_SUBSCRIPTION_SECRET. Never shown again.")
@click.option("--event", "events", multiple=True, type=click.Choice(EVENTS),
              help="An event to hear (repeat for more)  [default: all]")
@click.option("--type", "task_type", metavar="TYPE", help="Only tasks of this type.")
@click.option("--tag", metavar="TAG", help="Only tasks carrying this tag.")
@json_option
@pass_session
def create(session: Session, channel: str, target: str, secret: str | None, events: tuple[str, ...],
           task_type: str | None, tag: str | None, as_json: bool) -> None:
    """Create a subscription (admins' hear every task, anyone else's their own)."""
    body: dict[str, Any] = {"channel": channel, "target": target}
    if secret:
        body["secret"] = secret
    if events:
        body["events"] = list(events)
    filters = {key: value for key, value in (("type", task_type), ("tag", tag)) if value}
    if filters:
        body["filter"] = filters
    answer = session.api().post("/v1/subscriptions", body)
    if as_json:
        print_json(answer)
    else:
        session.out.print(f"created subscription {answer['subscription_id']}")
        session.out.print(subscriptions_table([answer], session.out))


_wide_option = click.option("--wide", is_flag=True, help="Every column and whole ids, however wide the terminal.")


@subscriptions_group.command("list")
@_wide_option
@json_option
@pass_session
def list_command(session: Session, wide: bool, as_json: bool) -> None:
    """List your subscriptions (an admin: every one)."""
    items = session.api().pages("/v1/subscriptions")
    if as_json:
        print_json({"items": items, "next_cursor": None})
    else:
        session.out.print(subscriptions_table(items, session.out, wide=wide) if items else "no subscriptions")


@subscriptions_group.command("show")
@click.argument("subscription_id")
@json_option
@pass_session
def show(session: Session, subscription_id: str, as_json: bool) -> None:
    """Show one subscription."""
    answer = session.api().get(f"/v1/subscriptions/{subscription_id}")
    if as_json:
        print_json(answer)
    else:
        session.out.print(subscriptions_table([answer], session.out))


@subscriptions_group.command("delete")
@click.argument("subscription_id")
@pass_session
def delete(session: Session, subscription_id: str) -> None:
    """Delete a subscription; queued notifications for it are dropped."""
    session.api().request("DELETE", f"/v1/subscriptions/{subscription_id}")
    session.out.print(f"deleted subscription {subscription_id}")


@subscriptions_group.command("deliveries")
@click.argument("subscription_id")
@click.option("--limit", type=click.IntRange(1, 200), default=50, show_default=True, help="Newest attempts shown.")
@_wide_option
@json_option
@pass_session
def deliveries(session: Session, subscription_id: str, limit: int, wide: bool, as_json: bool) -> None:
    """The delivery log of a subscription, newest first: one line per attempt."""
    answer = session.api().get(f"/v1/subscriptions/{subscription_id}/deliveries", limit=limit)
    if as_json:
        print_json(answer)
    else:
        items = answer["items"]
        session.out.print(deliveries_table(items, session.out, wide=wide) if items else "no deliveries yet")


COMMANDS = (subscriptions_group,)
