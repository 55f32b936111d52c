"""Secret parameters by dotted path: masked where they sit, put back whole for the agent."""

from __future__ import annotations

import pytest

from chalicelib import secrets
from chalicelib.secrets import MASK


def test_a_top_level_secret_is_masked_as_before() -> None:
    masked, values = secrets.split({"ssh_user": "root", "password": "hunter22"}, frozenset({"password"}))
    assert masked == {"ssh_user": "root", "password": MASK}
    assert values == {"password": "hunter22"}


def test_a_nested_secret_is_masked_in_place_and_its_siblings_kept() -> None:
    # GIVEN
    parameters = {"credentials": {"user": "svc", "password": "s3cret-pw"}, "paths": ["/a"]}
    # WHEN
    masked, values = secrets.split(parameters, frozenset({"credentials.password"}))
    # THEN
    assert masked == {"credentials": {"user": "svc", "password": MASK}, "paths": ["/a"]}
    assert values == {"credentials.password": "s3cret-pw"}
    assert parameters["credentials"]["password"] == "s3cret-pw"  # the caller's parameters are untouched


def test_a_secret_object_is_secret_in_every_value_it_holds() -> None:
    parameters = {"vault": {"a": "alpha-1", "b": ["beta-22", {"c": "gamma-333"}]}}
    masked, values = secrets.split(parameters, frozenset({"vault", "vault.a"}))
    assert masked == {"vault": MASK}
    assert values == {"vault": parameters["vault"]}
    assert sorted(secrets.leaves(values)) == ["alpha-1", "beta-22", "gamma-333"]


@pytest.mark.parametrize("parameters", [{}, {"credentials": "plain"}, {"credentials": {"user": "svc"}}])
def test_a_path_the_parameters_do_not_reach_masks_nothing(parameters: dict[str, object]) -> None:
    masked, values = secrets.split(parameters, frozenset({"credentials.password"}))
    assert (masked, values) == (parameters, {})


def test_reveal_puts_nested_secrets_back_where_they_were(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN parameters split by path, the sealed blob standing in as the clear values
    parameters = {"credentials": {"user": "svc", "password": "s3cret-pw"}, "api_token": "tok-12345"}
    masked, values = secrets.split(parameters, frozenset({"credentials.password", "api_token"}))
    monkeypatch.setattr(secrets, "unseal", lambda blob: values)
    # WHEN / THEN
    assert secrets.reveal(masked, "sealed") == parameters
    assert masked["credentials"]["password"] == MASK


def test_too_short_names_the_nested_path() -> None:
    assert secrets.too_short({"credentials.password": "ab"}, 4) == ["$.parameters.credentials.password"]
