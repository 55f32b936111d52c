from __future__ import annotations

from collections.abc import Iterator

import pytest

from chalicelib import config
from tests.harness import Fleet
from tests.integration.sockets import Sockets
from tests.ws_connections import RecordingConnections


@pytest.fixture
def fleet(aws) -> Fleet:
    return Fleet(aws)


@pytest.fixture
def ws(fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> Iterator[Sockets]:
    """WebSocket clients whose pushes a recording `@connections` endpoint receives."""
    recorder = RecordingConnections().start()
    monkeypatch.setenv("FLEETRUN_WEBSOCKET_ENDPOINT", recorder.endpoint)
    config.reset()
    yield Sockets(fleet, recorder)
    recorder.stop()
