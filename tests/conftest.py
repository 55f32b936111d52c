"""Fixtures shared by every test layer. Integration tests use moto in-process (`aws`)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.harness import MOTO_ENV as _BASE_ENV


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for key in [k for k in os.environ if k.startswith("FLEETRUN_") or k == "AWS_ENDPOINT_URL"]:
        monkeypatch.delenv(key, raising=False)
    for key, value in _BASE_ENV.items():
        monkeypatch.setenv(key, value)
    _reset_caches()
    yield
    _reset_caches()


def _reset_caches() -> None:
    from chalicelib import aws, config, ratelimit
    from chalicelib.services import agent, type_registry
    from chalicelib.store import models

    config.reset()
    aws.reset()
    agent.reset()
    ratelimit.reset()
    models.reset_connections()
    type_registry.forget()


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """moto in-process with every fleetrun resource created; the app's settings point at them."""
    from moto import mock_aws

    from fleetrun.local import moto_fixes
    from fleetrun.local.provision import provision

    moto_fixes.apply()
    with mock_aws():
        _reset_caches()
        provisioned = provision()
        for key, value in provisioned.environment().items():
            monkeypatch.setenv(key, value)
        _reset_caches()
        yield provisioned
        _reset_caches()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked `slow` first: xdist hands tests out in collection order, so a long test
    collected late would finish the run alone on one worker."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
