import json
from datetime import UTC, datetime

import pytest

from pipelines.contracts import CONTRACT_VERSION, Problem, validate_event
from pipelines.contracts.events import ERROR_CODES, EVENT_TYPES, all_schemas
from tests.events import cart_event

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
CART = json.loads(cart_event())
_with = cart_event


def test_every_registered_type_from_design_is_there():
    design = {"page_view", "product_view", "add_to_cart", "remove_from_cart", "purchase",
              "email_delivered", "email_open", "email_click", "email_bounce", "email_complaint",
              "unsubscribe", "preference_update", "consent_update", "erasure_request", "profile_upsert"}
    assert design <= set(EVENT_TYPES)


def test_valid_event_passes():
    assert validate_event(json.dumps(CART), NOW) is None
    assert validate_event(json.dumps(CART).encode(), NOW) is None


def test_unknown_fields_are_tolerated():
    assert validate_event(_with(trace_id="abc", payload__note="x"), NOW) is None


@pytest.mark.parametrize("raw, code", [
    (b"\xff\xfe{}", "not_utf8"),
    (b"{" + b" " * (300 * 1024) + b"}", "oversized"),
    ('{"event_id": ', "malformed_json"),
    ("", "malformed_json"),
    ("[1, 2]", "malformed_json"),
    (_with(event_id=...), "missing_field"),
    (_with(user_id=...), "missing_field"),
    (_with(payload__quantity=...), "missing_field"),
    (_with(schema_version="1"), "wrong_type"),
    (_with(payload="not-an-object"), "wrong_type"),
    (_with(payload__quantity="2"), "wrong_type"),
    (_with(event_type="add_to_basket"), "unknown_event_type"),
    (_with(schema_version=99), "unknown_schema_version"),
    (_with(occurred_at="2026-11-27T08:00:00"), "bad_timestamp"),
    (_with(occurred_at="yesterday"), "bad_timestamp"),
    (_with(occurred_at="9999-12-31T00:00:00Z"), "bad_timestamp"),
    (_with(occurred_at="1970-01-01T00:00:00Z"), "bad_timestamp"),
    (_with(payload__currency="pounds"), "invalid_value"),
    (_with(payload__quantity=0), "invalid_value"),
])
def test_each_problem_gets_its_code(raw, code):
    problem = validate_event(raw, NOW)
    assert isinstance(problem, Problem)
    assert problem.code == code
    assert problem.code in ERROR_CODES


def test_messages_name_the_field_but_not_the_value():
    problem = validate_event(_with(payload__currency="ada@example.com"), NOW)
    assert "payload.currency" in problem.message
    assert "ada@example.com" not in problem.message
    assert validate_event(_with(payload__quantity=...), NOW).message == \
        "required field 'payload.quantity' is missing"


def test_catalogue_events_need_no_user():
    product = {"event_id": "p-1", "event_type": "product_upsert", "schema_version": 1,
               "occurred_at": "2026-11-27T08:00:00Z", "source": "catalog",
               "payload": {"product_id": "22423", "title": "Regency cakestand 3 tier",
                           "category": "kitchen", "price": 12.75, "currency": "GBP"}}
    assert validate_event(json.dumps(product), NOW) is None


def test_export_carries_the_contract_version():
    schemas = all_schemas()
    assert "envelope.json" in schemas and "add_to_cart.v1.json" in schemas
    assert schemas["page_view.v2.json"]["x-contract-version"] == CONTRACT_VERSION


def test_spark_schemas_come_from_the_same_definition():
    from pyspark.sql.types import ArrayType, BooleanType, DoubleType, LongType, StringType, StructField, StructType

    from pipelines.contracts.spark import payload_spark_schema

    expected = StructType([
        StructField("order_id", StringType()),
        StructField("items", ArrayType(StructType([
            StructField("product_id", StringType()), StructField("quantity", LongType()),
            StructField("unit_price", DoubleType()), StructField("title", StringType())]))),
        StructField("total", DoubleType()),
        StructField("currency", StringType()),
        StructField("cart_id", StringType()),
        StructField("is_cancellation", BooleanType()),
        StructField("country", StringType()),
    ])
    assert payload_spark_schema("purchase", 1) == expected
