"""Secrets from AWS Secrets Manager (moto in server mode) when their environment variables
are unset, as on EMR: the PII keys load from one JSON secret; the environment still wins;
a missing secret or a malformed one is a one-line error that names it and shows no value."""

from __future__ import annotations

import base64
import json

import boto3
import pytest

from pipelines.config import _secrets_read, load_config
from pipelines.errors import ConfigError
from pipelines.pii import load_keys

KEY = base64.b64encode(bytes(range(32))).decode()
HMAC = base64.b64encode(bytes(range(32, 64))).decode()
OTHER_HMAC = base64.b64encode(bytes(range(64, 96))).decode()


@pytest.fixture
def secrets_client(moto_server):
    return boto3.client("secretsmanager", region_name="eu-west-1", endpoint_url=moto_server)


def _config(moto_server: str, secret_id: str):
    _secrets_read.clear()
    return load_config("emr", [f"secrets_manager.secret_id={secret_id}", "secrets_manager.region=eu-west-1",
                               f"secrets_manager.endpoint_url={moto_server}"])


def test_pii_keys_come_from_the_secret_when_the_environment_has_none(moto_server, secrets_client, monkeypatch):
    secrets_client.create_secret(Name="tailor/test-keys", SecretString=json.dumps(
        {"TAILOR_PII_ENCRYPTION_KEY": f"k1:{KEY}", "TAILOR_PII_HMAC_KEY": HMAC}))
    monkeypatch.delenv("TAILOR_PII_ENCRYPTION_KEY", raising=False)
    monkeypatch.delenv("TAILOR_PII_HMAC_KEY", raising=False)
    keys = load_keys(_config(moto_server, "tailor/test-keys"))
    assert keys.active_key_id == "k1" and keys.hmac_key == bytes(range(32, 64))

    # The environment wins over the secret, key by key.
    monkeypatch.setenv("TAILOR_PII_HMAC_KEY", OTHER_HMAC)
    assert load_keys(_config(moto_server, "tailor/test-keys")).hmac_key == bytes(range(64, 96))


def test_a_key_missing_from_the_secret_is_the_unset_variable_error(moto_server, secrets_client, monkeypatch):
    secrets_client.create_secret(Name="tailor/test-partial", SecretString=json.dumps({"TAILOR_PII_HMAC_KEY": HMAC}))
    monkeypatch.delenv("TAILOR_PII_ENCRYPTION_KEY", raising=False)
    with pytest.raises(ConfigError, match="environment variable TAILOR_PII_ENCRYPTION_KEY is not set nor in the "
                                          "Secrets Manager secret tailor/test-partial"):
        load_keys(_config(moto_server, "tailor/test-partial"))


def test_an_unreadable_or_malformed_secret_is_one_line_naming_it(moto_server, secrets_client, monkeypatch):
    monkeypatch.delenv("TAILOR_PII_ENCRYPTION_KEY", raising=False)
    with pytest.raises(ConfigError) as missing:
        load_keys(_config(moto_server, "tailor/does-not-exist"))
    assert str(missing.value) == ("secrets_manager.secret_id: cannot read tailor/does-not-exist: "
                                  "ResourceNotFoundException")
    secrets_client.create_secret(Name="tailor/test-binary", SecretBinary=b"\x00\x01")
    with pytest.raises(ConfigError, match="tailor/test-binary: it is stored as binary"):
        load_keys(_config(moto_server, "tailor/test-binary"))
    secrets_client.create_secret(Name="tailor/test-bad", SecretString='["not", "an object", "s3cr3t"]')
    with pytest.raises(ConfigError) as malformed:
        load_keys(_config(moto_server, "tailor/test-bad"))
    assert "must hold a JSON object" in str(malformed.value) and "s3cr3t" not in str(malformed.value)
