"""Sending: one HTTP POST (urllib3, which the Lambda runtime ships with botocore) and SES e-mail.

The POST connects to an address checked by `targets.check_addresses` (the name is resolved
once and the connection pinned to that address, TLS still verified against the host name),
follows no redirect (a redirect could point inside), never retries by itself (SQS does),
and gives up after the configured timeout (connect and read together).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

import urllib3
from botocore.httpsession import get_cert_path

from chalicelib import aws, config
from chalicelib.errors import TargetRefused, TransportError
from chalicelib.notify import targets

#: bytes of a response body kept (DingTalk and Slack answer errors in the body)
_BODY_LIMIT = 4096


@dataclass(frozen=True)
class HttpAnswer:
    status: int
    body: bytes


def post_json(url: str, payload: bytes, headers: dict[str, str], timeout: float) -> HttpAnswer:
    parts = urlsplit(url)
    host = parts.hostname
    assert host is not None, "targets are validated at subscription time"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        addresses = targets.check_addresses(host, port)
    except TargetRefused as refused:
        raise TransportError(str(refused)) from None
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    sent = {"Host": parts.netloc.rsplit("@", 1)[-1], "Content-Type": "application/json; charset=utf-8",
            "User-Agent": "fleetrun-notify/1", **headers}
    for address in addresses:  # the next address only when one refuses the connection
        pool = _pool(parts.scheme == "https", host, address, port, timeout)
        try:
            response = pool.urlopen("POST", path, body=payload, headers=sent, redirect=False, preload_content=False)
            body = response.read(_BODY_LIMIT)
            response.release_conn()
            return HttpAnswer(response.status, body)
        except urllib3.exceptions.NewConnectionError:  # a subclass of ConnectTimeoutError
            continue
        except (urllib3.exceptions.ConnectTimeoutError, urllib3.exceptions.ReadTimeoutError):
            raise TransportError(f"timed out after {timeout:g} s") from None
        except urllib3.exceptions.HTTPError as error:
            raise TransportError(f"connection failed ({type(error).__name__})") from None
        finally:
            pool.close()
    raise TransportError("connection refused")


def _pool(secure: bool, host: str, address: str, port: int, timeout: float) -> urllib3.HTTPConnectionPool:
    limits = urllib3.Timeout(total=timeout, connect=timeout, read=timeout)
    if secure:
        return urllib3.HTTPSConnectionPool(
            address, port, timeout=limits, retries=False, maxsize=1, server_hostname=host, assert_hostname=host,
            cert_reqs="CERT_REQUIRED", ca_certs=get_cert_path(True),
        )
    return urllib3.HTTPConnectionPool(address, port, timeout=limits, retries=False, maxsize=1)


def send_email(to: str, subject: str, text: str, html: str) -> str:
    """Send through SES from the configured sender; the SES message id."""
    response = aws.client("ses").send_email(
        Source=config.notify_email_sender(),
        Destination={"ToAddresses": [to]},
        Message={
            "Subject": {"Data": subject[:200], "Charset": "UTF-8"},
            "Body": {"Text": {"Data": text, "Charset": "UTF-8"}, "Html": {"Data": html, "Charset": "UTF-8"}},
        },
    )
    return str(response["MessageId"])
