"""Secret task parameters: masked in the task item, sealed with KMS envelope encryption.

A task stores its parameters with every secret value replaced by `MASK`, plus one sealed
blob: a KMS data key (encrypted under `config.kms_key_id()`) and the secret values
encrypted with it (AES-256-GCM). Only the claim route reveals them, to the agent that
runs the node; everything an agent sends back is passed through `redact`.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import os
import re
from collections.abc import Iterable, Iterator
from functools import lru_cache
from typing import Any, Final

from botocore.exceptions import ClientError
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from chalicelib import aws, config
from chalicelib.errors import FleetrunError

MASK: Final = "***"
_VERSION: Final = 1
_NONCE_BYTES: Final = 12
#: bound to both the KMS data key and the AES ciphertext: a blob made for another purpose won't open
_CONTEXT: Final = {"purpose": "fleetrun-task-secrets"}
_AAD: Final = json.dumps(_CONTEXT, sort_keys=True, separators=(",", ":")).encode()


def split(parameters: dict[str, Any], secret_paths: frozenset[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return (parameters with each present secret replaced by `MASK`, the secret values by path).

    A secret path is dotted (`credentials.password`: the `password` field of the `credentials`
    object); a top-level name is a path of one part. The value at a path is masked whole, so a
    secret object or list is secret in every value it holds. A path a parameter does not reach
    (left out, or not an object on the way) masks nothing.
    """
    masked = copy.deepcopy(parameters)
    secret_values: dict[str, Any] = {}
    for path in sorted(secret_paths, key=lambda p: p.count(".")):  # a secret object before its fields
        parent, name = _parent(masked, path)
        if parent is not None and name in parent and parent[name] != MASK:
            secret_values[path] = _at(parameters, path)
            parent[name] = MASK
    return masked, secret_values


def seal(values: dict[str, Any]) -> str | None:
    """Encrypt secret values under a fresh KMS data key; None when there is nothing to seal."""
    if not values:
        return None
    data_key = aws.client("kms").generate_data_key(
        KeyId=config.kms_key_id(), KeySpec="AES_256", EncryptionContext=_CONTEXT
    )
    nonce = os.urandom(_NONCE_BYTES)
    clear = json.dumps(values, separators=(",", ":")).encode()
    ciphertext = AESGCM(data_key["Plaintext"]).encrypt(nonce, clear, _AAD)
    blob = {"v": _VERSION, "k": _b64(data_key["CiphertextBlob"]), "n": _b64(nonce), "c": _b64(ciphertext)}
    return json.dumps(blob, separators=(",", ":"))


def unseal(blob: str | None) -> dict[str, Any]:
    """Decrypt a `seal` blob ({} for None).

    Raises FleetrunError when the blob is malformed or was tampered with; KMS errors a
    retry can fix (throttling, network) propagate unchanged.
    """
    if not blob:
        return {}
    try:
        sealed = json.loads(blob)
        if sealed.get("v") != _VERSION:
            raise ValueError(f"unknown sealed secrets version {sealed.get('v')!r}")
        key = _data_key(base64.b64decode(sealed["k"], validate=True))
        clear = AESGCM(key).decrypt(
            base64.b64decode(sealed["n"], validate=True), base64.b64decode(sealed["c"], validate=True), _AAD
        )
        values: dict[str, Any] = json.loads(clear)
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error, InvalidTag) as exc:
        raise FleetrunError("sealed task secrets could not be opened") from exc
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "InvalidCiphertextException":
            raise
        raise FleetrunError("sealed task secrets could not be opened") from exc
    return values


def reveal(masked: dict[str, Any], sealed: str | None) -> dict[str, Any]:
    """Parameters with the secret values put back at their paths (only the claim route and the
    service's own executors may call this)."""
    revealed = copy.deepcopy(masked)
    for path, value in unseal(sealed).items():
        parent, name = _parent(revealed, path)
        if parent is not None:
            parent[name] = value
    return revealed


def _parent(parameters: dict[str, Any], path: str) -> tuple[dict[str, Any] | None, str]:
    """The object holding the last part of a dotted path, and that part's name (None when the
    parameters have no object there)."""
    *parents, name = path.split(".")
    current: Any = parameters
    for part in parents:
        current = current.get(part) if isinstance(current, dict) else None
    return (current if isinstance(current, dict) else None), name


def _at(parameters: dict[str, Any], path: str) -> Any:
    parent, name = _parent(parameters, path)
    assert parent is not None
    return parent[name]


def redact(value: Any, secret_values: Iterable[str]) -> Any:
    """Replace every occurrence of a secret value inside the strings of a nested structure."""
    needles = sorted({str(s) for s in secret_values if _redactable(s)}, key=len, reverse=True)
    if not needles:
        return value
    pattern = re.compile("|".join(re.escape(needle) for needle in needles))
    return _redact(value, pattern)


def reset() -> None:
    """Forget cached data keys (tests)."""
    _data_key.cache_clear()


# One Decrypt per data key per container: a task's blob is read by every claim of its runs.
@lru_cache(maxsize=256)
def _data_key(encrypted_key: bytes) -> bytes:
    plaintext: bytes = aws.client("kms").decrypt(CiphertextBlob=encrypted_key, EncryptionContext=_CONTEXT)["Plaintext"]
    return plaintext


def leaves(values: Any) -> list[Any]:
    """Every value a secret holds: the strings and numbers of a nested object or list, each on
    its own (an agent that echoes one value of a secret object echoes that value, not the object)."""
    return [value for _, value in _leaves(values, "$")]


def too_short(values: dict[str, Any], shortest: int) -> list[str]:
    """The dotted paths of secret values shorter than `shortest` characters: they cannot be
    masked safely (a 2-character secret would mask every word that holds it)."""
    return [path for path, value in _leaves(values, "$.parameters") if len(str(value)) < shortest]


def _leaves(value: Any, path: str) -> Iterator[tuple[str, Any]]:
    """(dotted path, value) of every string and number inside `value`."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, f"{path}.{key}")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _leaves(item, f"{path}[{index}]")
    elif _redactable(value):
        yield path, value


def _redact(value: Any, pattern: re.Pattern[str]) -> Any:
    if isinstance(value, str):
        return pattern.sub(MASK, value)
    if isinstance(value, dict):  # keys too: an event's data may name a secret as a key
        return {_redact(key, pattern): _redact(item, pattern) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_redact(item, pattern) for item in value)
    return value


def _redactable(secret: Any) -> bool:
    # numbers count too (a PIN echoed in a message); empty strings would match everywhere
    return (isinstance(secret, str) and secret != "") or (
        isinstance(secret, int | float) and not isinstance(secret, bool)
    )


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")
