"""The feed rules on hand-written JSON lines: what a good row becomes and why a bad one is
quarantined, written down by hand."""

from __future__ import annotations

import json
from datetime import datetime

from chispa import assert_df_equality

from pipelines.catalog.transforms import from_json_lines, latest_per_product, renamed_fields, validate_products

LOADED_AT = datetime(2026, 11, 28, 6, 0)
GOOD = {"product_id": "p1", "title": "Cake stand", "category": "kitchen", "price": 12.5, "currency": "GBP",
        "url": "https://shop.example.com/p1", "image_url": "https://cdn.example.com/p1.jpg"}
LINES = [
    # The generator's and the replay's files: product_upsert events, occurred_at standing in.
    json.dumps({"event_id": "e1", "event_type": "product_upsert", "schema_version": 1, "user_id": None,
                "occurred_at": "2026-11-01T09:00:00Z", "source": "catalog",
                "payload": {**GOOD, "product_id": "p2", "in_stock": False}}),
    # Google's feed style: the currency after the price, "out of stock".
    json.dumps({**GOOD, "product_id": "p3", "price": "7.00 eur", "currency": None, "in_stock": "out of stock",
                "updated_at": "2026-11-20T10:00:00Z"}),
    json.dumps({**GOOD, "active": "no"}),
    "{not json",
    json.dumps({**GOOD, "product_id": "p4", "title": "  "}),
    json.dumps({**GOOD, "product_id": "p5", "price": "twelve"}),
    json.dumps({**GOOD, "product_id": "p6", "price": -1}),
    json.dumps({**GOOD, "product_id": "p7", "url": "javascript:alert(1)"}),
    json.dumps({**GOOD, "product_id": "p8", "currency": "pounds"}),
    json.dumps({**GOOD, "product_id": "p9", "in_stock": "maybe"}),
    json.dumps({**GOOD, "product_id": "p10", "updated_at": "last tuesday"}),
    json.dumps({**GOOD, "product_id": "p11", "category": None}),
    json.dumps(["p12"]),
    # The same key twice: which price was meant? Quarantined, not a failed load.
    '{"product_id": "p13", "title": "Mug", "category": "kitchen", "price": 1, "price": 2, "currency": "GBP"}',
    json.dumps({"event_id": "e14", "event_type": "product_upsert", "occurred_at": "2026-11-01T09:00:00Z",
                "payload": "PAYLOAD"}).replace(
        '"PAYLOAD"', '{"product_id": "p14", "title": "Mug", "title": "Cup", "category": "kitchen", '
                     '"price": 1, "currency": "GBP"}'),
    # A spreadsheet's number; a clock a week fast.
    json.dumps({**GOOD, "product_id": "p15", "price": "1.25E1"}),
    json.dumps({**GOOD, "product_id": "p16", "updated_at": "2026-12-05T00:00:00Z"}),
]
COLUMNS = ("product_id string, price double, currency string, in_stock boolean, active boolean, "
           "updated_at timestamp, error_code string, error_message string")


def _checked(spark, lines):
    frame = spark.createDataFrame([(line, "feed.jsonl") for line in lines], "raw string, source_partition string")
    return validate_products(from_json_lines(frame), LOADED_AT)


def test_each_row_is_typed_or_quarantined_with_the_field_that_failed(spark):
    actual = _checked(spark, LINES).select(*[column.split()[0] for column in COLUMNS.split(", ")])
    expected = spark.createDataFrame([
        ("p2", 12.5, "GBP", False, True, datetime(2026, 11, 1, 9, 0), None, None),
        ("p3", 7.0, "EUR", False, True, datetime(2026, 11, 20, 10, 0), None, None),
        ("p1", 12.5, "GBP", None, False, LOADED_AT, None, None),
        (None, None, None, None, True, LOADED_AT, "malformed_json", "not a JSON object, or not the header's columns"),
        ("p4", 12.5, "GBP", None, True, LOADED_AT, "missing_field", "title is missing"),
        ("p5", None, "GBP", None, True, LOADED_AT, "wrong_type", "price: 'twelve' is not a number"),
        ("p6", -1.0, "GBP", None, True, LOADED_AT, "invalid_value", "price: '-1' is negative"),
        ("p7", 12.5, "GBP", None, True, LOADED_AT, "invalid_value",
         "url: 'javascript:alert(1)' is not an http(s) URL"),
        ("p8", 12.5, "POUNDS", None, True, LOADED_AT, "invalid_value", "currency: 'pounds' is not an ISO 4217 code"),
        ("p9", 12.5, "GBP", None, True, LOADED_AT, "wrong_type", "in_stock: 'maybe' is not yes or no"),
        ("p10", 12.5, "GBP", None, True, LOADED_AT, "wrong_type", "updated_at: 'last tuesday' is not a timestamp"),
        ("p11", 12.5, "GBP", None, True, LOADED_AT, "missing_field", "category is missing"),
        (None, None, None, None, True, LOADED_AT, "malformed_json", "not a JSON object, or not the header's columns"),
        (None, None, None, None, True, LOADED_AT, "malformed_json", "a key appears twice in the JSON object"),
        (None, None, None, None, True, LOADED_AT, "malformed_json", "a key appears twice in the JSON object"),
        ("p15", 12.5, "GBP", None, True, LOADED_AT, None, None),
        ("p16", 12.5, "GBP", None, True, datetime(2026, 12, 5), "invalid_value",
         "updated_at: '2026-12-05T00:00:00Z' is more than a day after the load"),
    ], COLUMNS)
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_the_latest_row_of_a_product_wins_and_ties_are_settled_the_same_way_every_time(spark):
    lines = [json.dumps({**GOOD, "price": price, "updated_at": at}) for price, at in
             ((1.0, "2026-11-01T00:00:00Z"), (3.0, "2026-11-03T00:00:00Z"), (2.0, "2026-11-02T00:00:00Z"))]
    tied = [json.dumps({**GOOD, "product_id": "p2", "price": price, "updated_at": "2026-11-01T00:00:00Z"})
            for price in (5.0, 4.0)]
    checked = _checked(spark, lines + tied)
    latest = {row.product_id: row.price for row in latest_per_product(checked).collect()}
    # Equal times: the larger raw text, which names price 5.0.
    assert latest == {"p1": 3.0, "p2": 5.0}
    reversed_order = _checked(spark, list(reversed(lines + tied))).repartition(3)
    assert {row.product_id: row.price for row in latest_per_product(reversed_order).collect()} == latest


def test_a_feed_with_its_own_names_is_read_through_the_column_map(spark):
    line = json.dumps({"id": "p1", "name": "Cake stand", "title": "ignored", "category": "kitchen",
                       "price": "3.5", "currency": "GBP"})
    frame = spark.createDataFrame([(line, "feed.jsonl")], "raw string, source_partition string")
    renamed = from_json_lines(frame).transform(renamed_fields({"product_id": "id", "title": "name"}))
    row = validate_products(renamed, LOADED_AT).first()
    assert (row.product_id, row.title, row.price, row.error_code) == ("p1", "Cake stand", 3.5, None)


def test_a_swap_of_two_column_names_keeps_both(spark):
    line = json.dumps({"product_id": "p1", "title": "kitchen", "category": "Cake stand", "price": "3.5",
                       "currency": "GBP"})
    frame = spark.createDataFrame([(line, "feed.jsonl")], "raw string, source_partition string")
    renamed = from_json_lines(frame).transform(renamed_fields({"title": "category", "category": "title"}))
    row = validate_products(renamed, LOADED_AT).first()
    assert (row.title, row.category, row.error_code) == ("Cake stand", "kitchen", None)
