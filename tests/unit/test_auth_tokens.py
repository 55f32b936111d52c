"""User JWTs (HS256), roles, permission checks and node token parsing — no AWS."""

from __future__ import annotations

import base64
import hashlib
import time

import jwt
import pytest

from chalicelib import auth, config
from chalicelib.errors import Forbidden, Unauthenticated

# the suite's secret is short on purpose; PyJWT warns about every HMAC key under 32 bytes
pytestmark = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")

SECRET = "test-secret"  # FLEETRUN_JWT_SECRET in tests/conftest.py


def bearer(token: str) -> str:
    return f"Bearer {token}"


def hs256(claims: dict[str, object], secret: str = SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, secret, algorithm=algorithm)


class TestAuthenticateUserWithHs256:
    def test_valid_token_gives_actor_with_its_roles(self):
        # GIVEN a token minted with the configured secret
        token = auth.mint_token("alice", ["operator"], SECRET)
        # WHEN it is presented
        actor = auth.authenticate_user(bearer(token))
        # THEN the actor is alice, an operator
        assert actor == auth.Actor(user_id="alice", roles=frozenset({"operator"}))

    def test_bearer_scheme_is_case_insensitive(self):
        # GIVEN a valid token sent with a lower-case scheme
        token = auth.mint_token("alice", ["viewer"], SECRET)
        # WHEN / THEN it is accepted
        assert auth.authenticate_user(f"bearer  {token} ").user_id == "alice"

    def test_expired_token_is_unauthenticated(self):
        # GIVEN a token that expired ten seconds ago
        token = auth.mint_token("alice", ["admin"], SECRET, ttl_seconds=-10)
        # WHEN / THEN it is refused as expired
        with pytest.raises(Unauthenticated, match="expired"):
            auth.authenticate_user(bearer(token))

    def test_token_signed_with_another_secret_is_unauthenticated(self):
        # GIVEN a token signed with a secret the service does not know
        token = auth.mint_token("alice", ["admin"], "someone-elses-secret")
        # WHEN / THEN the signature is refused, and the message never echoes the token
        with pytest.raises(Unauthenticated, match="signature") as caught:
            auth.authenticate_user(bearer(token))
        assert token not in caught.value.message
        assert token.split(".")[2] not in str(caught.value.document())

    def test_token_without_sub_is_unauthenticated(self):
        # GIVEN a correctly signed token with no subject
        token = hs256({"roles": ["admin"], "exp": int(time.time()) + 60})
        # WHEN / THEN it is refused, naming the missing claim
        with pytest.raises(Unauthenticated, match="'sub'"):
            auth.authenticate_user(bearer(token))

    def test_token_without_exp_is_unauthenticated(self):
        # GIVEN a correctly signed token that never expires
        token = hs256({"sub": "alice", "roles": ["admin"]})
        # WHEN / THEN it is refused, naming the missing claim
        with pytest.raises(Unauthenticated, match="'exp'"):
            auth.authenticate_user(bearer(token))

    def test_token_with_empty_sub_is_unauthenticated(self):
        # GIVEN a correctly signed token whose subject is empty
        token = hs256({"sub": "", "roles": ["admin"], "exp": int(time.time()) + 60})
        # WHEN / THEN it is refused
        with pytest.raises(Unauthenticated, match="sub"):
            auth.authenticate_user(bearer(token))

    @pytest.mark.parametrize("algorithm", ["HS512", "HS384"])
    def test_token_with_another_hmac_algorithm_is_unauthenticated(self, algorithm):
        # GIVEN a token signed with the right secret but not with HS256
        token = hs256({"sub": "alice", "roles": ["admin"], "exp": int(time.time()) + 60}, algorithm=algorithm)
        # WHEN / THEN its algorithm is refused
        with pytest.raises(Unauthenticated, match="algorithm"):
            auth.authenticate_user(bearer(token))

    def test_unsigned_token_is_unauthenticated(self):
        # GIVEN a token with `alg: none`
        token = jwt.encode({"sub": "alice", "roles": ["admin"], "exp": int(time.time()) + 60}, "", algorithm="none")
        # WHEN / THEN it is refused
        with pytest.raises(Unauthenticated, match="algorithm"):
            auth.authenticate_user(bearer(token))

    def test_rs256_token_without_configured_issuer_is_unauthenticated(self):
        # GIVEN a token whose header claims RS256 while no OIDC issuer is configured
        header = base64.urlsafe_b64encode(b'{"alg":"RS256","typ":"JWT"}').rstrip(b"=").decode()
        token = f"{header}.e30.c2ln"
        # WHEN / THEN it is refused before any key lookup
        with pytest.raises(Unauthenticated, match=r"accepted: HS256\)"):
            auth.authenticate_user(bearer(token))

    def test_hs256_token_without_configured_secret_is_unauthenticated(self, monkeypatch):
        # GIVEN no HS256 secret outside local mode
        monkeypatch.delenv("FLEETRUN_JWT_SECRET")
        config.reset()
        token = auth.mint_token("alice", ["admin"], SECRET)
        # WHEN / THEN HS256 tokens are not accepted at all
        with pytest.raises(Unauthenticated, match="accepted: none"):
            auth.authenticate_user(bearer(token))

    @pytest.mark.parametrize(
        "authorization",
        [None, "", "Bearer", "Bearer   ", "Basic YWxpY2U6cHc=", "Token abc", "Bearer not-a-jwt"],
    )
    def test_missing_or_malformed_header_is_unauthenticated(self, authorization):
        # GIVEN / WHEN / THEN anything but a well-formed bearer JWT is refused
        with pytest.raises(Unauthenticated):
            auth.authenticate_user(authorization)


class TestRoles:
    def test_roles_claim_keeps_only_fleetrun_roles(self):
        # GIVEN a token granting a fleetrun role among unrelated ones
        token = auth.mint_token("bob", ["viewer", "superuser", "operator"], SECRET)
        # WHEN it is presented
        actor = auth.authenticate_user(bearer(token))
        # THEN only the fleetrun roles remain
        assert actor.roles == frozenset({"viewer", "operator"})

    def test_cognito_groups_grant_roles(self):
        # GIVEN a Cognito-style token carrying groups instead of roles
        token = hs256({"sub": "carol", "cognito:groups": ["admin", "billing"], "exp": int(time.time()) + 60})
        # WHEN it is presented
        actor = auth.authenticate_user(bearer(token))
        # THEN the groups are the roles
        assert actor.roles == frozenset({"admin"})
        assert actor.is_admin

    @pytest.mark.parametrize("roles", [[], ["superuser"], "admin"])
    def test_token_without_fleetrun_role_is_forbidden(self, roles):
        # GIVEN a valid token that grants no fleetrun role (a string is not a list of roles)
        token = hs256({"sub": "dave", "roles": roles, "exp": int(time.time()) + 60})
        # WHEN / THEN the caller is known but not allowed anything
        with pytest.raises(Forbidden, match="none of the roles"):
            auth.authenticate_user(bearer(token))


@pytest.mark.parametrize(
    ("roles", "permission", "allowed"),
    [
        ({"viewer"}, "read", True),
        ({"viewer"}, "write", False),
        ({"viewer"}, "admin", False),
        ({"operator"}, "read", True),
        ({"operator"}, "write", True),
        ({"operator"}, "admin", False),
        ({"admin"}, "read", True),
        ({"admin"}, "write", True),
        ({"admin"}, "admin", True),
        (set(), "read", False),
    ],
)
def test_require_allows_exactly_the_roles_of_the_contract(roles, permission, allowed):
    # GIVEN an actor with these roles
    actor = auth.Actor(user_id="u", roles=frozenset(roles))
    # WHEN the permission is required
    if allowed:
        auth.require(actor, permission)
    # THEN it passes, or fails naming the least role needed
    else:
        least = {"read": "viewer", "write": "operator", "admin": "admin"}[permission]
        with pytest.raises(Forbidden, match=f"requires the {least} role"):
            auth.require(actor, permission)


class TestNodeTokens:
    @pytest.mark.parametrize("node_id", ["edge-12", "salt.master:01", "a", "N" * 128])
    def test_token_names_its_node_and_hash_is_sha256_of_the_token(self, node_id):
        # GIVEN a new token for a node
        token, token_hash = auth.new_node_token(node_id)
        # WHEN its node id is read back
        parsed = auth.node_id_from_token(token)
        # THEN it is the node, the hash is the token's SHA-256 and the token is URL-safe
        assert parsed == node_id
        assert token_hash == hashlib.sha256(token.encode()).hexdigest()
        prefix, encoded, secret = token.split(".")
        assert prefix == "frn"
        assert "=" not in encoded
        assert len(secret) >= 43

    def test_tokens_are_unique(self):
        # GIVEN / WHEN two tokens for the same node / THEN they differ
        assert auth.new_node_token("edge-12")[0] != auth.new_node_token("edge-12")[0]

    @pytest.mark.parametrize(
        "token",
        [
            "",
            "frn",
            "frn.ZWRnZS0xMg",  # no secret
            "xyz.ZWRnZS0xMg.secret",  # wrong prefix
            "frn..secret",  # no node id
            "frn.ZWRnZS0xMg.sec.ret",  # too many parts
            "frn.ZWRn*ZS0xMg.secret",  # not canonical base64url
            "frn.L2V0Yy9wYXNzd2Q.secret",  # "/etc/passwd": not a node id
            "frn.__8.secret",  # not UTF-8
        ],
    )
    def test_malformed_node_token_is_unauthenticated(self, token):
        # GIVEN / WHEN / THEN a malformed token never yields a node id
        with pytest.raises(Unauthenticated, match="node token is not valid"):
            auth.node_id_from_token(token)

    def test_invalid_node_id_cannot_get_a_token(self):
        # GIVEN / WHEN / THEN
        with pytest.raises(ValueError, match="invalid node id"):
            auth.new_node_token("edge 12")

    def test_require_node_forbids_another_nodes_routes(self):
        # GIVEN a node authenticated as edge-12
        auth.require_node("edge-12", "edge-12")
        # WHEN it calls a route of edge-13 / THEN it is forbidden
        with pytest.raises(Forbidden):
            auth.require_node("edge-12", "edge-13")
