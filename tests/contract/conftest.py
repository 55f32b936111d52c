"""Both backends of the task and run repositories, for the contract suite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from chalicelib.store import backend
from chalicelib.store.memory import MemoryBackend


@pytest.fixture(params=["memory", "dynamodb"])
def store(request: pytest.FixtureRequest) -> Iterator[str]:
    """The backend under test, installed for the repositories: in memory, or DynamoDB on moto."""
    if request.param == "dynamodb":
        request.getfixturevalue("aws")
        backend.use(None)
    else:
        backend.use(MemoryBackend())
    yield request.param
    backend.use(None)
