"""The `fleetrun` command: submit tasks to a fleet, watch them, act on them."""

from __future__ import annotations

from typing import Any

import click

from fleetrun import (
    cli_fleet,
    cli_images,
    cli_inventory,
    cli_monitor,
    cli_schedules,
    cli_selectors,
    cli_subscriptions,
    cli_tasks,
    cli_types,
)
from fleetrun.cli_login import login, whoami
from fleetrun.cli_logs import logs
from fleetrun.cli_session import Session, reported_failures
from fleetrun.cli_submit import submit

HELP = """Submit tasks to a fleet of nodes, follow them live, retry, confirm, read statistics.

\b
Start:
  make run                                   # the local stack; prints a dev admin token
  fleetrun login --url http://127.0.0.1:8000 --token TOKEN

\b
Examples:
  fleetrun task-types
  fleetrun types create -f cdn-purge.yaml    # define a task type (admin)
  fleetrun submit slurm.scale_up -n demo-1 -n demo-2 --param ssh_user=root \\
      --param salt_master=salt-1 --param partition=gpu --watch
  fleetrun submit shell -n demo-1 --param 'command=["uname","-a"]' --idempotency-key uname-1
  fleetrun tasks --status failed --limit 10
  fleetrun show TASK_ID
  fleetrun events TASK_ID --follow
  fleetrun logs TASK_ID demo-1 --follow
  fleetrun retry TASK_ID --watch
  fleetrun stats --json
  fleetrun schedules create nightly 'cron(0 2 * * ? *)' config.release -n edge-1 --param website_id=41
  fleetrun images --project library
  fleetrun monitor snapshot
  fleetrun monitor gpu --range 6h

\b
Exit status: 0 success; 1 an API error or (with --watch) a task that did not
complete; 2 usage, configuration or connection problems; 3 (--watch) a task
waiting for confirmation; 130 interrupted.

Settings: --url/--token, else $FLEETRUN_URL/$FLEETRUN_TOKEN, else the file
`fleetrun login` writes ($FLEETRUN_CONFIG, default ~/.config/fleetrun/config.json).
"""


class FleetrunGroup(click.Group):
    """Commands listed in the order they are added; failures reported as one `error:` line."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)

    def invoke(self, ctx: click.Context) -> Any:
        session = ctx.ensure_object(Session)
        with reported_failures(session):
            return super().invoke(ctx)


@click.group(cls=FleetrunGroup, help=HELP, context_settings={"help_option_names": ["-h", "--help"],
                                                            "max_content_width": 100})
@click.option("--url", envvar="FLEETRUN_URL", metavar="URL", help="The API's base URL (overrides the saved one).")
@click.option("--token", envvar="FLEETRUN_TOKEN", metavar="TOKEN", help="A user token (overrides the saved one).")
@click.version_option(package_name="fleetrun", prog_name="fleetrun")
@click.pass_context
def cli(ctx: click.Context, url: str | None, token: str | None) -> None:
    session = ctx.ensure_object(Session)
    session.url_option, session.token_option = url, token


cli.add_command(login)
cli.add_command(whoami)
cli.add_command(submit)
for command in (*cli_tasks.COMMANDS, *cli_fleet.COMMANDS, *cli_images.COMMANDS, *cli_inventory.COMMANDS,
                *cli_subscriptions.COMMANDS, *cli_selectors.COMMANDS):
    cli.add_command(command)
cli.add_command(cli_schedules.schedules_group)
cli.add_command(cli_types.types_group)
cli.add_command(cli_monitor.monitor)
cli.add_command(logs)


def main() -> None:
    cli(prog_name="fleetrun")
