"""The population steps of gold.user_features on in-memory interactions: RFM quintile
breaks, the smoothed send hour across midnight, and its fallbacks."""

from __future__ import annotations

from datetime import datetime, timedelta

from chispa import assert_df_equality

from pipelines.config import load_config
from pipelines.features.segments import parse_rules
from pipelines.features.transforms import (
    feature_schema,
    one_row_per_event,
    score_against_population,
    user_behaviour,
)
from pipelines.schemas import INTERACTIONS, PRODUCTS

AS_OF = datetime(2026, 11, 20)
CONFIG = load_config("local", ["features.send_hour.min_opens=3", "features.send_hour.neighbour_weight=0.5",
                               "features.send_hour.default_hour=10"]).features
RULES = parse_rules({"segments": {"buyer": {"priority": 1, "all": [{"column": "frequency", "op": ">", "value": 0}]}}},
                    {"frequency": "bigint"})


def _interaction(number, user, kind, at, order_id=None, total=None, message_id=None):
    return (f"e-{number}", user, kind, at, at.date(), "web", None, None, None, None, None, None, order_id,
            None, total, False if kind == "purchase" else None, None, message_id, at)


def _features(spark, rows):
    interactions = spark.createDataFrame(rows, INTERACTIONS)
    users = interactions.select("user_id").distinct()
    stored = spark.createDataFrame([], feature_schema(CONFIG))
    touched = user_behaviour(CONFIG, AS_OF)(users, interactions, spark.createDataFrame([], PRODUCTS), stored)
    return score_against_population(CONFIG, RULES, AS_OF)(touched, stored)


def test_quintiles_split_five_buyers_one_each(spark):
    # Buyer k ordered k days ago for 10*k: fewer days and more money score higher.
    rows = [_interaction(k, f"u-{k}", "purchase", AS_OF - timedelta(days=k, hours=1), f"o-{k}", 10.0 * k)
            for k in range(1, 6)]
    actual = _features(spark, rows).select("user_id", "recency_days", "r_score", "f_score", "m_score", "rfm_cell")
    expected = spark.createDataFrame(
        [(f"u-{k}", k, 6 - k, 1, k, f"{6 - k}1{k}") for k in range(1, 6)], actual.schema)
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_send_hour_is_smoothed_across_midnight_and_falls_back_for_thin_histories(spark):
    opens = [(23, 2), (0, 2), (1, 1)]   # 23:00 scores 2 + 0.5*(0+2) = 3, 00:00 2 + 0.5*(2+1) = 3.5
    rows = []
    for hour, count in opens:
        for repeat in range(count):
            at = datetime(2026, 11, 10 + repeat, hour, 15)
            rows.append(_interaction(len(rows), "u-owl", "email_open", at, message_id=f"m-{len(rows)}"))
    rows.append(_interaction(99, "u-new", "email_open", datetime(2026, 11, 12, 9, 0), message_id="m-99"))
    rows.append(_interaction(100, "u-buyer", "purchase", datetime(2026, 11, 12, 9, 0), "o-1", 5.0))
    actual = _features(spark, rows).select("user_id", "primary_segment", "best_send_hour", "send_hour_source")
    expected = spark.createDataFrame([
        ("u-owl", "general", 0, "personal"),
        ("u-new", "general", 0, "segment"),      # one open; the general segment's six put midnight first
        ("u-buyer", "buyer", 0, "everyone"),     # the buyer segment opened nothing; everyone's peak
    ], actual.schema)
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_without_enough_opens_anywhere_the_default_hour_is_used(spark):
    rows = [_interaction(1, "u-quiet", "page_view", datetime(2026, 11, 12, 9, 0))]
    actual = _features(spark, rows).select("user_id", "best_send_hour", "send_hour_source")
    assert [tuple(row) for row in actual.collect()] == [("u-quiet", 10, "default")]


def test_one_row_per_event_keeps_the_first_ingested_copy(spark):
    schema = "event_id string, user_id string, occurred_at timestamp, ingested_at timestamp, note string"
    t = datetime(2026, 11, 20, 10)
    copies = spark.createDataFrame([
        ("e-1", "u-1", t, t + timedelta(minutes=5), "second"),
        ("e-1", "u-1", t, t, "first"),
        ("e-1", "u-2", t - timedelta(days=1), t + timedelta(minutes=1), "other content"),
        ("e-2", "u-1", t, t, "only"),
        ("e-3", "u-3", t + timedelta(hours=1), t, "same ingest, later event"),
        ("e-3", "u-3", t, t, "same ingest, earlier event"),
    ], schema)
    expected = spark.createDataFrame([
        ("e-1", "u-1", t, t, "first"),
        ("e-2", "u-1", t, t, "only"),
        ("e-3", "u-3", t, t, "same ingest, earlier event"),
    ], schema)
    assert_df_equality(one_row_per_event(copies.repartition(3)), expected, ignore_row_order=True)


def test_a_window_holds_what_is_later_than_its_start_to_the_microsecond(spark):
    """The 7- and 30-day windows start exactly that long before as_of, and are open there."""
    just = timedelta(microseconds=1)
    rows = [_interaction(1, "u-1", "page_view", AS_OF - timedelta(days=7)),           # on the 7-day edge: out
            _interaction(2, "u-1", "page_view", AS_OF - timedelta(days=7) + just),    # in both
            _interaction(3, "u-1", "add_to_cart", AS_OF - timedelta(days=30)),        # on the 30-day edge: out
            _interaction(4, "u-1", "add_to_cart", AS_OF - timedelta(days=30) + just),  # in the 30-day window
            _interaction(5, "u-1", "email_delivered", AS_OF - timedelta(days=30), message_id="m-1"),
            _interaction(6, "u-1", "email_delivered", AS_OF - timedelta(days=29), message_id="m-2"),
            _interaction(7, "u-1", "email_open", AS_OF - timedelta(days=1), message_id="m-1"),
            _interaction(8, "u-1", "email_click", AS_OF - timedelta(days=1), message_id="m-2")]
    actual = _features(spark, rows).select("user_id", "views_7d", "views_30d", "carts_7d", "carts_30d",
                                           "emails_delivered_30d", "open_rate_30d", "click_rate_30d")
    # m-1's delivery is on the rate window's edge: out, so only m-2 counts (opened by its click).
    expected = spark.createDataFrame([("u-1", 1, 2, 0, 1, 1, 1.0, 1.0)], actual.schema)
    assert_df_equality(actual, expected, ignore_nullable=True)
