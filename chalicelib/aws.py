"""AWS clients, built on first use (after any mock or endpoint is in place) and cached.

Every client, and every PynamoDB connection (`store/models/base.py`), comes from a botocore
session reading service models through the process's one loader: a model is hundreds of kB of
JSON, and a cold start needs DynamoDB's for each item class PynamoDB connects for, plus six
more services. Read once per process, not once per client.
"""

from __future__ import annotations

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


def session() -> botocore.session.Session:
    """A new botocore session (sessions are not thread-safe; clients are) sharing the loader."""
    core = botocore.session.get_session()
    core.register_component("data_loader", _loader())
    return core


@cache
def client(service: str) -> Any:
    return session().create_client(service, region_name=config.region(), config=_CONFIG)


def reset() -> None:
    client.cache_clear()
