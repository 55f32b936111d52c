"""The service's clock, moved forward by a test (leases, reservations and windows lapse at once)."""

from __future__ import annotations

import time

import jwt
import pytest

from chalicelib import clock
from tests import harness


def _real_time_token(user: str = "alice", roles: tuple[str, ...] = ("operator",)) -> str:
    now = int(time.time())
    return jwt.encode({"sub": user, "roles": list(roles), "iat": now, "exp": now + 3600}, harness.SECRET,
                      algorithm="HS256")


class Clock:
    """The service's clock (`chalicelib.clock.now_epoch`) at an offset from the real time."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.offset = 0.0
        monkeypatch.setattr(clock, "now_epoch", lambda: time.time() + self.offset)
        # user tokens are issued at the real time (PyJWT checks `iat` against it)
        monkeypatch.setattr(harness, "token", _real_time_token)

    def advance(self, seconds: float) -> None:
        self.offset += seconds

    def now(self) -> float:
        return time.time() + self.offset
