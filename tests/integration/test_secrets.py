"""Secret parameters: KMS envelope encryption on moto, masking, revealing, redaction."""

from __future__ import annotations

import base64
import json

import pytest

from chalicelib import aws as aws_clients
from chalicelib import secrets
from chalicelib.errors import FleetrunError

PASSWORD = "s3cr3t-pa55word"


def _count_kms_calls(operation: str) -> list[str]:
    calls: list[str] = []
    aws_clients.client("kms").meta.events.register(f"before-call.kms.{operation}", lambda **_: calls.append(operation))
    return calls


def _tamper(blob: str, field: str) -> str:
    sealed = json.loads(blob)
    raw = bytearray(base64.b64decode(sealed[field]))
    raw[-1] ^= 0x01
    sealed[field] = base64.b64encode(bytes(raw)).decode()
    return json.dumps(sealed)


class TestSeal:
    def test_round_trip(self, aws):
        # GIVEN secret values
        values = {"password": PASSWORD, "token": "abc"}

        # WHEN they are sealed and unsealed
        blob = secrets.seal(values)

        # THEN the same values come back
        assert blob is not None
        assert secrets.unseal(blob) == values

    def test_blob_is_versioned_compact_json_without_the_clear_text(self, aws):
        blob = secrets.seal({"password": PASSWORD})

        assert blob is not None
        assert PASSWORD not in blob
        assert base64.b64encode(PASSWORD.encode()).decode() not in blob
        sealed = json.loads(blob)
        assert set(sealed) == {"v", "k", "n", "c"}
        assert sealed["v"] == 1
        assert len(base64.b64decode(sealed["n"])) == 12
        assert " " not in blob

    def test_nothing_to_seal(self, aws):
        assert secrets.seal({}) is None
        assert secrets.unseal(None) == {}

    @pytest.mark.parametrize("field", ["c", "n", "k"])
    def test_tampered_blob_raises(self, aws, field):
        # GIVEN a sealed blob with one bit flipped
        blob = secrets.seal({"password": PASSWORD})
        assert blob is not None
        tampered = _tamper(blob, field)

        # WHEN / THEN
        with pytest.raises(FleetrunError):
            secrets.unseal(tampered)

    @pytest.mark.parametrize("blob", ["not json", "[]", '{"v": 2}', '{"v": 1, "k": "%%%", "n": "", "c": ""}'])
    def test_malformed_blob_raises(self, aws, blob):
        with pytest.raises(FleetrunError):
            secrets.unseal(blob)

    def test_unseal_twice_decrypts_the_data_key_once(self, aws):
        # GIVEN a sealed blob and a counter on KMS Decrypt
        blob = secrets.seal({"password": PASSWORD})
        decrypts = _count_kms_calls("Decrypt")

        # WHEN it is unsealed twice (two claims of the same task)
        first = secrets.unseal(blob)
        second = secrets.unseal(blob)

        # THEN KMS was asked once
        assert first == second == {"password": PASSWORD}
        assert decrypts == ["Decrypt"]

    def test_each_seal_uses_a_fresh_data_key(self, aws):
        generated = _count_kms_calls("GenerateDataKey")

        first = json.loads(secrets.seal({"password": PASSWORD}) or "{}")
        second = json.loads(secrets.seal({"password": PASSWORD}) or "{}")

        assert generated == ["GenerateDataKey", "GenerateDataKey"]
        assert first["k"] != second["k"]
        assert first["c"] != second["c"]


class TestSplitAndReveal:
    def test_split_masks_only_present_secret_names(self):
        # GIVEN parameters where one of two secret names is present
        parameters = {"ssh_user": "root", "password": PASSWORD, "partition": "gpu"}

        # WHEN they are split
        masked, values = secrets.split(parameters, frozenset({"password", "api_key"}))

        # THEN only the present secret is masked and extracted
        assert masked == {"ssh_user": "root", "password": secrets.MASK, "partition": "gpu"}
        assert values == {"password": PASSWORD}
        assert parameters["password"] == PASSWORD  # the input is left alone

    def test_split_without_secrets(self):
        masked, values = secrets.split({"command": ["true"]}, frozenset())

        assert masked == {"command": ["true"]}
        assert values == {}

    def test_reveal_restores_the_parameters(self, aws):
        parameters = {"ssh_user": "root", "password": PASSWORD}
        masked, values = secrets.split(parameters, frozenset({"password"}))

        assert secrets.reveal(masked, secrets.seal(values)) == parameters

    def test_reveal_without_secrets(self):
        assert secrets.reveal({"command": ["true"]}, None) == {"command": ["true"]}


class TestRedact:
    def test_replaces_nested_occurrences(self):
        # GIVEN an agent event that echoes a secret at several depths
        event = {
            "message": f"login with {PASSWORD} failed",
            "output": {"lines": [f"password={PASSWORD}", "ok", ("x", PASSWORD)], "exit": 1},
            "ok": True,
        }

        # WHEN it is redacted
        redacted = secrets.redact(event, [PASSWORD])

        # THEN no secret remains and everything else is untouched
        assert redacted == {
            "message": "login with *** failed",
            "output": {"lines": ["password=***", "ok", ("x", "***")], "exit": 1},
            "ok": True,
        }
        assert PASSWORD not in json.dumps(redacted)

    def test_longer_secret_wins_over_its_prefix(self):
        assert secrets.redact("key=abcdef", ["abc", "abcdef"]) == "key=***"

    def test_regex_characters_are_literal(self):
        assert secrets.redact("p=a.b*c and axbbc", ["a.b*c"]) == "p=*** and axbbc"

    def test_empty_secrets_change_nothing(self):
        value = {"message": "hello"}

        assert secrets.redact(value, []) == value
        assert secrets.redact(value, [""]) == value

    def test_keys_are_redacted_too(self):
        assert secrets.redact({PASSWORD: {f"k-{PASSWORD}": PASSWORD}}, [PASSWORD]) == {"***": {"k-***": "***"}}


class TestSecretValues:
    def test_each_value_inside_a_secret_object_or_list_is_a_value_of_its_own(self):
        # GIVEN a secret object (Terraform's secret variables) and a list
        values = {"secret_variables": {"DB_PASS": "S3cr3t-XYZZY-45", "TOKENS": ["tok-1111", 4242]}, "pin": 9876}

        # WHEN its values are collected THEN each one is there, so each one can be masked
        assert sorted(map(str, secrets.leaves(values))) == ["4242", "9876", "S3cr3t-XYZZY-45", "tok-1111"]
        assert secrets.redact("TF_VAR_DB_PASS=S3cr3t-XYZZY-45", secrets.leaves(values)) == "TF_VAR_DB_PASS=***"

    def test_too_short_names_the_path_of_every_short_value(self):
        values = {"password": "abc", "vars": {"A": "long-enough", "B": "xy", "L": ["ok-value", "z"]}}
        assert secrets.too_short(values, 4) == ["$.parameters.password", "$.parameters.vars.B",
                                                "$.parameters.vars.L[1]"]
