"""Where a notification may go: target validation, the masked form views show, and the
address check made again at send time (a name may resolve elsewhere later).

Rule (server-side request forgery, API.md "Notification subscriptions"), applied to the host
when a subscription is created and again, before every delivery, to each address the name
resolves to then (DNS rebinding: a name public at creation may point inside later):
- refused in every mode: link-local and cloud metadata addresses (`169.254.0.0/16`,
  `fe80::/10`, AWS's `fd00:ec2::/32`, Alibaba Cloud's `100.100.100.200`), `0.0.0.0/8` and `::`,
  multicast, broadcast and reserved addresses;
- refused unless local targets are allowed (`FLEETRUN_NOTIFY_ALLOW_LOCAL_TARGETS`, the default
  in local mode only, where the receivers run on this machine): plain `http`, `localhost`,
  loopback, private and shared (`100.64.0.0/10`) addresses.
An IPv4 address carried in IPv6 (`::ffff:a.b.c.d`, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`) is
judged as that IPv4 address, and a number the resolver reads as an address (`2852039166`,
`0251.0376.0251.0376`, `0xa9fea9fe`) as the address it reads.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from typing import Final
from urllib.parse import SplitResult, parse_qsl, urlencode, urlsplit

from chalicelib import config
from chalicelib.errors import TargetRefused, ValidationFailed

URL_CHANNELS = frozenset({"webhook", "slack", "dingtalk"})
EMAIL_CHANNEL = "email"
#: a pragmatic address check (RFC 5322 allows more, SES accepts this shape)
_EMAIL = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$")
MASK = "***"
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
#: refused in every mode: the instance metadata services and their neighbours
_METADATA: Final = tuple(ipaddress.ip_network(n) for n in ("169.254.0.0/16", "fd00:ec2::/32", "100.100.100.200/32"))
#: "this network": Linux connects 0.0.0.0 to the local host
_THIS_NETWORK: Final = ipaddress.ip_network("0.0.0.0/8")
_NAT64: Final = ipaddress.ip_network("64:ff9b::/96")
#: what inet_aton reads as an IPv4 address: 1 to 4 decimal, octal or hex parts
_NUMERIC_HOST: Final = re.compile(r"(?:0x[0-9a-f]*|[0-9]+)(?:\.(?:0x[0-9a-f]*|[0-9]+)){0,3}", re.IGNORECASE)
_LOCAL: Final = "a loopback or private address"


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
    host = parts.hostname.rstrip(".")
    if not allow_local and (host == "localhost" or host.endswith(".localhost")):
        raise _invalid(f"must not point at {_LOCAL}")
    literal = _literal(host)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    for address in [str(literal)] if literal is not None else _resolved(host, port):
        problem = refusal(address, allow_local)
        if problem is not None:
            raise _invalid(f"must not point at {problem}")


def check_addresses(host: str, port: int) -> list[str]:
    """Resolve `host` and return the addresses a delivery may connect to (and must: the caller
    pins its connection to one of them).

    Raises TargetRefused when the name does not resolve or one of its addresses is refused.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise TargetRefused(f"cannot resolve the target host ({error.strerror})") from None
    except (OSError, UnicodeError, ValueError):
        raise TargetRefused("cannot resolve the target host (not a valid host name)") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    allow_local = config.notify_allow_local_targets()
    for address in addresses:
        problem = refusal(address, allow_local)
        if problem is not None:
            # the address itself stays out of the message: it could map an internal zone
            raise TargetRefused(f"the target host resolves to a refused address: {problem}")
    return addresses


def refusal(address: str, allow_local: bool) -> str | None:
    """Why a notification must not go to `address` (an IP address), or None when it may."""
    ip = _embedded_ipv4(ipaddress.ip_address(address.split("%")[0]))
    if ip.is_link_local or any(ip in network for network in _METADATA):
        return "a link-local or cloud metadata address"
    if ip.is_loopback:  # before is_reserved: ::1 is in IPv6's reserved ::/8
        return None if allow_local else _LOCAL
    if ip.is_unspecified or ip.is_multicast or ip.is_reserved or ip in _THIS_NETWORK:
        return "an unspecified, multicast, broadcast or reserved address"
    if ip.is_global:
        return None
    return None if allow_local else _LOCAL


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


def _literal(host: str) -> IPAddress | None:
    """The address `host` spells, in any form the resolver accepts, or None for a name."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if not _NUMERIC_HOST.fullmatch(host):
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        raise _invalid("is not a valid IP address") from None


def _resolved(host: str, port: int) -> list[str]:
    """The addresses `host` resolves to now; none when it does not resolve (yet): every
    delivery resolves and checks it again."""
    try:
        return [str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]
    except (OSError, UnicodeError, ValueError):
        return []


def _embedded_ipv4(ip: IPAddress) -> IPAddress:
    if isinstance(ip, ipaddress.IPv4Address):
        return ip
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip


def _invalid(problem: str) -> ValidationFailed:
    return ValidationFailed(f"invalid notification target: {problem}", [{"path": "$.target", "message": problem}])
