"""RS256 user tokens verified against a real JWKS endpoint served over HTTP on 127.0.0.1."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from chalicelib import auth, config
from chalicelib.errors import Forbidden, Unauthenticated

POOL = "us-east-1_TESTPOOL"
KID = "key-1"
CLIENT_ID = "fleetrun-dashboard"


@dataclass
class Issuer:
    url: str
    key: rsa.RSAPrivateKey
    requests: list[str] = field(default_factory=list)

    def token(self, key: rsa.RSAPrivateKey | None = None, kid: str = KID, **claims: Any) -> str:
        now = int(time.time())
        payload = {"sub": "alice", "iss": self.url, "iat": now, "exp": now + 300, **claims}
        return jwt.encode(payload, key or self.key, algorithm="RS256", headers={"kid": kid})


def new_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def issuer() -> Iterator[Issuer]:
    """A Cognito-like issuer (`http://127.0.0.1:<port>/<pool>`) serving its JWKS."""
    key = new_rsa_key()
    jwk = {**RSAAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": KID, "use": "sig", "alg": "RS256"}
    body = json.dumps({"keys": [jwk]}).encode()
    requests: list[str] = []

    class JwksHandler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            requests.append(self.path)
            found = self.path == f"/{POOL}/.well-known/jwks.json"
            self.send_response(200 if found else 404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body if found else b"{}")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), JwksHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Issuer(url=f"http://127.0.0.1:{server.server_address[1]}/{POOL}", key=key, requests=requests)
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture(autouse=True)
def oidc_settings(issuer: Issuer, monkeypatch: pytest.MonkeyPatch) -> None:
    # only the OIDC issuer is trusted; no HS256 secret, and never a proxy for 127.0.0.1
    monkeypatch.setenv("FLEETRUN_OIDC_ISSUER", issuer.url)
    monkeypatch.delenv("FLEETRUN_JWT_SECRET", raising=False)
    for proxy in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(proxy, raising=False)
    config.reset()


def test_token_signed_by_the_issuer_gives_actor_with_cognito_groups(issuer):
    # GIVEN a token signed with the issuer's key carrying Cognito groups
    token = issuer.token(**{"cognito:groups": ["operator", "everyone"]})
    # WHEN it is presented
    actor = auth.authenticate_user(f"Bearer {token}")
    # THEN the user and the fleetrun roles are read from it
    assert actor == auth.Actor(user_id="alice", roles=frozenset({"operator"}))
    assert f"/{POOL}/.well-known/jwks.json" in issuer.requests


def test_key_set_is_fetched_once_for_many_tokens(issuer):
    # GIVEN the issuer's key set was fetched already
    auth.authenticate_user(f"Bearer {issuer.token(roles=['viewer'])}")
    fetched = len(issuer.requests)
    # WHEN more tokens are verified
    for _ in range(3):
        auth.authenticate_user(f"Bearer {issuer.token(roles=['viewer'])}")
    # THEN the cached key set serves them
    assert len(issuer.requests) == fetched


def test_token_signed_by_another_key_with_the_same_kid_is_unauthenticated(issuer):
    # GIVEN a forger's token that names the issuer's key id
    token = issuer.token(key=new_rsa_key(), roles=["admin"])
    # WHEN / THEN its signature is refused
    with pytest.raises(Unauthenticated, match="signature"):
        auth.authenticate_user(f"Bearer {token}")


def test_token_with_unknown_kid_is_unauthenticated(issuer):
    # GIVEN a token signed by a key the issuer does not publish
    token = issuer.token(key=new_rsa_key(), kid="forged-key", roles=["admin"])
    # WHEN / THEN no signing key is found for it
    with pytest.raises(Unauthenticated, match="signing key"):
        auth.authenticate_user(f"Bearer {token}")


def test_token_from_another_issuer_is_unauthenticated(issuer):
    # GIVEN a token signed with the right key but claiming another issuer
    token = issuer.token(iss="https://evil.example.com/pool", roles=["admin"])
    # WHEN / THEN the issuer is refused
    with pytest.raises(Unauthenticated, match="issuer"):
        auth.authenticate_user(f"Bearer {token}")


def test_expired_rs256_token_is_unauthenticated(issuer):
    # GIVEN a token that expired a minute ago
    token = issuer.token(exp=int(time.time()) - 60, roles=["admin"])
    # WHEN / THEN
    with pytest.raises(Unauthenticated, match="expired"):
        auth.authenticate_user(f"Bearer {token}")


@pytest.mark.parametrize(
    "claims",
    [
        {"aud": CLIENT_ID},  # Cognito ID token, or any OIDC token
        {"aud": ["other-api", CLIENT_ID]},
        {"client_id": CLIENT_ID, "token_use": "access"},  # Cognito access token: no `aud`
    ],
)
def test_configured_audience_accepts_aud_or_client_id(issuer, monkeypatch, claims):
    # GIVEN an expected audience
    monkeypatch.setenv("FLEETRUN_OIDC_AUDIENCE", CLIENT_ID)
    config.reset()
    # WHEN a token for that audience is presented
    actor = auth.authenticate_user(f"Bearer {issuer.token(roles=['viewer'], **claims)}")
    # THEN it is accepted
    assert actor.can_read


@pytest.mark.parametrize("claims", [{"aud": "another-client"}, {"client_id": "another-client"}, {}])
def test_configured_audience_refuses_tokens_for_other_clients(issuer, monkeypatch, claims):
    # GIVEN an expected audience
    monkeypatch.setenv("FLEETRUN_OIDC_AUDIENCE", CLIENT_ID)
    config.reset()
    # WHEN / THEN a token for another (or no) audience is refused
    with pytest.raises(Unauthenticated, match="audience"):
        auth.authenticate_user(f"Bearer {issuer.token(roles=['viewer'], **claims)}")


def test_issuer_token_without_fleetrun_role_is_forbidden(issuer):
    # GIVEN a valid issuer token whose groups are unrelated to fleetrun
    token = issuer.token(**{"cognito:groups": ["billing"]})
    # WHEN / THEN
    with pytest.raises(Forbidden):
        auth.authenticate_user(f"Bearer {token}")


def test_hs256_token_is_refused_when_only_the_issuer_is_trusted():
    # GIVEN an HS256 token while no HS256 secret is configured
    token = jwt.encode({"sub": "mallory", "roles": ["admin"], "exp": int(time.time()) + 60}, "guess" * 8)
    # WHEN / THEN its algorithm is refused
    with pytest.raises(Unauthenticated, match=r"accepted: RS256\)"):
        auth.authenticate_user(f"Bearer {token}")
