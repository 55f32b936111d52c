"""Fixtures shared by every test layer. Integration tests use moto in-process (`aws`)."""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from typing import Any

import pytest

from tests.harness import MOTO_ENV as _BASE_ENV
from tests.harness import reset_caches as _reset_caches

#: the fidelity settings the run was started with (`_isolated_environment` clears FLEETRUN_*)
_FIDELITY_ENV = {k: v for k, v in os.environ.items() if k.startswith("FLEETRUN_FIDELITY")}
_FIDELITY_SEED = pytest.StashKey[tuple[str, int]]()


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for key in [k for k in os.environ if k.startswith("FLEETRUN_") or k == "AWS_ENDPOINT_URL"]:
        monkeypatch.delenv(key, raising=False)
    for key, value in _BASE_ENV.items():
        monkeypatch.setenv(key, value)
    _reset_caches()
    yield
    _reset_caches()


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Iterator[object]:
    """moto in-process with every fleetrun resource created; the app's settings point at them."""
    import boto3
    from moto import mock_aws

    from chalicelib.aws import new_session
    from fleetrun.local import fidelity, moto_fixes
    from fleetrun.local.fidelity import dynamo
    from fleetrun.local.provision import provision

    moto_fixes.apply()
    dynamo.apply()
    for key, value in _FIDELITY_ENV.items():
        monkeypatch.setenv(key, value)
    installed = fidelity.Fidelity.from_env(default_mode="strict")
    if installed.strict:  # botocore waits rand(0, 1 s) before retrying a throttle: 25 ms in tests
        from botocore.retries.standard import ExponentialBackoff

        monkeypatch.setitem(ExponentialBackoff._DEFAULT_BACKOFF_CONFIG, "throttling_base_scale", 0.025)
    previous = fidelity.install(installed)
    request.node.stash[_FIDELITY_SEED] = (installed.mode, installed.seed)
    try:
        with mock_aws():
            # moto's mock starts boto3 without a default session: the tests' `boto3.client`
            # calls share the app's service-model loader instead of reading every model and the
            # endpoints file again for each test (about a third of a small test's time)
            boto3.setup_default_session(botocore_session=new_session())
            _reset_caches()
            provisioned = provision()
            for key, value in provisioned.environment().items():
                monkeypatch.setenv(key, value)
            _reset_caches()
            yield provisioned
            _reset_caches()
    finally:
        fidelity.install(previous)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    """A failed test that ran on the strict fidelity layer says how to replay its injections."""
    outcome = yield
    report = outcome.get_result()
    mode, seed = item.stash.get(_FIDELITY_SEED, ("off", 0))
    if report.failed and mode == "strict":
        line = f"fidelity seed: {seed} (replay with FLEETRUN_FIDELITY_SEED={seed})"
        report.sections.append(("fidelity", line))
        print(f"\n{item.nodeid}: {line}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked `slow` first: xdist hands tests out in collection order, so a long test
    collected late would finish the run alone on one worker."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
