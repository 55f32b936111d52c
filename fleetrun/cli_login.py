"""`fleetrun login` and `fleetrun whoami`: where the API is, and who the token says you are."""

from __future__ import annotations

import base64
import json
import os
import sys
from typing import Any

import click

from fleetrun import config_file
from fleetrun.cli_session import EXIT_USAGE, Failure, Session, json_option, pass_session, print_json
from fleetrun.client import Api, ApiError

DEFAULT_URL = "http://127.0.0.1:8000"


def token_claims(token: str) -> dict[str, Any]:
    """The JWT payload, decoded without verifying it (the API verifies; this only names you)."""
    parts = token.split(".")
    if len(parts) != 3:
        return {}
    try:
        padded = parts[1] + "=" * (-len(parts[1]) % 4)
        claims = json.loads(base64.urlsafe_b64decode(padded))
    except ValueError:
        return {}
    return claims if isinstance(claims, dict) else {}


def identity(token: str) -> str:
    claims = token_claims(token)
    if not claims.get("sub"):
        return "an unknown user (the token is not a JWT with a `sub`)"
    roles = claims.get("roles")
    shown = ", ".join(str(r) for r in roles) if isinstance(roles, list) and roles else "none"
    return f"{claims['sub']} (roles: {shown})"


@click.command()
@click.option("--url", "login_url", metavar="URL",
              help=f"The API's base URL  [default: --url, $FLEETRUN_URL, the saved one or {DEFAULT_URL}]")
@click.option("--token", "login_token", metavar="TOKEN",
              help="A user token (JWT); prompted for when missing and the input is a terminal.")
@pass_session
def login(session: Session, login_url: str | None, login_token: str | None) -> None:
    """Check a token and save it with the API URL.

    The token is checked by reading the task types; nothing is saved when the API refuses it.
    The file is written readable by you only (mode 0600).

    \b
    Example (`make run` prints a dev admin token):
      fleetrun login --url http://127.0.0.1:8000 --token eyJhbGciOi…
    """
    known = _known(session)
    url = (login_url or known.url or DEFAULT_URL).rstrip("/")
    token = login_token or session.token_option or os.environ.get(config_file.TOKEN_ENV)
    if not token:
        if not sys.stdin.isatty():
            raise Failure("no token: pass --token TOKEN", EXIT_USAGE)
        token = str(click.prompt("token", hide_input=True)).strip()
    api = session.client = Api(url, token)  # a connection error is then reported with this URL
    try:
        api.get("/v1/task-types")
    except ApiError as error:
        if error.status in (401, 403):
            raise Failure(f"{error.code}: the API at {url} refused this token ({error.message}); nothing was saved",
                          details=("ask for a new token (`make run` prints a dev admin token)",)) from None
        raise
    path = config_file.save(url, token)
    session.out.print(f"logged in to {url} as {identity(token)}", markup=False)
    session.out.print(f"saved to {path}", style="dim", markup=False)


def _known(session: Session) -> config_file.Connection:
    try:
        return session.connection()
    except Failure:
        return config_file.Connection(url=None, token=None, path=config_file.config_path())


@click.command()
@json_option
@pass_session
def whoami(session: Session, as_json: bool) -> None:
    """Show the API URL and who your token says you are."""
    api = session.api()
    if as_json:  # the claims only: the token itself stays off the screen
        print_json({"url": api.base_url, "claims": token_claims(api.token or "")})
    else:
        session.out.print(f"{api.base_url} as {identity(api.token or '')}", markup=False)
