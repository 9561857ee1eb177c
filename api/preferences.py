"""The preference centre: what a subscriber reaches through the signed link in an email.

    GET  /v1/users/<user_id>/preference-link   (preferences:write) a signed, expiring link for one person
    GET  /v1/preferences/<token>               their choices: subscribed, topics, frequency
    PUT  /v1/preferences/<token>               change them (JSON)
    POST /v1/unsubscribe/<token>               RFC 8058 one-click: body List-Unsubscribe=One-Click
    GET|POST /preferences/<token>              the small HTML page for people (a form posts back)

Tokens are itsdangerous' URL-safe timed signatures of the user id, keyed by
TAILOR_LINK_SIGNING_KEY, valid for api.token_max_age_s: the link is the credential, so no
API key is needed and each link reaches one person only. Every change writes suppression
at once (api/consent.py), emits an event to the events source and writes audit.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, g, jsonify, request
from flask.typing import ResponseReturnValue
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from api import consent
from api.admin import html_page, templates
from api.auth import require_scope
from api.errors import ApiError
from api.rows import GONE_REASONS
from api.validation import check_user_id, form_body, json_body
from pipelines.config import Config

bp = Blueprint("preferences", __name__)
_SALT = "tailor-preferences"
SUBSCRIBER = "subscriber"
# No script, no other origin, and no other site may frame the page: a framed unsubscribe
# button is a clickjacking target (X-Frame-Options: DENY too, for browsers without CSP 2).
PAGE_POLICY = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; base-uri 'none'; " \
              "frame-ancestors 'none'"


def _config() -> Config:
    config: Config = current_app.extensions["tailor"]["config"]
    return config


def _serializer() -> URLSafeTimedSerializer:
    key = _config().secret("link_signing_key")
    if not key:
        raise ApiError(503, "not_configured", "preference links are not set up on this server")
    return URLSafeTimedSerializer(key, salt=_SALT)


def make_token(user_id: str) -> str:
    return str(_serializer().dumps({"u": user_id}))


def user_of(token: str) -> str:
    try:
        data = _serializer().loads(token, max_age=_config().api.token_max_age_s)
    except SignatureExpired:
        raise ApiError(403, "token_expired", "this link has expired; use the link in a newer email") from None
    except BadSignature:
        raise ApiError(403, "invalid_token", "this link is not valid") from None
    if not isinstance(data, dict) or not isinstance(data.get("u"), str):
        raise ApiError(403, "invalid_token", "this link is not valid")
    user_id = check_user_id(data["u"])
    record = consent.read_suppression(user_id)
    if record is not None and record.get("reason") == "erased":
        # An old link must not bring back a person who asked to be erased.
        raise ApiError(410, "gone", "this person's data was erased; the link no longer works")
    return user_id


def current_state(user_id: str) -> dict[str, Any]:
    suppression = consent.read_suppression(user_id)
    stored = consent.read_preferences(user_id) or {}
    return {"user_id": user_id,
            "subscribed": suppression is None or suppression.get("reason") not in GONE_REASONS,
            "topics": list(stored.get("topics") or []),
            "frequency_cap_per_week": stored.get("frequency_cap_per_week")}


def _check_change(body: dict[str, Any]) -> dict[str, Any]:
    known = {"subscribed", "topics", "frequency_cap_per_week"}
    unknown = sorted(set(body) - known)
    if unknown:
        raise ApiError(400, "bad_request", f"unknown field {unknown[0]!r}; fields: {', '.join(sorted(known))}")
    if "subscribed" in body and not isinstance(body["subscribed"], bool):
        raise ApiError(400, "bad_request", "subscribed must be true or false")
    if "topics" in body:
        topics = body["topics"]
        offered = _config().api.preference_topics
        if not isinstance(topics, list) or any(topic not in offered for topic in topics):
            raise ApiError(400, "bad_request", f"topics must be a list of: {', '.join(offered)}")
    if "frequency_cap_per_week" in body:
        cap = body["frequency_cap_per_week"]
        if cap is not None and (not isinstance(cap, int) or isinstance(cap, bool) or not 0 <= cap <= 100):
            raise ApiError(400, "bad_request", "frequency_cap_per_week must be a whole number 0-100, or null")
    return body


def apply_change(user_id: str, change: dict[str, Any], actor: str) -> dict[str, Any]:
    """Suppression first, then the events, then audit; returns the new state."""
    before = current_state(user_id)
    events = []
    if change.get("subscribed") is False and before["subscribed"]:
        consent.suppress(user_id, "unsubscribed")
        events.append(consent.make_event("unsubscribe", user_id, "preference_centre", {"scope": "all"}))
    elif change.get("subscribed") is True and not before["subscribed"]:
        consent.lift_suppression(user_id)
        events.append(consent.make_event("consent_update", user_id, "preference_centre",
                                         {"purpose": "email_marketing", "status": "granted", "actor": actor}))
    preferences: dict[str, Any] = {name: change[name] for name in ("topics", "frequency_cap_per_week")
                                   if name in change}
    if preferences:
        stored = {"topics": before["topics"], "frequency_cap_per_week": before["frequency_cap_per_week"],
                  **preferences, "updated_at": consent.now_iso()}
        consent.write_preferences(user_id, stored)
        events.append(consent.make_event("preference_update", user_id, "preference_centre", preferences))
    after = current_state(user_id)
    if events:
        consent.emit(events)
        consent.audit("preferences_changed", user_id, actor,
                      before={key: before[key] for key in ("subscribed", "topics", "frequency_cap_per_week")},
                      after={key: after[key] for key in ("subscribed", "topics", "frequency_cap_per_week")})
    return after


def links(user_id: str) -> dict[str, str]:
    token = make_token(user_id)
    base = _config().api.public_base_url.rstrip("/")
    return {"token": token, "preferences_url": f"{base}/preferences/{token}",
            "unsubscribe_url": f"{base}/v1/unsubscribe/{token}"}


@bp.get("/v1/users/<user_id>/preference-link")
@require_scope("preferences:write")
def preference_link(user_id: str) -> ResponseReturnValue:
    """Links for an email: the page, and the List-Unsubscribe URI (with List-Unsubscribe-Post)."""
    check_user_id(user_id)
    return jsonify(user_id=user_id, **links(user_id))


@bp.get("/v1/preferences/<token>")
def get_preferences(token: str) -> ResponseReturnValue:
    response = jsonify(current_state(user_of(token)))
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.put("/v1/preferences/<token>")
def put_preferences(token: str) -> ResponseReturnValue:
    user_id = user_of(token)
    state = apply_change(user_id, _check_change(json_body()), SUBSCRIBER)
    response = jsonify(state)
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.post("/v1/unsubscribe/<token>")
def one_click_unsubscribe(token: str) -> ResponseReturnValue:
    """RFC 8058: the mail client POSTs `List-Unsubscribe=One-Click` as a form (multipart or
    urlencoded), no cookies, no redirects. The body is read within api.max_body_bytes."""
    form = form_body()  # before any store call: a body over the limit costs nothing
    user_id = user_of(token)
    if form.get("List-Unsubscribe") != "One-Click":
        raise ApiError(400, "bad_request", "expected the form body List-Unsubscribe=One-Click (RFC 8058)")
    apply_change(user_id, {"subscribed": False}, SUBSCRIBER)
    return jsonify(user_id=user_id, subscribed=False)


@bp.route("/preferences/<token>", methods=["GET", "POST"])
def page(token: str) -> ResponseReturnValue:
    try:
        user_id = user_of(token)
    except ApiError as error:
        html = templates().get_template("preferences.html").render(error=error.message, state=None, topics=(),
                                                                    saved=False)
        return html_page(html, PAGE_POLICY, error.status)
    saved = False
    if request.method == "POST":
        form = form_body()
        # Only an explicit choice changes the subscription: a form without it leaves it as it is.
        choice = {"yes": True, "no": False}.get(form.get("subscribed", ""))
        change: dict[str, Any] = {} if choice is None else {"subscribed": choice}
        change |= {"topics": [topic for topic in form.getlist("topics")
                              if topic in _config().api.preference_topics]}
        frequency = form.get("frequency", "")
        change["frequency_cap_per_week"] = int(frequency) if frequency.isdigit() and int(frequency) <= 100 else None
        apply_change(user_id, change, SUBSCRIBER)
        saved = True
    g.subscriber_page = True
    html = templates().get_template("preferences.html").render(
        state=current_state(user_id), topics=_config().api.preference_topics, saved=saved, error=None)
    response = html_page(html, PAGE_POLICY)
    response.headers["Cache-Control"] = "no-store"
    return response
