from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.harness import Fleet


@pytest.fixture
def fleet(aws) -> Iterator[Fleet]:
    yield Fleet(aws)
