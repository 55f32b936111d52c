"""What every `fleetrun` command shares: the API connection, the consoles, JSON output and
how failures become one line on stderr and an exit status."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import click
import requests
from rich.console import Console

from fleetrun import config_file
from fleetrun.client import Api, ApiError

#: exit statuses of the command (watch adds its own, see cli_watch)
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

F = TypeVar("F", bound=Callable[..., Any])


class Failure(Exception):
    """Something the user must read: printed as `error: <message>` (plus detail lines)."""

    def __init__(self, message: str, exit_code: int = EXIT_ERROR, details: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.message, self.exit_code, self.details = message, exit_code, details


#: the width of a console that is not a terminal: tables take the plain layout there (cli_table)
#: and no line of it, nor anything else, is wrapped or cut
PIPE_WIDTH = 100_000


def make_console(stderr: bool = False) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=None if stream.isatty() else PIPE_WIDTH, highlight=False)


@dataclass
class Session:
    """The context object of every command; the API client is built on first use."""

    url_option: str | None = None
    token_option: str | None = None
    out: Console = field(default_factory=make_console)
    err: Console = field(default_factory=lambda: make_console(stderr=True))
    #: the API client, once built (by `api()`, or by `login` for the URL it checks)
    client: Api | None = None

    def connection(self) -> config_file.Connection:
        try:
            return config_file.resolve(self.url_option, self.token_option)
        except config_file.ConfigError as error:
            raise Failure(str(error), EXIT_USAGE) from None

    def api(self) -> Api:
        if self.client is None:
            found = self.connection()
            if not found.url or not found.token:
                missing = " and ".join(n for n, v in (("API URL", found.url), ("token", found.token)) if not v)
                raise Failure(
                    f"no {missing} configured: run `fleetrun login --url URL --token TOKEN` "
                    f"(or set {config_file.URL_ENV} and {config_file.TOKEN_ENV}); "
                    "`make run` prints a dev admin token",
                    EXIT_USAGE,
                )
            self.client = Api(found.url, found.token)
        return self.client


pass_session = click.make_pass_decorator(Session, ensure=True)


def print_json(value: Any) -> None:
    """The API's JSON, unchanged: pretty, keys in the order the API sent them."""
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


def json_option(command: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print the API's JSON instead of a table.")(command)


def json_task_option(command: F) -> F:
    return click.option("--json", "as_json", is_flag=True,
                        help="Print the updated task as JSON (with --watch: the final task).")(command)


def header(headers: dict[str, str], name: str) -> str | None:
    wanted = name.lower()
    return next((value for key, value in headers.items() if key.lower() == wanted), None)


@contextmanager
def reported_failures(session: Session) -> Iterator[None]:
    """Turn every expected failure into `error: …` on stderr and the matching exit status."""
    try:
        yield
    except ApiError as error:
        _report(session, f"{error.code}: {error.message}", api_details(error))
        raise SystemExit(EXIT_ERROR) from None
    except Failure as failure:
        _report(session, failure.message, failure.details)
        raise SystemExit(failure.exit_code) from None
    except (requests.ConnectionError, requests.Timeout) as error:
        late = " (no answer in time)" if isinstance(error, requests.Timeout) else ""
        _report(session, f"cannot reach {_url(session)}{late}: is `make run` running?")
        raise SystemExit(EXIT_USAGE) from None
    except requests.JSONDecodeError:
        _report(session, f"{_url(session)} did not answer JSON: is it the fleetrun API?")
        raise SystemExit(EXIT_USAGE) from None
    except requests.RequestException as error:  # a malformed URL and the like
        _report(session, f"cannot use {_url(session)}: {error}")
        raise SystemExit(EXIT_USAGE) from None
    except KeyboardInterrupt:
        raise SystemExit(EXIT_INTERRUPTED) from None


def _url(session: Session) -> str:
    return session.client.base_url if session.client else "the API"


def _report(session: Session, message: str, details: tuple[str, ...] = ()) -> None:
    session.err.print(f"error: {message}", style="bold red", markup=False, soft_wrap=True)
    for line in details:
        session.err.print(f"  {line}", style="red", markup=False, soft_wrap=True)


def api_details(error: ApiError) -> tuple[str, ...]:
    body = error.body.get("error", {}) if isinstance(error.body.get("error"), dict) else {}
    lines = [f"{d.get('path', '$')}: {d.get('message', '')}" for d in body.get("details") or [] if isinstance(d, dict)]
    if body.get("known_types"):
        lines.append("known types: " + ", ".join(body["known_types"]))
    if error.status == 401:
        lines.append("log in again: fleetrun login --url URL --token TOKEN")
    if error.status == 429:
        lines.append("slow down and try again in a moment")
    return tuple(lines)
