"""Time, in the formats of the contract. One place so tests can reason about it."""

from __future__ import annotations

import time
from datetime import UTC, datetime


def now_epoch() -> float:
    return time.time()


def rfc3339(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(epoch * 1000) % 1000:03d}Z"


def now_iso() -> str:
    return rfc3339(now_epoch())


def parse_rfc3339(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
