"""API keys and scopes: each endpoint against no key, an unknown key, and each scope."""

from __future__ import annotations

import pytest

from api.auth import parse_api_tokens
from pipelines.errors import ConfigError
from tests.api.conftest import KEYS, headers

# (method, path, json body, the key ids that may call it) – admin holds every scope.
ENDPOINTS = [
    ("GET", "/v1/content/u-ada", None, {"reader", "ops"}),
    ("POST", "/v1/content:batchGet", {"user_ids": ["u-ada"]}, {"reader", "ops"}),
    ("GET", "/v1/users/u-ada/traits", None, {"traits", "ops"}),
    ("GET", "/v1/preview/u-ada", None, {"ops"}),
]


@pytest.mark.parametrize(("method", "path", "body", "allowed"), ENDPOINTS)
def test_scope_matrix(client, method, path, body, allowed):
    missing = client.open(path, method=method, json=body)
    assert missing.status_code == 401
    assert missing.get_json()["error"] == "unauthorized"
    assert missing.headers["WWW-Authenticate"] == 'Bearer realm="tailor"'
    unknown = client.open(path, method=method, json=body, headers={"X-Api-Key": "not-a-key-we-issued"})
    assert (unknown.status_code, unknown.get_json()["message"]) == (401, "unknown API key")
    for key_id in KEYS:
        response = client.open(path, method=method, json=body, headers=headers(key_id))
        if key_id in allowed:
            assert response.status_code == 200, (key_id, path, response.get_json())
        else:
            assert response.status_code == 403, (key_id, path)
            assert response.get_json()["error"] == "forbidden"


def test_bearer_header_works_like_the_key_header(client):
    response = client.get("/v1/content/u-ada", headers={"Authorization": f"Bearer {KEYS['reader'][0]}"})
    assert response.status_code == 200


def test_token_entries_are_parsed_and_bad_ones_named_by_position():
    digest = "a" * 64
    keys = parse_api_tokens(f"braze:{digest}:content:read+traits:read  ops:{'b' * 64}:admin", "TAILOR_API_TOKENS")
    assert {value.key_id: sorted(value.scopes) for value in keys.values()} == {
        "braze": ["content:read", "traits:read"], "ops": ["admin"]}
    with pytest.raises(ConfigError,
                       match=r"^TAILOR_API_TOKENS: entry 2 is not <key id>:<sha256 hex>:<scope>\+<scope>$"):
        parse_api_tokens(f"braze:{digest}:content:read,clear-key-in-the-wrong-place", "TAILOR_API_TOKENS")
    with pytest.raises(ConfigError, match="entry 1 \\(braze\\) has unknown scope 'content:write'"):
        parse_api_tokens(f"braze:{digest}:content:write", "TAILOR_API_TOKENS")


def test_no_key_variable_means_every_keyed_endpoint_is_401(make_app, monkeypatch):
    monkeypatch.delenv("TAILOR_API_TOKENS")
    client = make_app().test_client()
    assert client.get("/v1/content/u-ada", headers=headers("reader")).status_code == 401
    assert client.get("/healthz").status_code == 200
