"""ESP webhooks: the generic HMAC format over each real store, SendGrid's signed Event
Webhook with a key pair made here, signatures, staleness and replays."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.api.conftest import WEBHOOK_SECRET, headers, post_chunked
from tests.api.test_preferences import audit_lines, landed_events

READER = headers("reader")


def signed(body: bytes, secret: str = WEBHOOK_SECRET, at: int | None = None) -> dict[str, str]:
    stamp = str(int(time.time()) if at is None else at)
    digest = hmac.new(secret.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return {"X-Tailor-Signature": f"t={stamp},v1={digest}", "Content-Type": "application/json"}


GENERIC = {"events": [
    {"id": "e1", "type": "bounce", "bounce_type": "hard", "user_id": "u-ada", "occurred_at": "2026-11-28T10:00:00Z",
     "campaign_id": "c-9", "message_id": "m-1"},
    {"id": "e2", "type": "complaint", "user_id": "u-bob", "occurred_at": "2026-11-28T10:00:01Z",
     "campaign_id": "c-9", "message_id": "m-2"},
    {"id": "e3", "type": "click", "user_id": "u-hal", "occurred_at": "2026-11-28T10:00:02Z",
     "campaign_id": "c-9", "message_id": "m-3", "url": "https://shop.example/p/22423"},
    {"id": "e4", "type": "bounce", "bounce_type": "soft", "user_id": "u-nobody",
     "occurred_at": "2026-11-28T10:00:03Z", "campaign_id": "c-9", "message_id": "m-4"},
]}


def test_generic_webhook_suppresses_and_emits_events(store_app):
    client = store_app.test_client()
    body = json.dumps(GENERIC).encode()
    response = client.post("/v1/webhooks/generic", data=body, headers=signed(body))
    assert response.status_code == 200
    assert response.get_json() == {"accepted": 4, "ignored": 0, "suppressed": 2}
    assert client.get("/v1/content/u-ada", headers=READER).get_json()["reason"] == "hard_bounce"
    assert client.get("/v1/content/u-bob", headers=READER).get_json()["reason"] == "complaint"
    assert client.get("/v1/content/u-hal", headers=READER).status_code == 200  # a click suppresses nothing
    assert client.get("/v1/content/u-nobody", headers=READER).status_code == 200  # a soft bounce neither
    events = {event["event_id"]: event for event in landed_events(store_app)}
    assert {event_id: (event["event_type"], event["user_id"], event["source"], event["payload"])
            for event_id, event in events.items()} == {
        "generic-e1": ("email_bounce", "u-ada", "esp", {"campaign_id": "c-9", "message_id": "m-1",
                                                        "bounce_type": "hard"}),
        "generic-e2": ("email_complaint", "u-bob", "esp", {"campaign_id": "c-9", "message_id": "m-2"}),
        "generic-e3": ("email_click", "u-hal", "esp", {"campaign_id": "c-9", "message_id": "m-3",
                                                       "url": "https://shop.example/p/22423"}),
        "generic-e4": ("email_bounce", "u-nobody", "esp", {"campaign_id": "c-9", "message_id": "m-4",
                                                           "bounce_type": "soft"}),
    }
    assert sorted(entry["actor"] for entry in audit_lines(store_app)) == ["esp:generic", "esp:generic"]


def test_an_erased_person_stays_erased_after_a_bounce(client):
    assert client.delete("/v1/users/u-ada", headers=headers("ops")).status_code == 202
    body = json.dumps({"events": [GENERIC["events"][0]]}).encode()
    assert client.post("/v1/webhooks/generic", data=body, headers=signed(body)).status_code == 200
    assert client.get("/v1/content/u-ada", headers=READER).get_json()["reason"] == "erased"


def test_bad_signature_stale_and_replayed_requests_are_refused(client):
    body = json.dumps(GENERIC).encode()
    wrong = client.post("/v1/webhooks/generic", data=body, headers=signed(body, secret="another-secret"))
    assert (wrong.status_code, wrong.get_json()["error"]) == (401, "bad_signature")
    missing = client.post("/v1/webhooks/generic", data=body, headers={"Content-Type": "application/json"})
    assert (missing.status_code, missing.get_json()["error"]) == (401, "bad_signature")
    tampered = client.post("/v1/webhooks/generic", data=body.replace(b"u-hal", b"u-bob"), headers=signed(body))
    assert (tampered.status_code, tampered.get_json()["error"]) == (401, "bad_signature")
    stale = client.post("/v1/webhooks/generic", data=body, headers=signed(body, at=int(time.time()) - 301))
    assert (stale.status_code, stale.get_json()["error"]) == (401, "stale_webhook")
    fresh = signed(body)
    assert client.post("/v1/webhooks/generic", data=body, headers=fresh).status_code == 200
    again = client.post("/v1/webhooks/generic", data=body, headers=fresh)
    assert (again.status_code, again.get_json()["error"]) == (409, "replayed")
    # The same delivery with its signature spelt in upper case is the same delivery.
    stamp, digest = fresh["X-Tailor-Signature"].split(",")
    upper = {**fresh, "X-Tailor-Signature": f"{stamp},v1={digest[3:].upper()}"}
    assert client.post("/v1/webhooks/generic", data=body, headers=upper).status_code == 409
    assert client.get("/v1/content/u-hal", headers=READER).status_code == 200  # the tampered body changed nothing


def test_a_chunked_webhook_is_verified_over_its_whole_body(make_app):
    client = make_app("api.max_body_bytes=1024").test_client()
    body = json.dumps(GENERIC).encode().ljust(1024)  # 638 bytes and spaces
    response = post_chunked(client, "/v1/webhooks/generic", body, signed(body))
    assert (response.status_code, response.get_json()) == (200, {"accepted": 4, "ignored": 0, "suppressed": 2})
    over = body + b" "
    refused = post_chunked(client, "/v1/webhooks/generic", over, signed(over))
    assert (refused.status_code, refused.get_json()) == (
        413, {"error": "body_too_large", "message": "the body is over 1024 bytes"})


def test_bad_bodies_and_unknown_providers_are_4xx(client):
    for body, code in ((b"{not json", "bad_json"), (b'{"events": [{"type": "delivered"}]}', "bad_request"),
                       (b'{"events": [{"type": "open", "user_id": "has space"}]}', "bad_user_id"),
                       (b'{"events": [{"type": "open"}]}', "bad_user_id")):
        response = client.post("/v1/webhooks/generic", data=body, headers=signed(body))
        assert (response.status_code, response.get_json()["error"]) == (400, code)
    unknown = client.post("/v1/webhooks/mailchimp", data=b"{}", headers=signed(b"{}"))
    assert (unknown.status_code, unknown.get_json()["error"]) == (404, "unknown_provider")


@pytest.fixture
def sendgrid_key(monkeypatch) -> ec.EllipticCurvePrivateKey:
    private = ec.generate_private_key(ec.SECP256R1())
    public = private.public_key().public_bytes(serialization.Encoding.DER,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    monkeypatch.setenv("TAILOR_WEBHOOK_SENDGRID_PUBLIC_KEY", base64.b64encode(public).decode())
    return private


def sendgrid_headers(private: ec.EllipticCurvePrivateKey, body: bytes, at: int | None = None) -> dict[str, str]:
    stamp = str(int(time.time()) if at is None else at)
    signature = private.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {"X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
            "X-Twilio-Email-Event-Webhook-Timestamp": stamp, "Content-Type": "application/json"}


def test_sendgrid_event_webhook(sendgrid_key, make_app):
    app = make_app()
    client = app.test_client()
    events = [
        {"email": "someone@example.com", "timestamp": 1764324000, "event": "spamreport", "sg_event_id": "sg-1",
         "sg_message_id": "msg-1", "user_id": "u-ada", "campaign_id": "c-7"},
        {"email": "someone@example.com", "timestamp": 1764324001, "event": "bounce", "type": "blocked",
         "sg_event_id": "sg-2", "sg_message_id": "msg-2", "user_id": "u-bob", "campaign_id": "c-7"},
        {"email": "someone@example.com", "timestamp": 1764324002, "event": "delivered", "sg_event_id": "sg-3",
         "user_id": "u-bob"},
        {"email": "someone@example.com", "timestamp": 1764324003, "event": "open", "sg_event_id": "sg-4"},
    ]
    body = json.dumps(events).encode()
    response = client.post("/v1/webhooks/sendgrid", data=body, headers=sendgrid_headers(sendgrid_key, body))
    assert response.status_code == 200
    assert response.get_json() == {"accepted": 2, "ignored": 2, "suppressed": 1}
    assert client.get("/v1/content/u-ada", headers=READER).get_json()["reason"] == "complaint"
    assert client.get("/v1/content/u-bob", headers=READER).status_code == 200  # blocked: a soft bounce
    landed = landed_events(app)
    assert [(event["event_id"], event["event_type"], event["occurred_at"], event["payload"]) for event in landed] == [
        ("sendgrid-sg-1", "email_complaint", "2025-11-28T10:00:00Z", {"campaign_id": "c-7", "message_id": "msg-1"}),
        ("sendgrid-sg-2", "email_bounce", "2025-11-28T10:00:01Z", {"campaign_id": "c-7", "message_id": "msg-2",
                                                                   "bounce_type": "soft"})]
    assert "someone@example.com" not in json.dumps(landed)
    other = ec.generate_private_key(ec.SECP256R1())
    forged = client.post("/v1/webhooks/sendgrid", data=body, headers=sendgrid_headers(other, body))
    assert (forged.status_code, forged.get_json()["error"]) == (401, "bad_signature")
