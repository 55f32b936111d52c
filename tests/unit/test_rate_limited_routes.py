"""Abuse limits: which operations count against the per-user rate limit."""

from __future__ import annotations

import pytest

from chalicelib.api.contract import OPERATIONS
from chalicelib.api.http import OPERATIONS_BY_ID, rate_limited

USER_OPERATIONS = [op for op in OPERATIONS if op.auth == "user"]


@pytest.mark.parametrize("operation", [op for op in USER_OPERATIONS if op.role == "admin"],
                         ids=lambda op: op.operation_id)
def test_every_admin_route_counts_against_the_limit_reads_included(operation):
    assert rate_limited(operation)


@pytest.mark.parametrize("operation", [op for op in USER_OPERATIONS if op.method != "GET"],
                         ids=lambda op: op.operation_id)
def test_every_user_write_counts_against_the_limit(operation):
    assert rate_limited(operation)


def test_image_sync_counts_and_plain_reads_do_not():
    assert rate_limited(OPERATIONS_BY_ID["syncImages"])
    assert not rate_limited(OPERATIONS_BY_ID["listImages"])
    assert not rate_limited(OPERATIONS_BY_ID["listTasks"])
