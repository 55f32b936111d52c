"""Where the `fleetrun` command finds the API and its token.

Precedence, per setting: the global `--url` / `--token` options, then the environment
(`FLEETRUN_URL`, `FLEETRUN_TOKEN`), then the file written by `fleetrun login`
(`$FLEETRUN_CONFIG`, default `~/.config/fleetrun/config.json`, mode 0600: it holds a token).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

URL_ENV = "FLEETRUN_URL"
TOKEN_ENV = "FLEETRUN_TOKEN"
CONFIG_ENV = "FLEETRUN_CONFIG"


class ConfigError(Exception):
    """The config file exists but cannot be read as fleetrun settings."""


def config_path() -> Path:
    explicit = os.environ.get(CONFIG_ENV)
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "fleetrun" / "config.json"


def load(path: Path | None = None) -> dict[str, Any]:
    """The saved settings (`{"url", "token"}`), or `{}` when nothing was saved yet."""
    path = path or config_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as error:
        raise ConfigError(f"cannot read {path}: {error.strerror}") from None
    try:
        value = json.loads(text)
    except ValueError:
        raise ConfigError(f"{path} is not JSON; run `fleetrun login` again to rewrite it") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{path} does not hold a JSON object; run `fleetrun login` again to rewrite it")
    return value


def save(url: str, token: str, path: Path | None = None) -> Path:
    """Write the settings readable by the owner only; returns where they went."""
    path = path or config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    body = json.dumps({"url": url, "token": token}, indent=2) + "\n"
    # create with 0600 from the start: the token must never be readable by others, not even briefly
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(body)
    os.chmod(path, 0o600)  # an existing file keeps its old mode through O_CREAT
    return path


@dataclass(frozen=True)
class Connection:
    """The API to talk to; either part may be missing (then the caller explains how to log in)."""

    url: str | None
    token: str | None
    path: Path


def resolve(url_option: str | None = None, token_option: str | None = None, path: Path | None = None) -> Connection:
    path = path or config_path()
    env_url, env_token = os.environ.get(URL_ENV) or None, os.environ.get(TOKEN_ENV) or None
    saved: dict[str, Any] = {}
    if not (url_option or env_url) or not (token_option or env_token):
        saved = load(path)
    url = url_option or env_url or _text(saved.get("url"))
    token = token_option or env_token or _text(saved.get("token"))
    return Connection(url=url.rstrip("/") if url else None, token=token, path=path)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
