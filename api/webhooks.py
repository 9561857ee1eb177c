"""ESP webhooks: `POST /v1/webhooks/<provider>` turns an email service's events into
Tailor events (bounces, complaints, unsubscribes, opens, clicks), and bounces,
complaints and unsubscribes into suppression at once.

Providers (each one's secret comes from the variable api.webhook_secrets names):

- `generic`: a JSON body `{"events": [...]}` (see GENERIC_EVENT), signed with HMAC-SHA256
  over `<timestamp>.<raw body>`, sent as `X-Tailor-Signature: t=<unix seconds>,v1=<hex>`
  (the scheme Stripe and Standard Webhooks use).
- `sendgrid`: SendGrid's Event Webhook, signed with ECDSA P-256 over `<timestamp><raw
  body>`; headers X-Twilio-Email-Event-Webhook-Signature (base64 DER) and
  X-Twilio-Email-Event-Webhook-Timestamp; the variable holds the public key SendGrid shows
  (base64 DER). The sender sets the custom arg `user_id` (and `campaign_id`) on each
  message; events without one are ignored, since the email address is not a user id here
  and is never read.

A request older than api.webhook_tolerance_s, or whose signature was seen before within
that window (kept in the rate limiter's storage: Redis when the store is Redis, so every
worker sees it), is refused.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import os
import re
import time
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key
from flask import Blueprint, current_app, jsonify, request
from flask.typing import ResponseReturnValue

from api import consent
from api.errors import ApiError
from api.rows import GONE_REASONS
from api.validation import USER_ID_PATTERN, body_bytes
from pipelines.config import Config
from pipelines.contracts import validate_event

log = logging.getLogger("tailor.api.webhooks")

bp = Blueprint("webhooks", __name__)

GENERIC_TYPES = ("bounce", "complaint", "unsubscribe", "open", "click")
GENERIC_EVENT = {"id": "unique per event", "type": "|".join(GENERIC_TYPES), "user_id": "...",
                 "occurred_at": "ISO-8601 with zone", "campaign_id": "...", "message_id": "...",
                 "bounce_type": "hard|soft (bounce)", "url": "... (click)"}
MAX_EVENTS = 1000
_VALID_USER_ID = re.compile(USER_ID_PATTERN)


def _config() -> Config:
    config: Config = current_app.extensions["tailor"]["config"]
    return config


def _secret(provider: str) -> str:
    names = _config().api.webhook_secrets
    if provider not in names or provider not in PROVIDERS:
        raise ApiError(404, "unknown_provider", f"no webhook for provider {provider!r}; known: "
                       f"{', '.join(sorted(set(names) & set(PROVIDERS)))}")
    secret = os.environ.get(names[provider])
    if not secret:
        raise ApiError(503, "not_configured", f"the {provider} webhook secret is not set on this server")
    return secret


def _fresh(timestamp: str) -> None:
    try:
        sent = int(timestamp)
    except ValueError:
        raise ApiError(401, "bad_signature", "the timestamp is not a whole number of seconds") from None
    tolerance = _config().api.webhook_tolerance_s
    if abs(time.time() - sent) > tolerance:
        raise ApiError(401, "stale_webhook", f"the request is more than {tolerance} s old (or ahead): refused "
                       "as a possible replay")


def _replay_key(provider: str, timestamp: str, body: bytes) -> str:
    """What makes a delivery the same delivery: its sender, time and body, not the bytes
    of its signature (a signature has other valid spellings: hex case, base64 padding,
    ECDSA's (r, n - s))."""
    digest = hashlib.sha256(provider.encode() + b"|" + timestamp.encode("utf-8", "replace") + b"|" + body)
    return f"webhook-seen:{digest.hexdigest()}"


def _seen_before(key: str) -> bool:
    """Asked of the rate limiter's storage (Redis when Redis is the store), whose client
    times out like a store read: a storage that cannot answer is a 503 the sender retries,
    never a 500, and nothing has been done yet."""
    limiter = current_app.extensions["tailor"]["limiter"]
    try:
        return bool(limiter.storage.get(key))
    except Exception as error:  # noqa: BLE001 - any storage client failure is an outage to the sender
        log.warning("webhook replay check failed: %s", type(error).__name__)
        raise ApiError(503, "store_unavailable", "the delivery could not be checked; try again",
                       headers={"Retry-After": "1"}) from None


def _remember(key: str) -> None:
    """Recorded once the events are written: a sender that retries after a 503 is heard.
    Failing to record it does not fail the delivery, whose changes are made: the sender
    would send it again and its events would arrive twice."""
    limiter = current_app.extensions["tailor"]["limiter"]
    try:
        limiter.storage.incr(key, 2 * _config().api.webhook_tolerance_s)
    except Exception as error:  # noqa: BLE001 - as above
        log.warning("webhook delivery not recorded against replays: %s", type(error).__name__)


def _verify_generic(secret: str, body: bytes) -> str:
    """Checks the signature and its age; returns the signed timestamp."""
    header = request.headers.get("X-Tailor-Signature", "")
    parts = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    if "t" not in parts or "v1" not in parts:
        raise ApiError(401, "bad_signature", "X-Tailor-Signature must be t=<unix seconds>,v1=<hex HMAC-SHA256>")
    expected = hmac.new(secret.encode("utf-8"), parts["t"].encode("ascii", "replace") + b"." + body,
                        hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, parts["v1"].lower()):
        raise ApiError(401, "bad_signature", "the signature does not match the body")
    _fresh(parts["t"])
    return parts["t"]


def _verify_sendgrid(public_key: str, body: bytes) -> str:
    """Checks the signature and its age; returns the signed timestamp."""
    signature = request.headers.get("X-Twilio-Email-Event-Webhook-Signature", "")
    timestamp = request.headers.get("X-Twilio-Email-Event-Webhook-Timestamp", "")
    if not signature or not timestamp:
        raise ApiError(401, "bad_signature", "X-Twilio-Email-Event-Webhook-Signature and -Timestamp are required")
    try:
        key = load_der_public_key(base64.b64decode(public_key))
    except (ValueError, binascii.Error):
        raise ApiError(503, "not_configured", "the sendgrid public key is not a base64 DER key") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ApiError(503, "not_configured", "the sendgrid public key is not an elliptic-curve key")
    try:
        key.verify(base64.b64decode(signature, validate=True), timestamp.encode("utf-8") + body,
                   ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError, binascii.Error):
        raise ApiError(401, "bad_signature", "the signature does not match the body") from None
    _fresh(timestamp)
    return timestamp


def _text(value: Any, default: str = "unknown") -> str:
    return str(value)[:512] if isinstance(value, str | int) and str(value) else default


def _iso(seconds: Any) -> str | None:
    if not isinstance(seconds, int | float) or isinstance(seconds, bool):
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


Mapped = tuple[dict[str, Any], str | None]  # (event, suppression reason)


def _generic_events(document: Any) -> tuple[list[Mapped], int]:
    if not isinstance(document, dict) or not isinstance(document.get("events"), list):
        raise ApiError(400, "bad_request", 'the body must be {"events": [...]}')
    mapped: list[Mapped] = []
    for position, item in enumerate(document["events"]):
        if not isinstance(item, dict) or item.get("type") not in GENERIC_TYPES:
            raise ApiError(400, "bad_request", f"events[{position}].type must be one of {', '.join(GENERIC_TYPES)}")
        ids = {"campaign_id": _text(item.get("campaign_id")), "message_id": _text(item.get("message_id"))}
        kind = item["type"]
        payload: dict[str, Any]
        reason = None
        if kind == "bounce":
            bounce_type = "hard" if item.get("bounce_type", "hard") == "hard" else "soft"
            event_type, payload = "email_bounce", {**ids, "bounce_type": bounce_type}
            reason = "hard_bounce" if bounce_type == "hard" else None
        elif kind == "complaint":
            event_type, payload, reason = "email_complaint", ids, "complaint"
        elif kind == "unsubscribe":
            event_type, payload, reason = "unsubscribe", {"scope": "all", "campaign_id": ids["campaign_id"]}, \
                "unsubscribed"
        elif kind == "open":
            event_type, payload = "email_open", ids
        else:
            event_type, payload = "email_click", {**ids, "url": _text(item.get("url"), "")}
        given = item.get("user_id")
        user_id = given if isinstance(given, str) else ""  # "" is refused below as a bad id
        event = consent.make_event(event_type, user_id, "esp", payload,
                                   occurred_at=item.get("occurred_at") if isinstance(item.get("occurred_at"), str)
                                   else None, event_id=f"generic-{_text(item.get('id'), '')}" if item.get("id")
                                   else None)
        mapped.append((event, reason))
    return mapped, 0


# SendGrid event -> (Tailor event type, suppression reason); others are ignored.
_SENDGRID = {"bounce": ("email_bounce", "hard_bounce"), "spamreport": ("email_complaint", "complaint"),
             "unsubscribe": ("unsubscribe", "unsubscribed"), "open": ("email_open", None),
             "click": ("email_click", None)}


def _sendgrid_events(document: Any) -> tuple[list[Mapped], int]:
    if not isinstance(document, list):
        raise ApiError(400, "bad_request", "a SendGrid webhook body is a JSON array of events")
    mapped: list[Mapped] = []
    ignored = 0
    for item in document:
        if not isinstance(item, dict) or item.get("event") not in _SENDGRID or not item.get("user_id"):
            ignored += 1
            continue
        event_type, reason = _SENDGRID[item["event"]]
        ids = {"campaign_id": _text(item.get("campaign_id") or item.get("category")),
               "message_id": _text(item.get("sg_message_id"))}
        payload: dict[str, Any] = ids
        if event_type == "email_bounce":
            hard = item.get("type", "bounce") == "bounce"  # "blocked": a temporary refusal
            payload, reason = {**ids, "bounce_type": "hard" if hard else "soft"}, reason if hard else None
        elif event_type == "unsubscribe":
            payload = {"scope": "all", "campaign_id": ids["campaign_id"]}
        elif event_type == "email_click":
            payload = {**ids, "url": _text(item.get("url"), "")}
        event_id = f"sendgrid-{_text(item.get('sg_event_id'), '')}" if item.get("sg_event_id") else None
        mapped.append((consent.make_event(event_type, str(item["user_id"]), "esp", payload,
                                          occurred_at=_iso(item.get("timestamp")), event_id=event_id), reason))
    return mapped, ignored


PROVIDERS = {"generic": (_verify_generic, _generic_events), "sendgrid": (_verify_sendgrid, _sendgrid_events)}


@bp.post("/v1/webhooks/<provider>")
def receive(provider: str) -> ResponseReturnValue:
    secret = _secret(provider)
    body = body_bytes()
    verify, parse = PROVIDERS[provider]
    replay = _replay_key(provider, verify(secret, body), body)
    if _seen_before(replay):
        raise ApiError(409, "replayed", "this signed request was received before")
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "bad_json", "the body is not valid JSON") from None
    mapped, ignored = parse(document)
    if len(mapped) > MAX_EVENTS:
        raise ApiError(400, "bad_request", f"at most {MAX_EVENTS} events per request")
    for position, (event, _) in enumerate(mapped):
        if not isinstance(event["user_id"], str) or not _VALID_USER_ID.match(event["user_id"]):
            raise ApiError(400, "bad_user_id", f"event {position}: user_id is not a valid user id")
        problem = validate_event(event)
        if problem is not None:
            raise ApiError(400, "bad_event", f"event {position}: {problem.code}: {problem.message}")
    suppress = {event["user_id"]: reason for event, reason in mapped if reason is not None}
    if suppress:
        existing = consent.read_suppressions(list(suppress))
        for user_id, reason in suppress.items():
            before = existing.get(user_id, {}).get("reason")
            if before in GONE_REASONS:
                continue  # already gone (erased stays erased)
            consent.suppress(user_id, reason)
            consent.audit("suppressed_by_esp", user_id, f"esp:{provider}", before={"suppression": before},
                          after={"suppression": reason})
    consent.emit([event for event, _ in mapped])
    _remember(replay)
    return jsonify(accepted=len(mapped), ignored=ignored, suppressed=len(suppress))
