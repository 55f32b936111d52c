"""`config.reset()` forgets every cached setting: a test that changes the environment sees the
change whatever an earlier test in the same process read first."""

from __future__ import annotations

import contextlib

import pytest

from chalicelib import config


def test_reset_forgets_every_cached_setting_even_one_read_before_the_environment_changed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN settings read (and cached) with their defaults
    monkeypatch.delenv("FLEETRUN_RECOUNT_GRACE_SECONDS", raising=False)
    monkeypatch.delenv("FLEETRUN_UNDISPATCHED_GRACE_SECONDS", raising=False)
    config.reset()
    assert config.recount_grace_seconds() == 120
    assert config.undispatched_grace_seconds() == 60
    # WHEN the environment changes and the settings are reset
    monkeypatch.setenv("FLEETRUN_RECOUNT_GRACE_SECONDS", "30")
    monkeypatch.setenv("FLEETRUN_UNDISPATCHED_GRACE_SECONDS", "5")
    config.reset()
    # THEN every getter reads the new value
    assert config.recount_grace_seconds() == 30
    assert config.undispatched_grace_seconds() == 5
    config.reset()


def test_every_cached_getter_is_cleared_by_reset() -> None:
    cached = [getter for getter in vars(config).values() if callable(getter) and hasattr(getter, "cache_clear")]
    assert len(cached) > 30
    for getter in cached:
        with contextlib.suppress(Exception):  # a setting with nothing configured may refuse
            getter()
    config.reset()
    assert all(getter.cache_info().currsize == 0 for getter in cached)
