"""The harness itself: requests from several threads at once leave `os.environ` what it was."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

from tests.harness import Fleet


def test_concurrent_requests_leave_the_real_environment_installed(fleet: Fleet) -> None:
    # GIVEN the process environment, which chalice's WebSocket API holds on to
    environment = os.environ
    # WHEN requests run from eight threads at once
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda _: fleet.user("GET", "/v1/tasks?limit=1").status, range(64)))
    # THEN every one was answered, and os.environ is still that environment, set and read alike
    assert statuses == [200] * 64
    assert os.environ is environment
    os.environ["FLEETRUN_HARNESS_PROBE"] = "1"
    assert fleet.app_module.app.websocket_api._env.get("FLEETRUN_HARNESS_PROBE") == "1"
    del os.environ["FLEETRUN_HARNESS_PROBE"]
