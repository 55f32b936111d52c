"""Fixtures of the unit tests (no AWS)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from chalicelib.store import backend
from chalicelib.store.memory import MemoryBackend


@pytest.fixture
def memory() -> Iterator[MemoryBackend]:
    """The in-memory store as the current backend (services read and write it)."""
    store = MemoryBackend()
    backend.use(store)
    yield store
    backend.use(None)
