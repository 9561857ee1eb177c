"""Personal data at rest: per-field AES-GCM encryption and the keyed identity hash.

- Email, phone and names are encrypted per field with AES-256-GCM (`cryptography`). A stored
  value is `nonce (12 bytes) || ciphertext || tag (16 bytes)`, with the key id in its own
  column beside it, so keys rotate: new values use the active key, old ones decrypt with
  the key their id names.
- `email_hash` is HMAC-SHA256 of the normalized address: the identity key that joins a
  person across sources without holding the address.
- `subject_hash` is the same keyed hash of a user_id, for records that must say an event
  happened to someone without saying who (audit.log, erasure tombstones).

Keys come from the environment (config `secrets.*` names the variables):
  TAILOR_PII_ENCRYPTION_KEY  "<key id>:<base64 32-byte key>[,<key id>:<key>...]"; the
                             first is the active key, the rest only decrypt
  TAILOR_PII_HMAC_KEY        base64, at least 32 bytes; never rotated, since rotating it
                             would change every identity
Locally, with `pii.dev_keys_file` set and the variables unset, keys are generated once
into that file (mode 0600). No function here logs or raises with a value in it.

No pyspark import: the API decrypts with this module too.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pipelines.errors import ConfigError

if TYPE_CHECKING:
    from pipelines.config import Config

NONCE_BYTES = 12
KEY_BYTES = 32
_KEY_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class PiiError(Exception):
    """A value could not be decrypted; the message never holds the value."""


# (key id, key) pairs, the active key first; the rest only decrypt.
Keyring = tuple[tuple[str, bytes], ...]


@dataclass(frozen=True)
class PiiKeys:
    """The encryption keyring (active key first) and the HMAC key."""

    keyring: Keyring
    hmac_key: bytes

    @property
    def active_key_id(self) -> str:
        return self.keyring[0][0]

    def __repr__(self) -> str:  # keys never reach a log through repr()
        return f"PiiKeys(key_ids={[key_id for key_id, _ in self.keyring]})"


def parse_keyring(text: str, variable: str) -> Keyring:
    keyring = []
    for position, entry in enumerate(filter(None, (part.strip() for part in text.split(","))), start=1):
        key_id, sep, encoded = entry.partition(":")
        if not sep or not _KEY_ID.match(key_id):
            raise ConfigError(f"{variable}: entry {position} must look like <key id>:<base64 key>")
        key = _decode_base64(encoded, f"{variable}: key '{key_id}'")
        if len(key) != KEY_BYTES:
            raise ConfigError(f"{variable}: key '{key_id}' must be {KEY_BYTES} bytes, got {len(key)}")
        keyring.append((key_id, key))
    if not keyring:
        raise ConfigError(f"{variable} holds no key")
    if len({key_id for key_id, _ in keyring}) != len(keyring):
        raise ConfigError(f"{variable}: a key id appears twice")
    return tuple(keyring)


def parse_hmac_key(text: str, variable: str) -> bytes:
    key = _decode_base64(text.strip(), variable)
    if len(key) < KEY_BYTES:
        raise ConfigError(f"{variable} must hold at least {KEY_BYTES} bytes (base64), got {len(key)}")
    return key


def _decode_base64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{what} is not valid base64") from None


def new_key_material(key_id: str = "dev1") -> dict[str, str]:
    return {
        "encryption_keyring": f"{key_id}:{base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode()}",
        "hmac_key": base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode(),
    }


def load_keys(config: Config) -> PiiKeys:
    """Keys from the environment (or secrets_manager, see Config.secret); locally, from the
    dev keys file when they are unset."""
    return PiiKeys(load_keyring(config), load_hmac_key(config))


def load_keyring(config: Config) -> Keyring:
    """The encryption keyring alone: for a process that decrypts names but hashes nothing
    (publishing), which then need not hold the identity key."""
    return parse_keyring(*_key_text(config, "pii_encryption_key", "encryption_keyring"))


def load_hmac_key(config: Config) -> bytes:
    """The HMAC key alone: for a process that hashes ids but never decrypts (the content
    API), which then need not hold the key to every stored email."""
    return parse_hmac_key(*_key_text(config, "pii_hmac_key", "hmac_key"))


def _key_text(config: Config, secret: str, dev_entry: str) -> tuple[str, str]:
    """(the key's text, the variable that names it): the secret, else the dev keys file's
    entry when one is configured."""
    variable, text = getattr(config.secrets, secret), config.secret(secret)
    if text is None and config.pii.dev_keys_file:
        location = config.under_root(config.pii.dev_keys_file)
        if "://" in location:
            # Path() would make it a local folder named after the URI: keys no other host shares.
            raise ConfigError(f"pii.dev_keys_file: {location} is not on this machine; with a remote storage.root "
                              f"set {variable} (see README, 'Personal data'), or give the file an absolute local path")
        text = _dev_key_material(Path(location))[dev_entry]
    if not text:
        raise _unset(variable, config)
    return text, variable


def _unset(variable: str, config: Config) -> ConfigError:
    secret = config.secrets_manager.secret_id
    elsewhere = f" nor in the Secrets Manager secret {secret}" if secret else ""
    return ConfigError(f"environment variable {variable} is not set{elsewhere}; it holds a PII key "
                       "(see README, 'Personal data')")


def _dev_key_material(path: Path) -> dict[str, str]:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            json.dump(new_key_material(), handle)
    try:
        material = json.loads(path.read_text(encoding="utf-8"))
        return {"encryption_keyring": material["encryption_keyring"], "hmac_key": material["hmac_key"]}
    except (ValueError, KeyError, TypeError):
        raise ConfigError(f"pii.dev_keys_file {path} is not a Tailor dev keys file; delete it "
                          "to generate new keys (data encrypted with the old ones becomes unreadable)") from None


def normalize_email(address: str) -> str:
    return address.strip().lower()


def keyed_hash(key: bytes, text: str) -> str:
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).hexdigest()


DEDUP_SALT_PREFIX = "tailor-dedup-salt:"
# Spark replaces what matches this in every plan it prints (explain, the UI, event logs).
DEDUP_SALT_REDACTION = DEDUP_SALT_PREFIX + "[0-9a-f]{64}"


def dedup_salt(hmac_key: bytes) -> str:
    """The salt of ingest's dedup keys: derived from the HMAC key, never the key itself.
    It is a literal in the ingest query's plan, which Spark redacts when printing it; one
    that leaks lets its holder test a guessed event_id against the dedup state, and
    nothing else."""
    return DEDUP_SALT_PREFIX + keyed_hash(hmac_key, "ingest dedup key")


def email_hash(keys: PiiKeys, address: str) -> str:
    return keyed_hash(keys.hmac_key, normalize_email(address))


def subject_hash(keys: PiiKeys, user_id: str) -> str:
    return subject_hash_under(keys.hmac_key, user_id)


def subject_hash_under(hmac_key: bytes, user_id: str) -> str:
    # A prefix keeps a user_id hash from ever equalling an email hash.
    return keyed_hash(hmac_key, "user:" + user_id)


def encrypt(keys: PiiKeys, plaintext: str) -> tuple[bytes, str]:
    """(nonce || ciphertext || tag, key id) under the active key."""
    key_id, key = keys.keyring[0]
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext.encode("utf-8"), None), key_id


def lenient_decryptor(keyring: Keyring) -> Callable[[bytes | None, str | None], str | None]:
    """decrypt for many values: one cipher per key, and None for a value that is missing or
    does not decrypt (the caller counts those; a single bad value must not stop a run)."""
    ciphers = {key_id: AESGCM(key) for key_id, key in keyring}

    def decrypted(blob: bytes | None, key_id: str | None) -> str | None:
        cipher = ciphers.get(key_id) if key_id is not None else None
        if blob is None or cipher is None:
            return None
        try:
            return cipher.decrypt(bytes(blob[:NONCE_BYTES]), bytes(blob[NONCE_BYTES:]), None).decode("utf-8")
        except (InvalidTag, ValueError):
            return None

    return decrypted


def decrypt(keys: PiiKeys, blob: bytes, key_id: str) -> str:
    key = dict(keys.keyring).get(key_id)
    if key is None:
        raise PiiError(f"no key with id '{key_id}' in the keyring")
    try:
        return AESGCM(key).decrypt(bytes(blob[:NONCE_BYTES]), bytes(blob[NONCE_BYTES:]), None).decode("utf-8")
    except (InvalidTag, ValueError):
        raise PiiError(f"value does not decrypt with key '{key_id}' (tampered, or a different key)") from None
