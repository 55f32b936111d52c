"""The HTTPS path of notification delivery against a real TLS server on loopback: the connection
is pinned to the checked address while the certificate is verified against the host name."""

from __future__ import annotations

import datetime
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from chalicelib import config
from chalicelib.errors import TransportError
from chalicelib.notify import transport


def _self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class _Handler(BaseHTTPRequestHandler):
    bodies: list[tuple[str, bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        _Handler.bodies.append((self.headers.get("Host", ""), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def tls_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[int, Path]]:
    monkeypatch.setenv("FLEETRUN_NOTIFY_ALLOW_LOCAL_TARGETS", "1")
    config.reset()
    cert, key = _self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Handler.bodies = []
    yield server.server_address[1], cert
    server.shutdown()
    server.server_close()


def test_a_certificate_the_trust_store_does_not_know_is_refused(tls_server):
    port, _ = tls_server
    with pytest.raises(TransportError, match="connection failed"):
        transport.post_json(f"https://localhost:{port}/hook", b"{}", {}, 2.0)
    assert _Handler.bodies == []


def test_a_trusted_certificate_for_the_host_name_is_accepted_on_the_pinned_address(tls_server, monkeypatch):
    port, cert = tls_server
    monkeypatch.setattr(transport, "get_cert_path", lambda verify: str(cert))

    answer = transport.post_json(f"https://localhost:{port}/hook?x=1", b'{"a":1}', {"X-Test": "1"}, 2.0)

    assert answer.status == 204
    assert _Handler.bodies == [(f"localhost:{port}", b'{"a":1}')]


def test_a_refused_connection_is_reported_as_refused_not_as_a_timeout(monkeypatch):
    import socket

    monkeypatch.setenv("FLEETRUN_NOTIFY_ALLOW_LOCAL_TARGETS", "1")
    config.reset()
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    with pytest.raises(TransportError, match=r"^connection refused$"):
        transport.post_json(f"http://127.0.0.1:{port}/hook", b"{}", {}, 2.0)
