"""Traits, health, readiness and the CLI command, over each real store where a store is read."""

from __future__ import annotations

import json

from pipelines.serving import open_store
from tests.api.conftest import headers


def test_traits_are_segments_and_features_only(store_client):
    response = store_client.get("/v1/users/u-ada/traits", headers=headers("traits"))
    assert response.status_code == 200
    assert response.get_json() == {
        "user_id": "u-ada", "segments": ["cart_abandoner", "general"], "primary_segment": "cart_abandoner",
        "lifecycle_stage": "active", "rfm_cell": "4-3-4", "engagement_score": 7.5, "best_send_hour": 19,
        "cart_state": "abandoned", "cart_value": 25.5, "top_categories": ["kitchen"], "in_holdout": False,
        "features_as_of": "2026-11-27T08:00:00Z", "content_version": "2026-11-27T08:00:00Z/42",
        "generated_at": "2026-11-27T08:03:11Z"}


def test_traits_of_nobody_is_404_json(store_client):
    response = store_client.get("/v1/users/u-nobody/traits", headers=headers("traits"))
    assert response.status_code == 404
    assert response.get_json()["error"] == "unknown_user"


def test_a_field_outside_the_traits_list_is_not_passed_on(app, client):
    with open_store(app.extensions["tailor"]["config"]) as store:
        store.write_batch("traits", {"u-new": {"user_id": "u-new", "segments": ["general"], "email": "x@example.com"}})
    body = client.get("/v1/users/u-new/traits", headers=headers("traits")).get_json()
    assert "email" not in body
    assert body["segments"] == ["general"]


def test_healthz_and_readyz(store_client):
    assert store_client.get("/healthz").get_json() == {"status": "ok", "contract_version": "1.1.0"}
    ready = store_client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json()["status"] == "ready"
    assert ready.get_json()["circuit"] == "closed"
    assert ready.get_json()["consent_circuit"] == "closed"


def test_request_id_is_echoed_or_made(client):
    given = client.get("/healthz", headers={"X-Request-Id": "req-12345678"})
    assert given.headers["X-Request-Id"] == "req-12345678"
    made = client.get("/healthz", headers={"X-Request-Id": "bad id with spaces"})
    assert len(made.headers["X-Request-Id"]) == 32


def test_load_rows_command_writes_a_fixture_file(app, runner, tmp_path):
    path = tmp_path / "rows.json"
    path.write_text(json.dumps({"traits": {"u-zed": {"user_id": "u-zed", "segments": ["vip"]}}}), encoding="utf-8")
    result = runner.invoke(args=["load-rows", str(path)])
    assert result.exception is None, repr(result.exception)
    assert result.output == "loaded 1 rows\n"
    with open_store(app.extensions["tailor"]["config"]) as store:
        assert store.read("traits", "u-zed") == {"user_id": "u-zed", "segments": ["vip"]}
