"""The preference centre over each real store: signed links, tampering and expiry,
changes that take effect at once, events in the files landing folder, audit, and
RFC 8058 one-click unsubscribe."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from itsdangerous import URLSafeTimedSerializer

from pipelines.contracts import validate_event
from tests.api.conftest import SIGNING_KEY, headers

READER = headers("reader")


def landed_events(app) -> list[dict]:
    config = app.extensions["tailor"]["config"]
    folder = Path(config.under_root(config.source.files.path))
    events = []
    for path in sorted(folder.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            assert validate_event(line) is None
            events.append(json.loads(line))
    return sorted(events, key=lambda event: event["occurred_at"])


def audit_lines(app) -> list[dict]:
    folder = Path(app.extensions["tailor"]["config"].under_root("audit/api"))
    return [json.loads(line) for path in sorted(folder.glob("*.jsonl")) for line in path.read_text().splitlines()]


def token_for(client, user_id: str) -> str:
    response = client.get(f"/v1/users/{user_id}/preference-link", headers=headers("prefs"))
    assert response.status_code == 200
    body = response.get_json()
    assert body["preferences_url"] == f"http://127.0.0.1:8080/preferences/{body['token']}"
    assert body["unsubscribe_url"] == f"http://127.0.0.1:8080/v1/unsubscribe/{body['token']}"
    return str(body["token"])


def test_read_and_change_preferences_with_a_signed_link(store_app):
    client = store_app.test_client()
    token = token_for(client, "u-ada")
    assert client.get(f"/v1/preferences/{token}").get_json() == {
        "user_id": "u-ada", "subscribed": True, "topics": [], "frequency_cap_per_week": None}
    changed = client.put(f"/v1/preferences/{token}", json={"topics": ["offers"], "frequency_cap_per_week": 2})
    assert changed.status_code == 200
    assert changed.get_json() == {"user_id": "u-ada", "subscribed": True, "topics": ["offers"],
                                  "frequency_cap_per_week": 2}
    events = landed_events(store_app)
    assert [(event["event_type"], event["user_id"], event["source"], event["payload"]) for event in events] == [
        ("preference_update", "u-ada", "preference_centre", {"topics": ["offers"], "frequency_cap_per_week": 2})]
    assert client.get("/v1/content/u-ada", headers=READER).get_json()["fallback"] is None


def test_unsubscribe_through_the_api_is_honoured_by_the_next_read(store_app):
    client = store_app.test_client()
    assert client.get("/v1/content/u-ada", headers=READER).status_code == 200  # cached now
    token = token_for(client, "u-ada")
    response = client.put(f"/v1/preferences/{token}", json={"subscribed": False})
    assert response.get_json()["subscribed"] is False
    gone = client.get("/v1/content/u-ada", headers=READER)
    assert gone.status_code == 410
    assert gone.get_json()["reason"] == "unsubscribed"
    assert [event["event_type"] for event in landed_events(store_app)] == ["unsubscribe"]
    assert landed_events(store_app)[0]["payload"] == {"scope": "all"}
    again = client.put(f"/v1/preferences/{token}", json={"subscribed": True})
    assert again.get_json()["subscribed"] is True
    assert client.get("/v1/content/u-ada", headers=READER).get_json()["fallback"] is None
    assert [event["event_type"] for event in landed_events(store_app)] == ["unsubscribe", "consent_update"]
    entries = audit_lines(store_app)
    assert [(entry["action"], entry["actor"], entry["before"]["subscribed"], entry["after"]["subscribed"])
            for entry in entries] == [("preferences_changed", "subscriber", True, False),
                                      ("preferences_changed", "subscriber", False, True)]
    assert "u-ada" not in json.dumps(entries)  # the audit names a hash, not the person


def test_one_click_unsubscribe_per_rfc_8058(app, client):
    token = token_for(client, "u-bob")
    refused = client.post(f"/v1/unsubscribe/{token}", data={"List-Unsubscribe": "Yes"})
    assert refused.status_code == 400
    assert refused.get_json()["error"] == "bad_request"
    response = client.post(f"/v1/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"})
    assert response.status_code == 200
    assert response.get_json() == {"user_id": "u-bob", "subscribed": False}
    assert client.get("/v1/content/u-bob", headers=READER).status_code == 410
    assert [event["event_type"] for event in landed_events(app)] == ["unsubscribe"]


def test_tampered_and_expired_tokens_are_refused(client):
    token = token_for(client, "u-ada")
    tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    assert client.get(f"/v1/preferences/{tampered}").get_json()["error"] == "invalid_token"
    other_key = URLSafeTimedSerializer("another-key", salt="tailor-preferences").dumps({"u": "u-ada"})
    assert client.get(f"/v1/preferences/{other_key}").status_code == 403
    expired = _signed_at(SIGNING_KEY, "u-ada", seconds_ago=61 * 24 * 3600)
    response = client.put(f"/v1/preferences/{expired}", json={"subscribed": False})
    assert response.status_code == 403
    assert response.get_json() == {"error": "token_expired",
                                   "message": "this link has expired; use the link in a newer email"}
    assert client.get("/v1/content/u-ada", headers=READER).status_code == 200  # nothing changed


def _signed_at(key: str, user_id: str, seconds_ago: int) -> str:
    """A link as the app makes it, signed with a clock `seconds_ago` back."""
    serializer = URLSafeTimedSerializer(key, salt="tailor-preferences")
    signer = serializer.make_signer()
    signer.get_timestamp = lambda: int(time.time()) - seconds_ago  # type: ignore[method-assign]
    payload = serializer.dump_payload({"u": user_id})
    return signer.sign(payload).decode()


@pytest.mark.parametrize("body", [
    {"topics": ["not-a-topic"]}, {"frequency_cap_per_week": 500}, {"subscribed": "no"}, {"colour": "blue"}])
def test_bad_preference_changes_are_400(client, body):
    token = token_for(client, "u-ada")
    response = client.put(f"/v1/preferences/{token}", json=body)
    assert response.status_code == 400
    assert response.get_json()["error"] == "bad_request"


def test_html_page_shows_and_saves_choices(app, client):
    token = token_for(client, "u-ada")
    page = client.get(f"/preferences/{token}")
    assert page.status_code == 200
    assert page.mimetype == "text/html"
    assert 'id="topic-offers"' in page.get_data(as_text=True)
    saved = client.post(f"/preferences/{token}", data={"subscribed": "yes", "topics": ["offers", "new_arrivals"],
                                                        "frequency": "3"})
    assert 'id="saved"' in saved.get_data(as_text=True)
    assert client.get(f"/v1/preferences/{token}").get_json()["topics"] == ["offers", "new_arrivals"]
    bad = client.get("/preferences/not-a-token")
    assert bad.status_code == 403
    assert "this link is not valid" in bad.get_data(as_text=True)
    for response in (page, saved, bad):
        assert response.headers["Content-Security-Policy"] == (
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; base-uri 'none'; "
            "frame-ancestors 'none'")
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["X-Frame-Options"] == "DENY"


def csp_directives(header: str) -> dict[str, list[str]]:
    """A Content-Security-Policy header as a browser splits it: directive -> its sources."""
    directives: dict[str, list[str]] = {}
    for part in header.split(";"):
        words = part.split()
        if words:
            directives.setdefault(words[0].lower(), words[1:])  # a repeated directive is ignored
    return directives


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("valid_token", [True, False])
def test_no_site_may_frame_the_preference_page(client, method, valid_token):
    """Clickjacking: the unsubscribe page inside another site's invisible frame. Every answer
    of the page (a good link or a bad one, shown or saved) forbids framing, by CSP
    frame-ancestors and by X-Frame-Options for browsers that predate it."""
    token = token_for(client, "u-ada") if valid_token else "not-a-token"
    response = client.open(f"/preferences/{token}", method=method, data={"topics": ["offers"]}
                           if method == "POST" else None)
    assert response.status_code == (200 if valid_token else 403)
    directives = csp_directives(response.headers["Content-Security-Policy"])
    assert directives["frame-ancestors"] == ["'none'"]
    assert directives["default-src"] == ["'none'"]
    assert "script-src" not in directives  # no script at all: default-src 'none' covers it
    assert response.headers.getlist("X-Frame-Options") == ["DENY"]


def test_the_preview_page_may_not_be_framed_either(client):
    response = client.get("/v1/preview/u-ada", headers=headers("ops"))
    assert response.status_code == 200
    assert csp_directives(response.headers["Content-Security-Policy"])["frame-ancestors"] == ["'none'"]
    assert response.headers["X-Frame-Options"] == "DENY"


def test_erasure_suppresses_at_once_and_emits_an_event(store_app):
    client = store_app.test_client()
    response = client.delete("/v1/users/u-ada", headers=headers("ops"))
    assert response.status_code == 202
    body = response.get_json()
    assert body["status"] == "erasure_requested"
    assert body["request_id"].startswith("erasure-")
    gone = client.get("/v1/content/u-ada", headers=READER)
    assert (gone.status_code, gone.get_json()["reason"]) == (410, "erased")
    events = landed_events(store_app)
    assert [(event["event_type"], event["source"], event["payload"]) for event in events] == [
        ("erasure_request", "backoffice", {"request_id": body["request_id"], "actor": "api-key:ops"})]
    entry = audit_lines(store_app)[0]
    assert (entry["action"], entry["actor"], entry["after"]) == ("erasure_requested", "api-key:ops",
                                                                 {"suppression": "erased"})
    assert client.delete("/v1/users/u-ada", headers=headers("reader")).status_code == 403


def test_an_erased_persons_old_link_cannot_bring_them_back(app, client):
    token = token_for(client, "u-ada")
    assert client.delete("/v1/users/u-ada", headers=headers("ops")).status_code == 202
    again = client.put(f"/v1/preferences/{token}", json={"subscribed": True})
    assert again.status_code == 410 and again.get_json()["error"] == "gone"
    assert client.post(f"/preferences/{token}", data={"subscribed": "yes"}).status_code == 410
    assert client.get("/v1/content/u-ada", headers=READER).status_code == 410
    assert [event["event_type"] for event in landed_events(app)] == ["erasure_request"]


def test_a_form_without_a_subscription_choice_leaves_it_as_it_is(app, client):
    token = token_for(client, "u-ada")
    assert client.put(f"/v1/preferences/{token}", json={"subscribed": False}).status_code == 200
    client.post(f"/preferences/{token}", data={"topics": ["offers"]})
    state = client.get(f"/v1/preferences/{token}").get_json()
    assert (state["subscribed"], state["topics"]) == (False, ["offers"])
    assert client.get("/v1/content/u-ada", headers=READER).status_code == 410
