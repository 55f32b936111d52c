"""`fleetrun images`: the image catalog synced from Harbor, and starting a sync."""

from __future__ import annotations

from typing import Any, Final

import click
from rich.console import Console, RenderableType

from fleetrun.cli_render import day_time
from fleetrun.cli_session import Session, json_option, pass_session, print_json
from fleetrun.cli_table import Column, render
from fleetrun.cli_watch import watch

IMAGE_COLUMNS: Final = (
    Column("repository"), Column("tag"), Column("size", priority=1, justify="right"), Column("pushed", priority=2),
    Column("digest", priority=3, min_width=8, overflow="ellipsis"), Column("removed", priority=4),
)


def images_table(items: list[dict[str, Any]], console: Console, *, wide: bool = False) -> RenderableType:
    rows = [(image["repository"], image["tag"], _size(image["size_bytes"]), day_time(image.get("pushed_at")),
             image["digest"] if wide or not console.is_terminal else image["digest"][:19],
             day_time(image.get("removed_at")) if image.get("removed_at") else "")
            for image in items]
    return render(IMAGE_COLUMNS, rows, console, wide=wide)


def _size(size_bytes: int) -> str:
    if size_bytes < 1024:
        return f"{size_bytes} B"
    value = float(size_bytes)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024 or unit == "GiB":
            break
    return f"{value:.1f} {unit}"


@click.group("images", invoke_without_command=True)
@click.option("--project", metavar="NAME", help="Only this Harbor project.")
@click.option("--include-removed", is_flag=True, help="Also tags that are gone from Harbor.")
@click.option("--wide", is_flag=True, help="Every column and whole digests, however wide the terminal.")
@json_option
@pass_session
@click.pass_context
def images_group(ctx: click.Context, session: Session, project: str | None, include_removed: bool, wide: bool,
                 as_json: bool) -> None:
    """List the image catalog synced from Harbor (or: fleetrun images sync).

    \b
    Examples:
      fleetrun images --project library
      fleetrun images sync --watch            # admins: sync the configured Harbor now
      fleetrun images sync --repository library/nginx
    """
    if ctx.invoked_subcommand is not None:
        return
    items = session.api().pages("/v1/images", project=project,
                                include_removed="true" if include_removed else None)
    if as_json:
        print_json({"items": items, "next_cursor": None})
    elif items:
        session.out.print(images_table(items, session.out, wide=wide))
    else:
        session.out.print("the catalog is empty: an admin runs `fleetrun images sync`")


@images_group.command("sync")
@click.option("--project", metavar="NAME", help="Only this project.")
@click.option("--repository", metavar="PROJECT/REPO", help="Only this repository.")
@click.option("-w", "--watch", "follow", is_flag=True, help="Follow the sync task; exit 0 only if it completes.")
@json_option
@pass_session
def sync(session: Session, project: str | None, repository: str | None, follow: bool, as_json: bool) -> None:
    """Sync the configured Harbor into the catalog now (admin); prints the task id."""
    body = {k: v for k, v in (("project", project), ("repository", repository)) if v}
    api = session.api()
    task = api.post("/v1/images/sync", body)
    if as_json and not follow:
        print_json(task)
    elif not as_json:
        click.echo(task["task_id"])
    if follow:
        status = watch(api, task["task_id"], session.err if as_json else session.out)
        if as_json:
            print_json(api.get(f"/v1/tasks/{task['task_id']}"))
        raise SystemExit(status)


COMMANDS = (images_group,)
