"""AWS clients, built on first use (after any mock or endpoint is in place) and cached."""

from __future__ import annotations

from functools import cache
from typing import Any

import boto3
from botocore.config import Config

from chalicelib import config

_CONFIG = Config(retries={"max_attempts": 5, "mode": "adaptive"}, max_pool_connections=32)


@cache
def client(service: str) -> Any:
    return boto3.session.Session().client(service, region_name=config.region(), config=_CONFIG)


def reset() -> None:
    client.cache_clear()
