"""Who is calling: users carry a JWT, agents carry a node token (API.md, "Authentication and roles").

User JWTs are HS256 tokens signed with `FLEETRUN_JWT_SECRET` (local mode, tests, the CLI) or
RS256 tokens from an OIDC issuer such as a Cognito user pool, verified with the issuer's JWKS.
Node tokens are random; the table stores only their SHA-256 and the token names its node, so
checking one is a single GetItem.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal

import jwt

from chalicelib import clock, config
from chalicelib.domain.records import Node
from chalicelib.domain.task_types import SERVICE_NODE
from chalicelib.errors import Forbidden, NotFound, Unauthenticated
from chalicelib.store import inventory

ADMIN, OPERATOR, VIEWER = "admin", "operator", "viewer"
#: the only roles a token may grant; any other value in its claims is ignored
ROLES = frozenset({ADMIN, OPERATOR, VIEWER})
#: the least role each permission level needs (for the Forbidden message)
_LEAST_ROLE = {"read": VIEWER, "write": OPERATOR, "admin": ADMIN}
_ROLE_CLAIMS = ("roles", "cognito:groups")
_JWKS_TIMEOUT_SECONDS = 5
_NODE_TOKEN_PREFIX = "frn"
_NODE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_BAD_NODE_TOKEN = "the node token is not valid"

Permission = Literal["read", "write", "admin"]


@dataclass(frozen=True)
class Actor:
    """An authenticated user and the fleetrun roles their token grants."""

    user_id: str
    roles: frozenset[str]
    #: the token's `exp` (epoch seconds): a WebSocket connection opened with it closes then (not
    #: part of who the actor is: two tokens of one user are one actor)
    expires_at: float | None = field(default=None, compare=False)

    @property
    def is_admin(self) -> bool:
        return ADMIN in self.roles

    @property
    def can_write(self) -> bool:
        return bool(self.roles & {ADMIN, OPERATOR})

    @property
    def can_read(self) -> bool:
        return bool(self.roles & ROLES)


def authenticate_user(authorization: str | None) -> Actor:
    """The user behind an `Authorization: Bearer <JWT>` header.

    Raises Unauthenticated when the header, signature, issuer, audience or claims are not
    acceptable, and Forbidden when the token grants none of admin/operator/viewer.
    """
    claims = _verify(_bearer(authorization))
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise Unauthenticated("the token's 'sub' claim must be a non-empty string")
    roles = _roles(claims)
    if not roles:
        raise Forbidden(f"the token grants none of the roles {', '.join(sorted(ROLES))}")
    exp = claims.get("exp")  # required by `_verify`
    return Actor(user_id=sub, roles=roles, expires_at=float(exp) if isinstance(exp, int | float) else None)


def require(actor: Actor, permission: Permission) -> None:
    """Raise Forbidden unless `actor` may `read`, `write` or act as `admin`."""
    allowed = {"read": actor.can_read, "write": actor.can_write, "admin": actor.is_admin}[permission]
    if not allowed:
        raise Forbidden(f"this action requires the {_LEAST_ROLE[permission]} role")


def mint_token(sub: str, roles: list[str], secret: str, ttl_seconds: int = 12 * 3600) -> str:
    """An HS256 user token (local mode, tests and the CLI)."""
    now = int(clock.now_epoch())
    return jwt.encode({"sub": sub, "roles": roles, "iat": now, "exp": now + ttl_seconds}, secret, algorithm="HS256")


def new_node_token(node_id: str) -> tuple[str, str]:
    """A fresh agent token for `node_id` and the hash to store: `(token, token_hash)`.

    Raises ValueError for a node id outside `^[A-Za-z0-9._:-]{1,128}$`.
    """
    if not _NODE_ID.match(node_id):
        raise ValueError(f"invalid node id {node_id!r}")
    token = f"{_NODE_TOKEN_PREFIX}.{_b64encode(node_id)}.{secrets.token_urlsafe(32)}"
    return token, hash_node_token(token)


def hash_node_token(token: str) -> str:
    """The stored form of a node token: SHA-256, hex."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def node_id_from_token(token: str) -> str:
    """The node a token names (not yet verified). Raises Unauthenticated when malformed."""
    prefix, _, rest = token.partition(".")
    encoded, _, secret = rest.partition(".")
    if prefix != _NODE_TOKEN_PREFIX or not encoded or not secret or "." in secret:
        raise Unauthenticated(_BAD_NODE_TOKEN)
    try:
        node_id = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise Unauthenticated(_BAD_NODE_TOKEN) from None
    # the lenient decoder skips stray characters: only the canonical encoding names a node
    if not _NODE_ID.match(node_id) or _b64encode(node_id) != encoded:
        raise Unauthenticated(_BAD_NODE_TOKEN)
    return node_id


def is_node_token(authorization: str | None) -> bool:
    """Whether an `Authorization` header carries a node token (by its prefix; not verified)."""
    scheme, _, token = (authorization or "").strip().partition(" ")
    return scheme.lower() == "bearer" and token.strip().startswith(_NODE_TOKEN_PREFIX + ".")


def authenticate_node(authorization: str | None) -> str:
    """The node id behind an `Authorization: Bearer <node token>` header.

    Raises Unauthenticated when the token is malformed, its node is unknown or its hash differs.
    """
    return str(authenticate_node_item(authorization).node_id)


def authenticate_node_item(authorization: str | None) -> Node:
    """The node item behind a node token, as read (strongly consistent) to verify it.

    Raises Unauthenticated like `authenticate_node`, and Forbidden for a node registered as
    `service` before that id was reserved (it would act for the runs the service executes).
    """
    token = _bearer(authorization)
    node_id = node_id_from_token(token)
    try:
        # consistent: a node registered (or a token rotated) a moment ago must be honoured at once
        node = inventory.get(node_id)
    except NotFound:
        raise Unauthenticated(_BAD_NODE_TOKEN) from None
    if not hmac.compare_digest(node.token_hash, hash_node_token(token)):
        raise Unauthenticated(_BAD_NODE_TOKEN)
    if node.node_id == SERVICE_NODE:
        raise Forbidden(f"node id {SERVICE_NODE!r} is reserved for the runs the service executes itself: "
                        "deregister this node and register it under another id")
    return node


def require_node(node_id: str, expected: str) -> None:
    """Raise Forbidden unless the authenticated node is the one the route is about."""
    if node_id != expected:
        raise Forbidden(f"the token of node {node_id} is valid only for that node's routes")


def _bearer(authorization: str | None) -> str:
    scheme, _, token = (authorization or "").strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthenticated("missing or malformed Authorization header: expected 'Bearer <token>'")
    return token


def _verify(token: str) -> dict[str, Any]:
    try:
        algorithm = jwt.get_unverified_header(token).get("alg")
        if algorithm == "HS256" and config.jwt_secret():
            return jwt.decode(token, config.jwt_secret(), algorithms=["HS256"], options={"require": ["sub", "exp"]})
        if algorithm == "RS256" and config.oidc_issuer():
            return _verify_oidc(token, config.oidc_issuer())
    except jwt.ExpiredSignatureError as exc:
        raise Unauthenticated("the token has expired") from exc
    except jwt.MissingRequiredClaimError as exc:
        raise Unauthenticated(f"the token lacks the required {exc.claim!r} claim") from exc
    except jwt.ImmatureSignatureError as exc:
        raise Unauthenticated("the token is not valid yet") from exc
    except jwt.InvalidIssuerError as exc:
        raise Unauthenticated("the token was not issued by the configured issuer") from exc
    except jwt.InvalidAudienceError as exc:
        raise Unauthenticated("the token was issued for another audience") from exc
    except jwt.PyJWKClientError as exc:
        raise Unauthenticated("the token's signing key could not be obtained from the issuer") from exc
    except jwt.PyJWTError as exc:
        raise Unauthenticated("the token is malformed or its signature is invalid") from exc
    configured = {"HS256": config.jwt_secret(), "RS256": config.oidc_issuer()}
    accepted = ", ".join(alg for alg, setting in configured.items() if setting) or "none"
    raise Unauthenticated(f"the token's algorithm is not accepted here (accepted: {accepted})")


def _verify_oidc(token: str, issuer: str) -> dict[str, Any]:
    key = _jwks_client(issuer.rstrip("/") + "/.well-known/jwks.json").get_signing_key_from_jwt(token)
    claims = jwt.decode(
        token,
        key,
        algorithms=["RS256"],
        issuer=issuer,
        # checked below: Cognito access tokens carry `client_id` instead of `aud`
        options={"require": ["sub", "exp", "iss"], "verify_aud": False},
    )
    audience = config.oidc_audience()
    if audience and audience not in _audiences(claims):
        raise Unauthenticated("the token was issued for another audience")
    return claims


@cache
def _jwks_client(url: str) -> jwt.PyJWKClient:
    # PyJWKClient caches the key set and refetches it when it meets an unknown `kid` (rotation)
    return jwt.PyJWKClient(url, timeout=_JWKS_TIMEOUT_SECONDS)


def _audiences(claims: dict[str, Any]) -> set[str]:
    aud = claims.get("aud")
    candidates = [*aud] if isinstance(aud, list) else [aud]
    return {value for value in [*candidates, claims.get("client_id")] if isinstance(value, str)}


def _roles(claims: dict[str, Any]) -> frozenset[str]:
    found: set[str] = set()
    for name in _ROLE_CLAIMS:
        value = claims.get(name)
        if isinstance(value, list):
            found.update(role for role in value if isinstance(role, str))
    return frozenset(found & ROLES)


def _b64encode(node_id: str) -> str:
    return base64.urlsafe_b64encode(node_id.encode("utf-8")).rstrip(b"=").decode("ascii")
