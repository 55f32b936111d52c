"""Where a notification may go: target validation, the masked form views show, and the
address check made again at send time (a name may resolve elsewhere later).

Rule (server-side request forgery): URL targets must be `https` on a public address. Plain
`http` and loopback, private, link-local (169.254.169.254) or otherwise reserved addresses
are refused, unless `FLEETRUN_NOTIFY_ALLOW_LOCAL_TARGETS` allows them (the default in local
mode, where the receivers run on this machine).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from urllib.parse import SplitResult, parse_qsl, urlencode, urlsplit

from chalicelib import config
from chalicelib.errors import TargetRefused, ValidationFailed

URL_CHANNELS = frozenset({"webhook", "slack", "dingtalk"})
EMAIL_CHANNEL = "email"
#: a pragmatic address check (RFC 5322 allows more, SES accepts this shape)
_EMAIL = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$")
MASK = "***"


def validate(channel: str, target: str) -> None:
    """Raises ValidationFailed (path `$.target`) when the target does not fit the channel or the rule."""
    if channel == EMAIL_CHANNEL:
        if not _EMAIL.match(target) or len(target) > 254:
            raise _invalid("not an e-mail address")
        return
    parts = urlsplit(target)
    allow_local = config.notify_allow_local_targets()
    if parts.scheme not in (("https", "http") if allow_local else ("https",)):
        raise _invalid("must be an https:// URL" if not allow_local else "must be an http(s):// URL")
    if not parts.hostname or parts.username is not None or parts.password is not None:
        raise _invalid("must name a host and carry no user name or password")
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise _invalid("has an invalid port") from None
    if not allow_local:
        host = parts.hostname
        if host == "localhost" or host.endswith(".localhost") or _is_refused_literal(host):
            raise _invalid("must not point at a loopback, private or link-local address")


def check_addresses(host: str, port: int) -> list[str]:
    """Resolve `host` and return the addresses a delivery may connect to.

    Raises TargetRefused when one of them is not public (unless local targets are allowed).
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise TargetRefused(f"cannot resolve the target host ({error.strerror})") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not config.notify_allow_local_targets() and any(not _is_public(a) for a in addresses):
        raise TargetRefused("the target host resolves to a non-public address")
    return addresses


def display(channel: str, target: str) -> str:
    """The target with its credentials masked: query values, Slack's webhook path."""
    if channel == EMAIL_CHANNEL:
        return target
    parts = urlsplit(target)
    path = parts.path
    if channel == "slack" and path.startswith("/services/"):
        path = "/services/" + MASK
    query = urlencode([(name, MASK) for name, _ in parse_qsl(parts.query, keep_blank_values=True)], safe="*")
    return SplitResult(parts.scheme, parts.netloc, path, query, "").geturl()


def credentials_of(channel: str, target: str) -> list[str]:
    """Strings of the target that must never reach a log line or a delivery record."""
    if channel == EMAIL_CHANNEL:
        return []
    parts = urlsplit(target)
    found = [target, parts.path + ("?" + parts.query if parts.query else "")]
    found += [value for _, value in parse_qsl(parts.query) if len(value) >= 4]
    if channel == "slack":
        found += [segment for segment in parts.path.split("/") if len(segment) >= 8]
    return [value for value in found if value and value != "/"]


def _is_refused_literal(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return not _is_public(str(address))


def _is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def _invalid(problem: str) -> ValidationFailed:
    return ValidationFailed(f"invalid notification target: {problem}", [{"path": "$.target", "message": problem}])
