"""Fixtures of the end-to-end tests: the local runtime as a real process (tests/e2e/stack.py),
started once per test module, and agents that never outlive the test that started them."""

from __future__ import annotations

import time
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e import browser
from tests.e2e.stack import Stack, running_stack


@pytest.fixture(scope="module")
def stack_env() -> dict[str, str]:
    """Extra settings of the module's local runtime (a module overrides this fixture)."""
    return {}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, stack_env: dict[str, str]) -> Iterator[Stack]:
    """The local runtime, started once per test module: a runtime that goes wrong takes down
    one module's tests, not the whole session's. Once they ran, its log must hold no error that
    an injected fault does not explain (`Stack.unexplained_errors`)."""
    with running_stack(tmp_path_factory.mktemp("fleetrun-stack"), stack_env) as started:
        yield started
        errors = started.unexplained_errors()
        assert not errors, f"the runtime logged {len(errors)} unexplained error(s):\n" + "\n".join(errors[:20])


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """Headless Chromium, once per module (tests/e2e/browser.py); modules that use it skip
    themselves when it is not installed."""
    with browser.chromium() as driver:
        yield driver


@pytest.fixture
def env(stack: Stack, tmp_path: Path) -> dict[str, str]:
    """A user's environment for `fleetrun`: the stack's URL and the admin token, a config file of its own."""
    return stack.user_environment(tmp_path)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    """A failed test shows its runtime's fidelity seed and the end of its log (a CI run keeps no
    data directory)."""
    outcome = yield
    report = outcome.get_result()
    stack = getattr(item, "funcargs", {}).get("stack")
    if report.failed and isinstance(stack, Stack):
        report.sections.append(("local runtime", stack.log_tail()))


@pytest.fixture(autouse=True)
def _stop_agents_after_each_test(request: pytest.FixtureRequest) -> Iterator[None]:
    """Agents a test started do not outlive it (they would keep polling the shared stack)."""
    yield
    if "stack" in request.fixturenames:
        started = time.monotonic()
        request.getfixturevalue("stack").stop_agents()
        print(f"agents stopped in {time.monotonic() - started:.1f} s")
