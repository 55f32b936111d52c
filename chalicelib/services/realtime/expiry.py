"""Closing WebSocket connections whose token has expired (API.md "Real time": code 4001).

A connection keeps the `exp` of the token it was opened with (store/connections.py): from then
on no push reaches it and a message on it is refused. The sweeper (every minute in AWS) then
closes it through the management API — a last `{"type": "error", "error": {"code":
"unauthenticated", ...}}` says why, since API Gateway's `DeleteConnection` picks the close code
itself — and forgets it with its subscriptions. The local gateway closes such a connection
with 4001 the moment its token expires (fleetrun/local/ws_gateway.py).

User tokens cannot be revoked before they expire (there is no revocation list): expiry is
the only end a connection's token has.
"""

from __future__ import annotations

from chalicelib import clock
from chalicelib.errors import Unauthenticated
from chalicelib.observability import logger
from chalicelib.services.realtime import sender
from chalicelib.store import connections

#: the close code of API.md, and the reason the local gateway gives with it
CLOSE_CODE = 4001
CLOSE_REASON = "token expired"
_FAREWELL = {"type": "error", **Unauthenticated("the token has expired: connect again with a new one").document(),
             "close_code": CLOSE_CODE}


def close_expired(now: float | None = None) -> int:
    """Close every connection whose token has expired. Returns how many."""
    now = clock.now_epoch() if now is None else now
    closed = 0
    for item in connections.expired(now):
        if sender.enabled():
            sender.close(item.connection_id, _FAREWELL)
        connections.close_connection(item.connection_id)
        closed += 1
    if closed:
        logger.info("websocket connections closed at token expiry", extra={"closed": closed})
    return closed
