"""Which Harbor an `images.sync` task may read: only a base URL an admin configured (no AWS)."""

from __future__ import annotations

import pytest

from chalicelib import config
from chalicelib.errors import ValidationFailed
from chalicelib.services import harbor_sources

ALLOWED = "https://harbor.example.com/registry"


@pytest.fixture(autouse=True)
def allow_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEETRUN_HARBOR_URL", "https://harbor.example.com:8443")
    monkeypatch.setenv("FLEETRUN_HARBOR_URLS", f" {ALLOWED}/ ,https://harbor-us.example.com")
    config.reset()


@pytest.mark.parametrize("url", [
    "https://harbor.example.com/registry",
    "https://harbor.example.com/registry/",
    "HTTPS://Harbor.Example.COM:443/registry",
    "https://harbor-us.example.com",
    "https://harbor.example.com:8443/",
])
def test_a_configured_base_url_in_any_equivalent_spelling_is_allowed(url: str):
    assert harbor_sources.allowed(url)


@pytest.mark.parametrize("url", [
    "http://169.254.169.254/latest/meta-data",
    "http://harbor.example.com/registry",  # another scheme
    "https://harbor.example.com:444/registry",  # another port
    "https://harbor.example.com/registry/../admin",  # another path
    "https://harbor.example.com/registry-other",
    "https://harbor.example.com",  # the host without the configured path
    "https://harbor.example.com@169.254.169.254/registry",  # a user name that reads like the host
    "https://robot:pw@harbor.example.com/registry",
    "https://harbor.example.com/registry?next=http://169.254.169.254",
    "https://harbor.example.com/registry#x",
    "https://harbor.example.com.attacker.test/registry",
    "https://harbor.example.com:99999/registry",  # an invalid port
    "",
])
def test_anything_else_is_refused(url: str):
    assert not harbor_sources.allowed(url)


def test_nothing_is_allowed_when_nothing_is_configured(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("FLEETRUN_HARBOR_URL")
    monkeypatch.delenv("FLEETRUN_HARBOR_URLS")
    config.reset()
    assert not harbor_sources.allowed(ALLOWED)


def test_an_images_sync_task_outside_the_allow_list_is_a_validation_error_naming_the_setting():
    with pytest.raises(ValidationFailed) as refused:
        harbor_sources.check_task("images.sync", {"harbor_url": "http://169.254.169.254/"})
    assert "FLEETRUN_HARBOR_URLS" in str(refused.value)
    assert [d["path"] for d in refused.value.extra["details"]] == ["$.parameters.harbor_url"]


def test_other_task_types_are_not_concerned():
    harbor_sources.check_task("shell", {"harbor_url": "http://169.254.169.254/"})
