"""Content reads over each real store: the fallback tiers, consent at read time, batchGet,
ETags and the JSON errors. Expected rows are written out here or in data.json by hand."""

from __future__ import annotations

import io
import json

from pipelines.serving import open_store
from tests.api.conftest import DATA, headers, post_chunked

READER = headers("reader")
GLOBAL_DEFAULT_HERO = {"offer_id": "welcome", "headline": "New this week", "url": None}


def test_personal_row_is_served_with_its_version_as_etag(store_client):
    response = store_client.get("/v1/content/u-ada", headers=READER)
    assert response.status_code == 200
    assert response.get_json() == DATA["content"]["u-ada"]
    assert response.headers["ETag"] == '"2026-11-27T08:00:00Z/42"'
    assert response.headers["Cache-Control"] == "private, max-age=300"


def test_if_none_match_gets_304_without_a_body(store_client):
    response = store_client.get("/v1/content/u-ada", headers={**READER, "If-None-Match": '"2026-11-27T08:00:00Z/42"'})
    assert response.status_code == 304
    assert response.data == b""
    assert response.headers["ETag"] == '"2026-11-27T08:00:00Z/42"'
    stale = store_client.get("/v1/content/u-ada", headers={**READER, "If-None-Match": '"2026-11-20T08:00:00Z/30"'})
    assert stale.status_code == 200


def test_unknown_user_gets_the_global_default_or_404_when_strict(store_client):
    response = store_client.get("/v1/content/u-nobody", headers=READER)
    assert response.status_code == 200
    body = response.get_json()
    assert body["user_id"] == "u-nobody"
    assert body["fallback"] == "unknown_user"
    assert body["hero"] == GLOBAL_DEFAULT_HERO
    assert body["greeting"] == {"first_name": None, "text": "Hi there"}
    assert response.headers["ETag"] == '"2026-11-27T08:00:00Z/40;unknown_user"'
    strict = store_client.get("/v1/content/u-nobody?strict=true", headers=READER)
    assert strict.status_code == 404
    assert strict.get_json()["error"] == "unknown_user"


def test_a_row_published_as_holdout_keeps_its_own_fallback(store_client):
    body = store_client.get("/v1/content/u-hal", headers=READER).get_json()
    assert body["fallback"] == "holdout"
    assert body["user_id"] == "u-hal"


def test_no_email_consent_as_publish_found_it_is_410(store_client):
    # u-cy: suppressed by publish (no email_marketing consent), no content row.
    response = store_client.get("/v1/content/u-cy", headers=READER)
    assert response.status_code == 410
    assert response.get_json() == {"error": "gone", "message": "do not send: the person is no_email_consent",
                                   "reason": "no_email_consent", "user_id": "u-cy"}


def test_unsubscribed_user_gets_410_with_a_json_body(store_client):
    response = store_client.get("/v1/content/u-gone", headers=READER)
    assert response.status_code == 410
    assert response.get_json() == {"error": "gone", "message": "do not send: the person is unsubscribed",
                                   "reason": "unsubscribed", "user_id": "u-gone"}
    assert response.headers["Cache-Control"] == "no-store"


def test_suppression_written_after_a_read_counts_before_the_next_publish(store_app):
    client = store_app.test_client()
    assert client.get("/v1/content/u-bob", headers=READER).get_json()["fallback"] is None  # now cached
    config = store_app.extensions["tailor"]["config"]
    with open_store(config) as store:  # as another worker or host would
        store.write_batch("suppression", {"u-bob": {"reason": "consent_revoked", "source": "api",
                                                    "since": "2026-11-28T10:00:00Z"}})
    body = client.get("/v1/content/u-bob", headers=READER).get_json()
    assert body["fallback"] == "no_consent"
    assert body["hero"] == {"offer_id": "vip-early", "headline": "Früher Zugang", "url": None}  # segment:vip:de-DE
    assert body["greeting"] == {"first_name": None, "text": "Hallo"}
    with open_store(config) as store:
        store.write_batch("suppression", {"u-bob": {"reason": "erased", "source": "api",
                                                    "since": "2026-11-28T11:00:00Z"}})
    assert client.get("/v1/content/u-bob", headers=READER).status_code == 410


def test_batch_get_answers_every_tier_in_one_call(store_client):
    response = store_client.post("/v1/content:batchGet", headers=READER,
                                 json={"user_ids": ["u-ada", "u-nobody", "u-gone", "u-cy", "u-ada"]})
    assert response.status_code == 200
    body = response.get_json()
    assert [(row["user_id"], row["fallback"]) for row in body["rows"]] == [
        ("u-ada", None), ("u-nobody", "unknown_user")]
    assert body["rows"][0] == DATA["content"]["u-ada"]
    assert body["gone"] == [{"user_id": "u-gone", "reason": "unsubscribed"},
                            {"user_id": "u-cy", "reason": "no_email_consent"}]
    assert body["not_found"] == []
    strict = store_client.post("/v1/content:batchGet", headers=READER, json={"user_ids": ["u-nobody"], "strict": True})
    assert strict.get_json() == {"rows": [], "gone": [], "not_found": ["u-nobody"]}


def test_batch_of_500_is_read_and_501_is_refused(client):
    ids = [f"u-{number}" for number in range(499)] + ["u-ada"]
    body = client.post("/v1/content:batchGet", headers=READER, json={"user_ids": ids}).get_json()
    assert len(body["rows"]) == 500
    assert body["rows"][-1]["fallback"] is None
    over = client.post("/v1/content:batchGet", headers=READER, json={"user_ids": [*ids, "u-one-more"]})
    assert over.status_code == 400
    assert over.get_json() == {"error": "batch_too_large", "message": "at most 500 user ids per batch, not 501"}


def test_bad_requests_get_a_4xx_with_a_json_error(client):
    cases = [
        (client.get("/v1/content/bad%20id", headers=READER), 400, "bad_user_id"),
        (client.get("/v1/content/" + "u" * 129, headers=READER), 400, "bad_user_id"),
        (client.get("/v1/content/u-ada?strict=maybe", headers=READER), 400, "bad_parameter"),
        (client.post("/v1/content:batchGet", headers={**READER, "Content-Type": "application/json"}, data="{nope"),
         400, "bad_json"),
        (client.post("/v1/content:batchGet", headers=READER, json=["u-ada"]), 400, "bad_json"),
        (client.post("/v1/content:batchGet", headers=READER, json={"user_ids": []}), 400, "bad_request"),
        (client.post("/v1/content:batchGet", headers=READER, json={"user_ids": ["ok", 7]}), 400, "bad_user_id"),
        (client.post("/v1/content:batchGet", headers=READER, data="user_ids=u-ada"), 415, "unsupported_media_type"),
        (client.post("/v1/content:batchGet", headers={**READER, "Content-Type": "application/json"},
                     data=json.dumps({"user_ids": ["u-" + "x" * 100] * 3000})), 413, "body_too_large"),
        (client.delete("/v1/content/u-ada", headers=READER), 405, "method_not_allowed"),
        (client.get("/v1/nothing-here", headers=READER), 404, "not_found"),
    ]
    for response, status, code in cases:
        assert (response.status_code, response.get_json()["error"]) == (status, code), response.get_json()
        assert response.get_json()["message"]


def test_a_chunked_body_is_read_up_to_the_limit_and_413_past_it(make_app):
    client = make_app("api.max_body_bytes=1024").test_client()
    json_headers = {**READER, "Content-Type": "application/json"}
    at_limit = b'{"user_ids": ["u-ada"]' + b" " * 1001 + b"}"
    assert len(at_limit) == 1024
    read = post_chunked(client, "/v1/content:batchGet", at_limit, json_headers)
    assert read.status_code == 200
    assert [row["user_id"] for row in read.get_json()["rows"]] == ["u-ada"]
    too_large = {"error": "body_too_large", "message": "the body is over 1024 bytes"}
    # One byte over: cut at the limit it would still be valid JSON, and be served.
    over = post_chunked(client, "/v1/content:batchGet", at_limit + b" ", json_headers)
    assert (over.status_code, over.get_json()) == (413, too_large)
    endless = io.BytesIO(b'{"user_ids": ["u-ada"], "pad": "' + b"x" * 300_000 + b'"}')
    huge = post_chunked(client, "/v1/content:batchGet", endless, json_headers)
    assert (huge.status_code, huge.get_json()) == (413, too_large)
    assert endless.tell() == 1025  # the limit and one byte, no more
