"""The OpenAPI 3.1 description of the API, built from the live config (the key header,
the batch limit, the topics), served at /openapi.json. tests/api/test_openapi.py runs
schemathesis against it, so it says what the code does."""

from __future__ import annotations

from typing import Any

from api.rows import GONE_REASONS
from api.validation import USER_ID_PATTERN
from pipelines.config import Config
from pipelines.contracts.events import CONTRACT_VERSION

JSON = "application/json"
FALLBACK_REASONS = ["unknown_user", "no_consent", "cold_start", "holdout", "stale", "store_unavailable"]
CIRCUIT_STATES = ["closed", "open", "half_open"]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": description, "content": {JSON: {"schema": schema}}}
    if headers:
        answer["headers"] = headers
    return answer


def _error(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    return _json(_ref("Error"), description, headers)


def _html(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"text/html": {"schema": {"type": "string"}}}}


RETRY_AFTER = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "string", "pattern": "^[0-9]+$"}}}
_NULLABLE_STRING = {"type": ["string", "null"]}
_PRICE = {"type": ["object", "null"], "properties": {"amount": {"type": ["number", "null"]},
                                                      "currency": _NULLABLE_STRING}}


def _keyed(errors: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The answers every keyed endpoint may give, besides its own."""
    return {"401": _error("no API key, or an unknown one"), "403": _error("the key lacks the scope"),
            "429": _error("over the key's rate limit", RETRY_AFTER), **errors}


def _user_id() -> dict[str, Any]:
    return {"name": "user_id", "in": "path", "required": True,
            "schema": {"type": "string", "pattern": USER_ID_PATTERN}}


def _token() -> dict[str, Any]:
    return {"name": "token", "in": "path", "required": True,
            "schema": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,512}$"},
            "description": "the signed link token from an email"}


def document(config: Config) -> dict[str, Any]:
    api = config.api
    keyed: list[dict[str, list[str]]] = [{"apiKey": []}, {"bearer": []}]
    content_row = {
        "type": "object",
        "required": ["user_id", "content_version", "fallback"],
        "properties": {
            "user_id": {"type": "string"}, "content_version": {"type": "string"},
            "generated_at": _NULLABLE_STRING,
            "model": {"type": ["object", "null"], "properties": {"name": _NULLABLE_STRING,
                                                                  "version": _NULLABLE_STRING}},
            "fallback": {"type": ["string", "null"], "enum": [*FALLBACK_REASONS, None],
                         "description": "null: personal content; else why the row is not personal"},
            "locale": _NULLABLE_STRING,
            "greeting": {"type": ["object", "null"], "properties": {"first_name": _NULLABLE_STRING,
                                                                     "text": _NULLABLE_STRING}},
            "segment": _NULLABLE_STRING, "send_hour_utc": {"type": ["integer", "null"], "minimum": 0, "maximum": 23},
            "hero": {"type": ["object", "null"], "properties": {"offer_id": _NULLABLE_STRING,
                                                                 "headline": _NULLABLE_STRING,
                                                                 "url": _NULLABLE_STRING}},
            "products": {"type": ["array", "null"], "items": {"type": "object", "properties": {
                "product_id": _NULLABLE_STRING, "title": _NULLABLE_STRING, "price": _PRICE,
                "image_url": _NULLABLE_STRING, "url": _NULLABLE_STRING, "reason": _NULLABLE_STRING}}},
            "cart": {"type": ["array", "null"], "items": {"type": "object"}},
        },
    }
    preferences_state = {
        "type": "object", "required": ["user_id", "subscribed", "topics", "frequency_cap_per_week"],
        "properties": {"user_id": {"type": "string"}, "subscribed": {"type": "boolean"},
                       "topics": {"type": "array", "items": {"type": "string", "enum": list(api.preference_topics)}},
                       "frequency_cap_per_week": {"type": ["integer", "null"], "minimum": 0, "maximum": 100}}}
    preferences_change = {
        "type": "object", "additionalProperties": False,
        "properties": {"subscribed": {"type": "boolean"},
                       "topics": {"type": "array", "items": {"type": "string", "enum": list(api.preference_topics)}},
                       "frequency_cap_per_week": {"type": ["integer", "null"], "minimum": 0, "maximum": 100}}}
    token_errors = {"400": _error("a bad change"), "403": _error("invalid_token or token_expired"),
                    "429": _error("over the per-address limit", RETRY_AFTER),
                    "503": _error("the store or the events source is unavailable; retry", RETRY_AFTER)}
    # Every operation with a body: over api.max_body_bytes, or chunked where the server cannot find its end.
    body_errors = {"411": _error("a chunked body the server cannot read to its end: send a Content-Length"),
                   "413": _error(f"body over {api.max_body_bytes} bytes")}
    paths: dict[str, Any] = {
        "/healthz": {"get": {"summary": "the process answers", "responses": {
            "200": _json({"type": "object", "required": ["status"], "properties": {
                "status": {"const": "ok"}, "contract_version": {"type": "string"}}}, "alive")}}},
        "/readyz": {"get": {"summary": "the serving store answers", "responses": {
            "200": _json(_ref("Readiness"), "ready, or degraded: reads serve, changes may be refused"),
            "503": _json(_ref("Readiness"), "the store is unreachable")}}},
        "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {
            "description": "text exposition format", "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
        "/openapi.json": {"get": {"summary": "this document", "responses": {"200": _json({"type": "object"},
                                                                                          "OpenAPI 3.1")}}},
        "/docs": {"get": {"summary": "this document as a page", "responses": {"200": _html("the API reference")}}},
        "/v1/content/{user_id}": {"get": {
            "summary": "one person's content row, or a fallback row with its reason",
            "security": keyed, "description": "Scope content:read. Never 5xx: a store outage gives fallback content "
            "with store_unavailable.",
            "parameters": [_user_id(),
                           {"name": "strict", "in": "query", "schema": {"type": "boolean"},
                            "description": "true: an unknown user is 404 instead of the global default"},
                           {"name": "If-None-Match", "in": "header", "schema": {"type": "string"}}],
            "responses": _keyed({
                "200": _json(_ref("ContentRow"), "the row", {
                    "ETag": {"description": "the content_version (with the fallback reason)",
                             "schema": {"type": "string"}},
                    "Cache-Control": {"schema": {"type": "string"}}}),
                "304": {"description": "unchanged since the ETag given"},
                "400": _error("a bad user id or parameter"),
                "404": _error("unknown user (strict=true only)"),
                "410": _json(_ref("Gone"), "do not send: unsubscribed, erased, complained or hard-bounced"),
            })}},
        "/v1/content:batchGet": {"post": {
            "summary": f"up to {api.max_batch_ids} rows in one call", "security": keyed,
            "requestBody": {"required": True, "content": {JSON: {"schema": {
                "type": "object", "required": ["user_ids"], "additionalProperties": False,
                "properties": {"user_ids": {"type": "array", "minItems": 1, "maxItems": api.max_batch_ids,
                                            "items": {"type": "string", "pattern": USER_ID_PATTERN}},
                               "strict": {"type": "boolean"}}}}}},
            "responses": _keyed({
                "200": _json({"type": "object", "required": ["rows", "gone", "not_found"], "properties": {
                    "rows": {"type": "array", "items": _ref("ContentRow")},
                    "gone": {"type": "array", "items": {"type": "object", "required": ["user_id", "reason"],
                                                        "properties": {"user_id": {"type": "string"},
                                                                       "reason": {"type": "string"}}}},
                    "not_found": {"type": "array", "items": {"type": "string"}}}}, "rows in the order asked"),
                "400": _error("bad JSON, bad ids, or more than the batch limit"),
                **body_errors, "415": _error("not JSON")})}},
        "/v1/users/{user_id}/traits": {"get": {
            "summary": "segments and features, no PII", "security": keyed, "parameters": [_user_id()],
            "responses": _keyed({"200": _json(_ref("Traits"), "the traits"), "400": _error("a bad user id"),
                                 "404": _error("no traits for this user"),
                                 "503": _error("store unavailable", RETRY_AFTER)})}},
        "/v1/users/{user_id}": {"delete": {
            "summary": "erasure: suppressed at once; the next publish removes the rows", "security": keyed,
            "parameters": [_user_id()],
            "responses": _keyed({"202": _json({"type": "object", "required": ["user_id", "request_id", "status"],
                                               "properties": {"user_id": {"type": "string"},
                                                              "request_id": {"type": "string"},
                                                              "status": {"const": "erasure_requested"}}},
                                              "erasure requested"),
                                 "400": _error("a bad user id"),
                                 "503": _error("store or events source unavailable", RETRY_AFTER)})}},
        "/v1/preview/{user_id}": {"get": {
            "summary": "the row rendered into a sample email", "security": keyed, "parameters": [_user_id()],
            "responses": _keyed({"200": _html("a sample email"), "400": _error("a bad user id"),
                                 "410": _error("no email for this person")})}},
        "/v1/users/{user_id}/preference-link": {"get": {
            "summary": "signed links for an email: the preference page and one-click unsubscribe",
            "security": keyed, "parameters": [_user_id()],
            "responses": _keyed({"200": _json({"type": "object", "required": ["token", "preferences_url",
                                                                               "unsubscribe_url"],
                                               "properties": {"user_id": {"type": "string"},
                                                              "token": {"type": "string"},
                                                              "preferences_url": {"type": "string"},
                                                              "unsubscribe_url": {"type": "string"}}}, "links"),
                                 "400": _error("a bad user id"),
                                 "503": _error("links are not configured", RETRY_AFTER)})}},
        "/v1/preferences/{token}": {
            "get": {"summary": "a subscriber's choices", "parameters": [_token()],
                    "responses": {"200": _json(preferences_state, "the choices"), **token_errors}},
            "put": {"summary": "change them", "parameters": [_token()],
                    "requestBody": {"required": True, "content": {JSON: {"schema": preferences_change}}},
                    "responses": {"200": _json(preferences_state, "the new choices"),
                                  **body_errors, "415": _error("not JSON"), **token_errors}}},
        "/v1/unsubscribe/{token}": {"post": {
            "summary": "RFC 8058 one-click unsubscribe (the List-Unsubscribe URI)", "parameters": [_token()],
            "requestBody": {"required": True, "content": {media: {"schema": {
                "type": "object", "required": ["List-Unsubscribe"],
                "properties": {"List-Unsubscribe": {"const": "One-Click"}}}}
                for media in ("application/x-www-form-urlencoded", "multipart/form-data")}},
            "responses": {"200": _json({"type": "object", "properties": {"user_id": {"type": "string"},
                                                                         "subscribed": {"const": False}}},
                                       "unsubscribed"), **body_errors, **token_errors}}},
        "/preferences/{token}": {
            "get": {"summary": "the preference centre page", "parameters": [_token()],
                    "responses": {"200": _html("the page"), "403": _html("an invalid or expired link"),
                                  "429": _error("over the per-address limit", RETRY_AFTER),
                                  "503": _error("store or events source unavailable", RETRY_AFTER)}},
            "post": {"summary": "the page's form", "parameters": [_token()],
                     "requestBody": {"content": {"application/x-www-form-urlencoded": {"schema": {
                         "type": "object", "properties": {
                             "subscribed": {"enum": ["yes", "no"]},
                             "topics": {"type": "array", "items": {"type": "string"}},
                             "frequency": {"type": "string"}}}}}},
                     "responses": {"200": _html("the page, saved"), "403": _html("an invalid or expired link"),
                                   **body_errors,
                                   "429": _error("over the per-address limit", RETRY_AFTER),
                                   "503": _error("store or events source unavailable", RETRY_AFTER)}}},
        "/v1/webhooks/{provider}": {"post": {
            "summary": "ESP events (bounces, complaints, unsubscribes, opens, clicks), signed",
            "description": "generic: X-Tailor-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of '<t>.<body>'>, body "
                           "{\"events\": [...]}. sendgrid: SendGrid's signed Event Webhook (ECDSA). Older than "
                           f"{api.webhook_tolerance_s} s, or seen before: refused.",
            "parameters": [{"name": "provider", "in": "path", "required": True,
                            "schema": {"enum": sorted(api.webhook_secrets)}}],
            "requestBody": {"required": True, "content": {JSON: {"schema": {}}}},
            "responses": {"200": _json({"type": "object", "required": ["accepted", "ignored", "suppressed"],
                                        "properties": {"accepted": {"type": "integer"},
                                                       "ignored": {"type": "integer"},
                                                       "suppressed": {"type": "integer"}}}, "events taken"),
                          "400": _error("bad JSON or a bad event"),
                          "401": _error("bad_signature or stale_webhook"), "404": _error("unknown provider"),
                          "409": _error("replayed: this signed request was received before"),
                          **body_errors,
                          "429": _error("over the per-address limit", RETRY_AFTER),
                          "503": _error("not configured, or the store or events source is unavailable",
                                        RETRY_AFTER)}}},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "Tailor content API", "version": CONTRACT_VERSION,
                 "description": "Content rows for an email tool at send time, consent honoured at read time. "
                                "Every error is JSON: {\"error\": code, \"message\": text}."},
        "paths": paths,
        "components": {
            "securitySchemes": {"apiKey": {"type": "apiKey", "in": "header", "name": api.key_header},
                                "bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {"type": "object", "required": ["error", "message"],
                          "properties": {"error": {"type": "string"}, "message": {"type": "string"}}},
                "Gone": {"type": "object", "required": ["error", "message", "reason", "user_id"], "properties": {
                    "error": {"const": "gone"}, "message": {"type": "string"},
                    "reason": {"type": "string", "enum": sorted(GONE_REASONS)}, "user_id": {"type": "string"}}},
                "Readiness": {"type": "object", "required": ["status", "store", "circuit", "consent_circuit"],
                              "properties": {
                                  "status": {"enum": ["ready", "degraded", "unavailable"],
                                             "description": "degraded: reads serve, but consent_circuit is not closed"},
                                  "store": {"type": "string"},
                                  "circuit": {"enum": CIRCUIT_STATES, "description": "the read lane's breaker"},
                                  "consent_circuit": {"enum": CIRCUIT_STATES,
                                                      "description": "the consent lane's breaker"}}},
                "ContentRow": content_row,
                "Traits": {"type": "object", "required": ["user_id"], "properties": {
                    "user_id": {"type": "string"},
                    "segments": {"type": ["array", "null"], "items": {"type": "string"}},
                    "primary_segment": _NULLABLE_STRING, "lifecycle_stage": _NULLABLE_STRING,
                    "rfm_cell": _NULLABLE_STRING, "engagement_score": {"type": ["number", "null"]},
                    "best_send_hour": {"type": ["integer", "null"]}, "cart_state": _NULLABLE_STRING,
                    "cart_value": {"type": ["number", "null"]},
                    "top_categories": {"type": ["array", "null"], "items": {"type": "string"}},
                    "in_holdout": {"type": ["boolean", "null"]}, "features_as_of": _NULLABLE_STRING,
                    "content_version": _NULLABLE_STRING, "generated_at": _NULLABLE_STRING}},
            },
        },
    }
