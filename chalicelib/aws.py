"""AWS clients, built on first use (after any mock or endpoint is in place) and cached.

Every client, and every PynamoDB connection (`store/models/base.py`), comes from its thread's
botocore session, reading service models through the process's one loader: a model is hundreds
of kB of JSON, and a cold start needs DynamoDB's for each item class PynamoDB connects for, plus
six more services. Read once per process, not once per client.
"""

from __future__ import annotations

import threading
from functools import cache
from typing import Any

import botocore.loaders
import botocore.session
from botocore.config import Config

from chalicelib import config

#: standard retries (throttles and transient errors, with backoff): "adaptive" mode's client-side
#: rate limiter slows every later call of the process after one throttle on one hot partition
_CONFIG = Config(retries={"max_attempts": 5, "mode": "standard"}, max_pool_connections=32)


@cache
def _loader() -> botocore.loaders.Loader:
    return botocore.loaders.create_loader()


def new_session() -> botocore.session.Session:
    """A new botocore session reading models through the process's loader."""
    core = botocore.session.get_session()
    core.register_component("data_loader", _loader())
    return core


class _ThreadSessions(threading.local):
    #: this thread's session, and the `reset()` it was made after
    session: botocore.session.Session | None = None
    made_after = -1


_sessions = _ThreadSessions()
_resets = 0


def session() -> botocore.session.Session:
    """This thread's botocore session (sessions are not thread-safe; clients are). Making one
    costs about as much as making a client from it: every client of a thread comes from one."""
    if _sessions.session is None or _sessions.made_after != _resets:
        _sessions.session, _sessions.made_after = new_session(), _resets
    return _sessions.session


@cache
def client(service: str) -> Any:
    return session().create_client(service, region_name=config.region(), config=_CONFIG)


def reset() -> None:
    """Forget the clients and sessions (a new mock or endpoint needs fresh ones)."""
    global _resets
    client.cache_clear()
    _resets += 1
