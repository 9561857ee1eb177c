"""The event contract: the one definition of every event on the wire (DESIGN.md, "Contracts").

Each schema is JSON Schema (draft 2020-12), written once here. From it come:
- the Python validator producers and the API use (`pipelines.contracts.validate_event`);
- the Spark schemas the ingest job parses with (`pipelines.contracts.spark`);
- JSON files for producers in other languages (`tailor contract export`).

Bump CONTRACT_VERSION on any change; add a new schema_version for a type rather than
changing an existing one, since old producers keep sending the old shape. Readers are
tolerant: fields a schema does not name are carried along, not rejected.
"""

from __future__ import annotations

from typing import Any

CONTRACT_VERSION = "1.1.0"

CONSENT_PURPOSES = ("email_marketing", "personalization", "profiling")
SOURCES = ("web", "app", "crm", "esp", "preference_centre", "catalog", "backoffice", "replay")
DEBEZIUM_OPS = ("c", "u", "d", "r")
MAX_EVENT_BYTES = 256 * 1024
# occurred_at further ahead than this is a producer's clock or a typo, not an event.
MAX_FUTURE_SKEW_HOURS = 24
EARLIEST_OCCURRED_AT = "2000-01-01T00:00:00Z"

# ISO-8601 with a zone; the Python validator and the Spark expressions both use it.
OCCURRED_AT_PATTERN = (
    r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|z|[+-]\d{2}(:?\d{2})?)$"
)

# Quarantine error codes, in the order a record is checked; the first failure names it.
# A user id of only whitespace names nobody: it counts as missing. ASCII whitespace only,
# spelled out, and the end written as "nothing follows" (`$` differs between Python and
# Java before a final line break), so both regular expression engines agree on it.
BLANK_PATTERN = r"^[ \t\n\r\f\x0B]*(?![\s\S])"

ERROR_CODES = (
    "not_utf8",
    "oversized",
    "malformed_json",
    "missing_field",
    "wrong_type",
    "unknown_event_type",
    "unknown_schema_version",
    "bad_timestamp",
    "invalid_value",
)


def _string(min_length: int = 1, max_length: int = 512, **extra: Any) -> dict[str, Any]:
    return {"type": "string", "minLength": min_length, "maxLength": max_length, **extra}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {**schema, "type": [schema["type"], "null"]}


def _object(required: dict[str, Any], optional: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {**required, **(optional or {})},
        "required": sorted(required),
    }


_TIMESTAMP = {"type": "string", "format": "date-time"}
_MONEY = {"type": "number", "minimum": 0}
_CURRENCY = _string(3, 3, pattern="^[A-Z]{3}$")
_QUANTITY = {"type": "integer", "minimum": 1}
_HOUR = {"type": "integer", "minimum": 0, "maximum": 23}

_EMAIL_IDS = {"campaign_id": _string(), "message_id": _string()}
# The profile fields a person has, in the CRM and in first-party profile updates alike.
_PERSON = {
    "email": _nullable(_string(3, 320)),
    "first_name": _nullable(_string(0, 200)),
    "last_name": _nullable(_string(0, 200)),
    "phone": _nullable(_string(0, 40)),
    "country": _nullable(_string(0, 64)),
    "locale": _nullable(_string(2, 16)),
}

# What a CRM table's columns can be mapped to (`crm.tables.<table>.columns`).
PERSON_FIELDS = tuple(_PERSON)

PAYLOADS: dict[str, dict[int, dict[str, Any]]] = {
    "page_view": {
        1: _object({"url": _string(max_length=2048), "session_id": _string()},
                   {"referrer": _nullable(_string(0, 2048)), "device": _nullable(_string())}),
        2: _object({"url": _string(max_length=2048), "session_id": _string(),
                    "page_type": {"type": "string", "enum": ["home", "category", "product", "cart",
                                                          "checkout", "content", "other"]}},
                   {"referrer": _nullable(_string(0, 2048)), "device": _nullable(_string())}),
    },
    "product_view": {
        1: _object({"product_id": _string(), "session_id": _string()}, {"price": _nullable(_MONEY)}),
    },
    "add_to_cart": {
        1: _object({"product_id": _string(), "quantity": _QUANTITY, "unit_price": _MONEY,
                    "currency": _CURRENCY, "cart_id": _string(), "session_id": _string()}),
    },
    "remove_from_cart": {
        1: _object({"product_id": _string(), "quantity": _QUANTITY, "cart_id": _string(),
                    "session_id": _string()}),
    },
    "purchase": {
        1: _object({
            "order_id": _string(),
            "items": {"type": "array", "minItems": 1, "items": _object(
                {"product_id": _string(), "quantity": {"type": "integer"}, "unit_price": {"type": "number"}},
                {"title": _nullable(_string(0, 512))})},
            "total": {"type": "number"},
            "currency": _CURRENCY,
        }, {"cart_id": _nullable(_string()), "is_cancellation": {"type": "boolean"},
            "country": _nullable(_string())}),
    },
    "email_delivered": {1: _object(_EMAIL_IDS)},
    "email_open": {1: _object(_EMAIL_IDS, {"user_agent": _nullable(_string(0, 1024))})},
    "email_click": {1: _object({**_EMAIL_IDS, "url": _string(max_length=2048)},
                               {"product_id": _nullable(_string())})},
    "email_bounce": {1: _object({**_EMAIL_IDS, "bounce_type": {"type": "string", "enum": ["hard", "soft"]}})},
    "email_complaint": {1: _object(_EMAIL_IDS)},
    "unsubscribe": {1: _object({"scope": _string()}, {"campaign_id": _nullable(_string())})},
    "preference_update": {
        1: _object({}, {
            "topics": _nullable({"type": "array", "items": _string()}),
            "frequency_cap_per_week": _nullable({"type": "integer", "minimum": 0, "maximum": 100}),
            "language": _nullable(_string(2, 16)),
            "preferred_send_hour": _nullable(_HOUR),
        }),
    },
    "consent_update": {
        1: _object({"purpose": {"type": "string", "enum": list(CONSENT_PURPOSES)},
                    "status": {"type": "string", "enum": ["granted", "revoked"]}},
                   {"actor": _nullable(_string())}),
    },
    "erasure_request": {1: _object({"request_id": _string()}, {"actor": _nullable(_string())})},
    "profile_upsert": {1: _object({}, _PERSON)},
    "product_upsert": {
        1: _object({"product_id": _string(), "title": _string(max_length=512), "category": _string(),
                    "price": _MONEY, "currency": _CURRENCY},
                   {"image_url": _nullable(_string(0, 2048)), "url": _nullable(_string(0, 2048)),
                    "in_stock": {"type": "boolean"}, "active": {"type": "boolean"}}),
    },
}

# Behaviour that build_features keeps in silver.interactions: browsing, carts, orders and
# what happened to the emails a person was sent.
INTERACTION_EVENT_TYPES = ("page_view", "product_view", "add_to_cart", "remove_from_cart", "purchase",
                           "email_delivered", "email_open", "email_click", "email_bounce")

# Catalogue events describe products, not people.
EVENTS_WITHOUT_USER = frozenset({"product_upsert"})
EVENT_TYPES = tuple(PAYLOADS)

ENVELOPE: dict[str, Any] = _object(
    {
        "event_id": _string(max_length=128),
        "event_type": _string(max_length=64),
        "schema_version": {"type": "integer", "minimum": 1},
        "occurred_at": _TIMESTAMP,
        "source": _string(max_length=64),
        "payload": {"type": "object"},
    },
    # No minLength: an empty user_id is a blank one, a missing field for events about a
    # person (checked after the schema, as it depends on the event type), not a bad value.
    {"user_id": _nullable(_string(min_length=0, max_length=128))},
)

# A row of the CRM `customers` table as Debezium captures it.
CRM_CUSTOMER_ROW: dict[str, Any] = _object(
    {"user_id": _string(max_length=128)},
    {**_PERSON, "updated_at": _nullable({"type": "integer"})},
)

# A CRM change as bronze keeps it: Debezium's envelope with each row reduced to the user
# id and the profile fields `crm.tables` maps (pipelines.ingest.crm), and `position`, the
# change's place in its database's log as text that sorts in log order.
DEBEZIUM_CHANGE: dict[str, Any] = {
    "type": "object",
    "properties": {
        "before": {"anyOf": [CRM_CUSTOMER_ROW, {"type": "null"}]},
        "after": {"anyOf": [CRM_CUSTOMER_ROW, {"type": "null"}]},
        "op": {"type": "string", "enum": list(DEBEZIUM_OPS)},
        "ts_ms": {"type": "integer"},
        "position": {"type": ["string", "null"]},
        "source": {
            "type": "object",
            "properties": {
                "lsn": {"type": ["integer", "null"]},
                "ts_ms": {"type": "integer"},
                "db": {"type": "string"},
                "schema": {"type": "string"},
                "table": {"type": "string"},
                "connector": {"type": "string"},
                "name": {"type": "string"},
            },
            "required": ["ts_ms"],
        },
        "transaction": {"type": ["object", "null"]},
    },
    "required": ["op", "ts_ms", "source"],
}


def payload_schema(event_type: str, schema_version: int) -> dict[str, Any] | None:
    return PAYLOADS.get(event_type, {}).get(schema_version)


def envelope_schema() -> dict[str, Any]:
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **ENVELOPE}


def all_schemas() -> dict[str, dict[str, Any]]:
    """File name -> JSON Schema, for `tailor contract export`."""
    schemas = {"envelope.json": envelope_schema(), "crm_customer_change.json": DEBEZIUM_CHANGE}
    for event_type, versions in PAYLOADS.items():
        for version, schema in versions.items():
            schemas[f"{event_type}.v{version}.json"] = {
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "title": f"{event_type} payload v{version}",
                "x-contract-version": CONTRACT_VERSION,
                **schema,
            }
    return schemas
