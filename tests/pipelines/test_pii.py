"""PII keys and field encryption: expected values come from the standard library's hmac
and from cryptography used directly, not from the module under test."""

import base64
import hashlib
import hmac
import os
import stat

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pipelines import pii
from pipelines.config import load_config
from pipelines.errors import ConfigError

KEY_1, KEY_2, HMAC_KEY = os.urandom(32), os.urandom(32), os.urandom(32)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _keys(*keyring: tuple[str, bytes]) -> pii.PiiKeys:
    return pii.PiiKeys(tuple(keyring), HMAC_KEY)


def test_encrypted_field_is_nonce_ciphertext_tag_under_the_active_key():
    blob, key_id = pii.encrypt(_keys(("k1", KEY_1)), "ada@example.com")
    assert key_id == "k1"
    assert AESGCM(KEY_1).decrypt(blob[:12], blob[12:], None) == b"ada@example.com"
    assert b"ada" not in blob


def test_rotation_new_values_use_the_new_key_and_old_ones_still_decrypt():
    old_blob, old_id = pii.encrypt(_keys(("k1", KEY_1)), "+44 20 7946 0001")
    rotated = _keys(("k2", KEY_2), ("k1", KEY_1))
    new_blob, new_id = pii.encrypt(rotated, "+44 20 7946 0001")
    assert (old_id, new_id) == ("k1", "k2")
    assert pii.decrypt(rotated, old_blob, old_id) == "+44 20 7946 0001"
    assert pii.decrypt(rotated, new_blob, new_id) == "+44 20 7946 0001"


def test_tampered_value_or_unknown_key_fails_without_the_value_in_the_message():
    keys = _keys(("k1", KEY_1))
    blob, _ = pii.encrypt(keys, "ada@example.com")
    tampered = blob[:-1] + bytes([blob[-1] ^ 1])
    with pytest.raises(pii.PiiError) as error:
        pii.decrypt(keys, tampered, "k1")
    assert "ada" not in str(error.value)
    with pytest.raises(pii.PiiError, match="no key with id 'k9'"):
        pii.decrypt(keys, blob, "k9")


def test_email_hash_is_hmac_sha256_of_the_trimmed_lowercased_address():
    expected = hmac.new(HMAC_KEY, b"ada@example.com", hashlib.sha256).hexdigest()
    assert pii.email_hash(_keys(("k1", KEY_1)), "  Ada@Example.COM ") == expected


@pytest.mark.parametrize("text, message", [
    ("k1", "entry 1 must look like <key id>:<base64 key>"),
    ("k1:not base64!", "key 'k1' is not valid base64"),
    (f"k1:{_b64(b'short')}", "key 'k1' must be 32 bytes, got 5"),
    (f"k1:{_b64(KEY_1)},k1:{_b64(KEY_2)}", "a key id appears twice"),
    ("", "holds no key"),
], ids=["no-colon", "bad-base64", "short-key", "repeated-id", "empty"])  # stable ids: the keys are random
def test_bad_keyring_is_one_line_naming_the_variable_not_the_key(text, message):
    with pytest.raises(ConfigError) as error:
        pii.parse_keyring(text, "TAILOR_PII_ENCRYPTION_KEY")
    assert message in str(error.value) and str(error.value).startswith("TAILOR_PII_ENCRYPTION_KEY")
    assert "\n" not in str(error.value) and _b64(KEY_1) not in str(error.value)


def test_keys_come_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("TAILOR_PII_ENCRYPTION_KEY", f"k2:{_b64(KEY_2)},k1:{_b64(KEY_1)}")
    monkeypatch.setenv("TAILOR_PII_HMAC_KEY", _b64(HMAC_KEY))
    keys = pii.load_keys(load_config("local", [f"storage.root={tmp_path}"]))
    assert keys.active_key_id == "k2" and keys.hmac_key == HMAC_KEY
    assert _b64(KEY_1) not in repr(keys)


def test_missing_key_outside_local_names_the_variable(monkeypatch, tmp_path):
    monkeypatch.delenv("TAILOR_PII_ENCRYPTION_KEY", raising=False)
    monkeypatch.delenv("TAILOR_PII_HMAC_KEY", raising=False)
    with pytest.raises(ConfigError, match="environment variable TAILOR_PII_ENCRYPTION_KEY is not set"):
        pii.load_keys(load_config("databricks", [f"storage.root={tmp_path}"]))


def test_local_dev_keys_are_generated_once_and_private(monkeypatch, tmp_path):
    monkeypatch.delenv("TAILOR_PII_ENCRYPTION_KEY", raising=False)
    monkeypatch.delenv("TAILOR_PII_HMAC_KEY", raising=False)
    config = load_config("local", [f"storage.root={tmp_path}"])
    first, second = pii.load_keys(config), pii.load_keys(config)
    assert first == second
    key_file = tmp_path / "secrets" / "dev-pii-keys.json"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_local_dev_keys_under_a_remote_root_are_refused_naming_the_key(monkeypatch, tmp_path):
    """Not a local folder named after the URI, whose keys no other host would share."""
    monkeypatch.delenv("TAILOR_PII_ENCRYPTION_KEY", raising=False)
    monkeypatch.delenv("TAILOR_PII_HMAC_KEY", raising=False)
    monkeypatch.chdir(tmp_path)
    config = load_config("local", ["storage.root=s3://bucket/tailor"])
    with pytest.raises(ConfigError, match=r"^pii.dev_keys_file: s3://bucket/tailor/secrets/dev-pii-keys.json is not "
                                          r"on this machine; .* set TAILOR_PII_HMAC_KEY"):
        pii.load_hmac_key(config)
    assert not (tmp_path / "s3:").exists()
    # An absolute local file still serves, under any root.
    local = load_config("local", ["storage.root=s3://bucket/tailor", f"pii.dev_keys_file={tmp_path / 'keys.json'}"])
    assert pii.load_hmac_key(local) == pii.load_hmac_key(local)
