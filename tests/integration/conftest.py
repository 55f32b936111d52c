from __future__ import annotations

import pytest

from tests.harness import Fleet


@pytest.fixture
def fleet(aws) -> Fleet:
    return Fleet(aws)
