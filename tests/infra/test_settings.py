"""Stage settings from CDK context (no synthesis)."""

from __future__ import annotations

from typing import Any

import pytest

from infra.settings import stage_settings

pytestmark = pytest.mark.infra


class Context:
    def __init__(self, **values: Any) -> None:
        self.values = {k.replace("__", ":"): v for k, v in values.items()}

    def try_get_context(self, key: str) -> Any:
        return self.values.get(key)


def test_stage_defaults_differ_between_dev_and_prod():
    dev, prod = stage_settings(Context(), "dev"), stage_settings(Context(), "prod")
    assert (dev.throttle_rate, dev.throttle_burst, dev.is_prod) == (50, 100, False)
    assert (prod.throttle_rate, prod.throttle_burst, prod.is_prod) == (3000, 5000, True)
    assert dev.oidc_issuer is None
    assert prod.prefix == "fleetrun-prod"


def test_per_stage_context_wins_over_global():
    context = Context(throttleRate="70", prod__throttleRate="900", alarmEmail="ops@example.com")
    assert stage_settings(context, "dev").throttle_rate == 70
    assert stage_settings(context, "prod").throttle_rate == 900
    assert stage_settings(context, "prod").alarm_email == "ops@example.com"


def test_external_issuer_needs_its_audience():
    with pytest.raises(ValueError, match="oidcAudience"):
        stage_settings(Context(oidcIssuer="https://issuer.example.com"), "dev")
    settings = stage_settings(Context(oidcIssuer="https://issuer.example.com", oidcAudience="api"), "dev")
    assert (settings.oidc_issuer, settings.oidc_audience) == ("https://issuer.example.com", "api")


def test_unknown_stage_is_refused():
    with pytest.raises(ValueError, match="unknown stage"):
        stage_settings(Context(), "staging")


def test_intake_producers_are_a_clean_comma_separated_list():
    assert stage_settings(Context(), "dev").intake_producers == ""
    assert stage_settings(Context(prod__intakeProducers=" ci-bot, nightly "), "prod").intake_producers == (
        "ci-bot,nightly")
    with pytest.raises(ValueError, match="intakeProducers"):
        stage_settings(Context(intakeProducers="ci bot"), "dev")


def test_harbor_settings_become_the_functions_environment():
    context = Context(harborUrl="https://harbor.example.com", harborRobotName="robot$sync",
                      dev__harborUrls="https://harbor-eu.example.com,https://harbor-us.example.com",
                      prod__harborRobotSecretArn="arn:aws:secretsmanager:us-east-1:1:secret:robot",
                      harborWebhookSecretArn="arn:aws:secretsmanager:us-east-1:1:secret:hook")
    dev, prod = stage_settings(context, "dev"), stage_settings(context, "prod")
    assert dev.harbor_environment == {
        "FLEETRUN_HARBOR_URL": "https://harbor.example.com", "FLEETRUN_HARBOR_ROBOT_NAME": "robot$sync",
        "FLEETRUN_HARBOR_URLS": "https://harbor-eu.example.com,https://harbor-us.example.com",
        "FLEETRUN_HARBOR_WEBHOOK_SECRET_ARN": "arn:aws:secretsmanager:us-east-1:1:secret:hook",
    }
    assert prod.harbor_secret_arns == ["arn:aws:secretsmanager:us-east-1:1:secret:robot",
                                       "arn:aws:secretsmanager:us-east-1:1:secret:hook"]
    assert stage_settings(Context(), "dev").harbor_environment == {}


def test_stream_record_age_and_parallelization_are_bounded():
    settings = stage_settings(Context(), "prod")
    assert (settings.stream_max_record_age, settings.stream_parallelization) == (6 * 3600, 4)
    assert stage_settings(Context(streamParallelization="10"), "dev").stream_parallelization == 10
    with pytest.raises(ValueError, match="streamParallelization"):
        stage_settings(Context(streamParallelization="11"), "dev")
    with pytest.raises(ValueError, match="streamMaxRecordAge"):
        stage_settings(Context(prod__streamMaxRecordAge="90000"), "prod")
