"""Which Harbor registries an `images.sync` task may read: the ones an admin configured.

The service itself makes the requests of an `images.sync` run, so its `harbor_url` is a
request the service sends on a user's behalf: without a rule, any operator could make it GET
an internal address (server-side request forgery). The rule: the URL must be one of the
Harbor base URLs of `FLEETRUN_HARBOR_URLS` or `FLEETRUN_HARBOR_URL` (same scheme, host, port
and path; no user name, query or fragment). It is checked when the task is created and again
when its run starts (the list may have changed since, a retry runs the old parameters).
"""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import urlsplit

from chalicelib import config
from chalicelib.errors import ValidationFailed

TASK_TYPE: Final = "images.sync"
REFUSED: Final = ("harbor_url is not an allowed Harbor: images.sync reads only the Harbor base URLs an admin "
                  "lists in FLEETRUN_HARBOR_URLS (comma-separated) or sets as FLEETRUN_HARBOR_URL")

#: (scheme, host, port, path) of a base URL
_Origin = tuple[str, str, int, str]


def check_task(task_type: str, parameters: dict[str, Any]) -> None:
    """Raises ValidationFailed (path `$.parameters.harbor_url`) for an `images.sync` task whose
    Harbor is not allowed; any other type passes."""
    if task_type == TASK_TYPE and not allowed(str(parameters.get("harbor_url", ""))):
        raise ValidationFailed(REFUSED, [{"path": "$.parameters.harbor_url", "message": REFUSED}])


def allowed(url: str) -> bool:
    """Whether `url` is one of the configured Harbor base URLs."""
    origin = _origin(url)
    configured = {_origin(base) for base in (config.harbor_url(), *config.harbor_urls()) if base}
    return origin is not None and origin in configured


def _origin(url: str) -> _Origin | None:
    """The comparable form of a base URL; None for one that carries more than a base URL may."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port or {"https": 443, "http": 80}.get(parts.scheme.lower(), 0)
    except ValueError:
        return None
    extra = parts.username is not None or parts.password is not None or parts.query or parts.fragment
    if extra or not parts.hostname or parts.scheme.lower() not in ("https", "http"):
        return None
    return parts.scheme.lower(), parts.hostname.rstrip("."), port, parts.path.rstrip("/")
