"""build_features as a job over bronze.events: features written down by hand for a small
history with late, redelivered and out-of-order events, an erased person's straggler,
window ageing with no new events, and an idempotent rerun of a batch."""

from __future__ import annotations

import logging
import random
from datetime import UTC, datetime

import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F

from jobs import build_features
from pipelines.config import load_config
from pipelines.features import writes as feature_writes
from pipelines.features.transforms import interaction_rows
from pipelines.features.writes import FeaturesBatchWriter, load_feature_rules
from pipelines.ingest.writes import ensure_bronze_tables
from pipelines.pii import load_keys, subject_hash
from pipelines.profiles.writes import ensure_profile_tables
from pipelines.runtime.delta_tables import read_table, save, sql_name
from pipelines.runtime.streaming import checkpoint_app_id
from pipelines.schemas import PRODUCTS, PROFILE_TOMBSTONES
from tests.profile_events import event, to_bronze
from tests.settings import SPARK_TEST_SETTINGS

AS_OF = datetime(2026, 11, 20, tzinfo=UTC)
SETTINGS = [
    "features.lookback_days=90", "features.windows_days=[7, 30]",
    "features.rate_window_days=30", "features.top_categories=2", "features.category_window_days=30",
    "features.category_weights={product_view: 1, add_to_cart: 3, purchase: 5}",
    "features.abandoned_cart_hours=24",
    "features.engagement.window_days=30", "features.engagement.half_life_days=7",
    "features.engagement.weights={page_view: 1, product_view: 1, add_to_cart: 2, purchase: 4, "
    "email_open: 1, email_click: 2}",
    "features.send_hour.window_days=30", "features.send_hour.min_opens=3", "features.send_hour.neighbour_weight=0.5",
    "features.send_hour.default_hour=10",
    "features.lifecycle.new_days=7", "features.lifecycle.active_days=30", "features.lifecycle.at_risk_days=60",
]
ENGAGEMENT = {"page_view": 1, "product_view": 1, "add_to_cart": 2, "purchase": 4, "email_open": 1, "email_click": 2}


def _e(event_type: str, user: str, at: str, payload: dict, event_id: str) -> dict:
    return event(event_type, user, at, payload, event_id, source="web")


def _view(user, at, product, event_id):
    return _e("product_view", user, at, {"product_id": product, "session_id": "s"}, event_id)


def _page(user, at, event_id):
    return _e("page_view", user, at, {"url": "https://shop.example.com/", "session_id": "s"}, event_id)


def _cart(kind, user, at, product, quantity, event_id, price=None):
    payload = {"product_id": product, "quantity": quantity, "cart_id": "c", "session_id": "s"}
    if kind == "add_to_cart":
        payload.update(unit_price=price, currency="GBP")
    return _e(kind, user, at, payload, event_id)


def _order(user, at, order_id, items, event_id):
    lines = [{"product_id": p, "quantity": q, "unit_price": u} for p, q, u in items]
    return _e("purchase", user, at, {"order_id": order_id, "items": lines, "currency": "GBP",
                                     "total": round(sum(q * u for _, q, u in items), 2)}, event_id)


def _mail(kind, user, at, message, event_id):
    payload = {"campaign_id": "camp", "message_id": message}
    if kind == "email_click":
        payload["url"] = "https://shop.example.com/sale"
    return _e(kind, user, at, payload, event_id)


ANN_O1 = _order("u-ann", "2026-11-18T10:10:00Z", "o-1", [("P1", 2, 5.0)], "ann-o1")
BEN_ADD = _cart("add_to_cart", "u-ben", "2026-11-17T12:00:00Z", "P3", 1, "ben-add-p3", 8.0)
FIRST_BATCH = [
    _view("u-ann", "2026-11-18T10:00:00Z", "P1", "ann-v1"),
    _view("u-ann", "2026-11-05T10:00:00Z", "P2", "ann-v2"),
    _cart("add_to_cart", "u-ann", "2026-11-18T10:05:00Z", "P1", 2, "ann-add", 5.0),
    ANN_O1, ANN_O1,                                              # a redelivery in the same batch
    _order("u-ann", "2026-11-01T09:00:00Z", "o-2", [("P2", 1, 20.0)], "ann-o2"),
    _mail("email_delivered", "u-ann", "2026-11-10T08:00:00Z", "m-1", "ann-d1"),
    _mail("email_open", "u-ann", "2026-11-10T19:30:00Z", "m-1", "ann-open1"),
    _mail("email_open", "u-ann", "2026-11-11T19:10:00Z", "m-1", "ann-open2"),
    _mail("email_delivered", "u-ann", "2026-11-15T08:00:00Z", "m-2", "ann-d2"),
    _mail("email_click", "u-ann", "2026-11-15T20:05:00Z", "m-2", "ann-click"),
    _page("u-ben", "2026-11-16T09:00:00Z", "ben-p1"),
    _page("u-ben", "2026-11-17T11:55:00Z", "ben-p2"),
    BEN_ADD,
    _cart("add_to_cart", "u-ben", "2026-11-17T12:05:00Z", "P4", 1, "ben-add-p4", 4.0),
    _cart("remove_from_cart", "u-ben", "2026-11-17T12:10:00Z", "P4", 1, "ben-remove-p4"),
    _mail("email_delivered", "u-ben", "2026-11-14T08:00:00Z", "m-5", "ben-d"),
    _mail("email_open", "u-ben", "2026-11-14T08:30:00Z", "m-5", "ben-open"),
    _order("u-cy", "2026-10-06T12:00:00Z", "o-3", [("P2", 2, 25.0)], "cy-o3"),
    _page("u-cy", "2026-11-19T08:00:00Z", "cy-p1"),
    # Dee was erased on 2026-11-12: this order happened before, reached bronze after.
    _order("u-dee", "2026-11-10T10:00:00Z", "o-8", [("P1", 1, 99.0)], "dee-straggler"),
    _page("u-dee", "2026-11-18T11:00:00Z", "dee-p1"),
    _order("u-dee", "2026-11-18T12:00:00Z", "o-9", [("P1", 3, 5.0)], "dee-o9"),
]
SECOND_BATCH = [
    BEN_ADD,                                                      # redelivered a batch later
    _mail("email_open", "u-ann", "2026-11-16T20:40:00Z", "m-2", "ann-open3"),   # late by 3 days
    _page("u-cy", "2026-11-02T10:00:00Z", "cy-late"),            # 17 days behind the newest event
]
DEE_ERASED_AT = "2026-11-12T00:00:00Z"


def _ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).replace(tzinfo=None)


def _points(*events: tuple[str, str]) -> float:
    """Engagement by hand: weight x 0.5^(age in days / 7) for (type, time) pairs."""
    total = 0.0
    for kind, at in events:
        age_days = (AS_OF.replace(tzinfo=None) - _ts(at)).total_seconds() / 86400
        total += ENGAGEMENT[kind] * 0.5 ** (age_days / 7)
    return round(total, 4)


HOURS_ANN = [2 if hour == 19 else 1 if hour == 20 else 0 for hour in range(24)]
HOURS_BEN = [1 if hour == 8 else 0 for hour in range(24)]
NO_HOURS = [0] * 24
# user, first_seen, last_seen, days_first, days_last, first_purchase, last_purchase, recency, frequency, monetary,
# r, f, m, views 7/30, carts 7/30, purchases 7/30, revenue 7/30, top categories, delivered, open rate, click rate,
# engagement, cart state, cart items, cart value, cart updated, open hours, stage, segments, primary, hour, source
EXPECTED = [
    ("u-ann", "2026-11-01T09:00:00Z", "2026-11-18T10:10:00Z", 18, 1, "2026-11-01T09:00:00Z", "2026-11-18T10:10:00Z",
     1, 2, 30.0, 5, 4, 2, 1, 2, 1, 1, 1, 2, 10.0, 30.0, ["kitchen", "garden"], 2, 1.0, 0.5,
     _points(("product_view", "2026-11-18T10:00:00Z"), ("product_view", "2026-11-05T10:00:00Z"),
             ("add_to_cart", "2026-11-18T10:05:00Z"), ("purchase", "2026-11-18T10:10:00Z"),
             ("purchase", "2026-11-01T09:00:00Z"), ("email_open", "2026-11-10T19:30:00Z"),
             ("email_open", "2026-11-11T19:10:00Z"), ("email_click", "2026-11-15T20:05:00Z"),
             ("email_open", "2026-11-16T20:40:00Z")),
     "empty", [], 0.0, None, HOURS_ANN, "active", [], "general", 19, "personal"),
    ("u-ben", "2026-11-14T08:30:00Z", "2026-11-17T12:10:00Z", 5, 2, None, None,
     None, 0, 0.0, None, None, None, 2, 2, 2, 2, 0, 0, 0.0, 0.0, ["toys"], 1, 1.0, 0.0,
     _points(("page_view", "2026-11-16T09:00:00Z"), ("page_view", "2026-11-17T11:55:00Z"),
             ("add_to_cart", "2026-11-17T12:00:00Z"), ("add_to_cart", "2026-11-17T12:05:00Z"),
             ("email_open", "2026-11-14T08:30:00Z")),
     "abandoned", [("P3", 1, 8.0, "GBP", _ts("2026-11-17T12:00:00Z"))], 8.0, "2026-11-17T12:10:00Z", HOURS_BEN,
     "prospect", ["cart_abandoner", "new_subscriber"], "cart_abandoner", 19, "everyone"),
    ("u-cy", "2026-10-06T12:00:00Z", "2026-11-19T08:00:00Z", 44, 0, "2026-10-06T12:00:00Z", "2026-10-06T12:00:00Z",
     # The page view 17 days late counts: a second view in 30 days, and its engagement.
     44, 1, 50.0, 2, 1, 4, 1, 2, 0, 0, 0, 0, 0.0, 0.0, [], 0, None, None,
     _points(("page_view", "2026-11-19T08:00:00Z"), ("page_view", "2026-11-02T10:00:00Z")),
     "empty", [], 0.0, None, NO_HOURS, "at_risk", ["at_risk"], "at_risk", 19, "everyone"),
    ("u-dee", "2026-11-18T11:00:00Z", "2026-11-18T12:00:00Z", 1, 1, "2026-11-18T12:00:00Z", "2026-11-18T12:00:00Z",
     1, 1, 15.0, 5, 1, 1, 1, 1, 0, 0, 1, 1, 15.0, 15.0, ["kitchen"], 0, None, None,
     _points(("page_view", "2026-11-18T11:00:00Z"), ("purchase", "2026-11-18T12:00:00Z")),
     # Dee's row was written in the first batch, when her segment (with Ann) had only two
     # opens; the second batch touched only Ann, so Dee keeps the hour of everyone until
     # the refresh (below) recomputes her.
     "empty", [], 0.0, None, NO_HOURS, "new", [], "general", 19, "everyone"),
]
COLUMNS = ("user_id", "first_seen_at", "last_seen_at", "days_since_first_seen", "days_since_last_seen",
           "first_purchase_at", "last_purchase_at", "recency_days", "frequency", "monetary", "r_score", "f_score",
           "m_score", "views_7d", "views_30d", "carts_7d", "carts_30d", "purchases_7d", "purchases_30d",
           "revenue_7d", "revenue_30d", "top_categories", "emails_delivered_30d", "open_rate_30d", "click_rate_30d",
           "engagement_score", "cart_state", "cart_items", "cart_value", "cart_updated_at", "open_hour_counts",
           "lifecycle_stage", "segments", "primary_segment", "best_send_hour", "send_hour_source")
TIME_COLUMNS = {1, 2, 5, 6, 29}


def _expected_rows():
    return [tuple(_ts(value) if index in TIME_COLUMNS and value else value for index, value in enumerate(row))
            for row in EXPECTED]


def _shuffled(records, seed):
    records = list(records)
    random.Random(seed).shuffle(records)
    return records


@pytest.fixture(scope="module")
def world(spark, tmp_path_factory):
    """Two runs of the job over two bronze appends; the tables as they stand after them."""
    root = tmp_path_factory.mktemp("features")
    overrides = [f"storage.root={root}", *SPARK_TEST_SETTINGS, *SETTINGS]
    config = load_config("local", overrides)
    ensure_bronze_tables(spark, config)
    ensure_profile_tables(spark, config)
    keys = load_keys(config)
    erased = spark.createDataFrame(
        [(subject_hash(keys, "u-dee"), ((int(_ts(DEE_ERASED_AT).replace(tzinfo=UTC).timestamp() * 1000)),
                                        None, None), _ts(DEE_ERASED_AT))], PROFILE_TOMBSTONES)
    save(erased.write.format("delta").mode("append"), config.table("silver.profile_tombstones"))
    products = spark.createDataFrame(
        [(p, f"Product {p}", category, 5.0, "GBP", None, None, True, True, None)
         for p, category in (("P1", "kitchen"), ("P2", "garden"), ("P3", "toys"), ("P4", "toys"))], PRODUCTS)
    save(products.write.format("delta").mode("overwrite"), config.table("silver.products"))
    args = ["--once", "--as-of", AS_OF.isoformat()]
    for override in overrides:
        args += ["--set", override]
    logs = []
    for number, records in enumerate((FIRST_BATCH, SECOND_BATCH)):
        bronze = to_bronze(spark, _shuffled(records, number))
        save(bronze.write.format("delta").mode("append"), config.table("bronze.events"))
        handler = _Collect()
        logging.getLogger("tailor").addHandler(handler)
        try:
            assert build_features.main(args) == 0
        finally:
            logging.getLogger("tailor").removeHandler(handler)
        logs.append(handler.messages)
    return {"config": config, "args": args, "logs": logs, "overrides": overrides}


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.INFO)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_features_equal_the_hand_computed_rows(spark, world):
    config = world["config"]
    actual = read_table(spark, config.table("gold.user_features")).select(*COLUMNS)
    expected = spark.createDataFrame(_expected_rows(), actual.schema)
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)
    assert {row.features_as_of for row in read_table(spark, config.table("gold.user_features")).collect()} == \
        {AS_OF.replace(tzinfo=None)}


def test_interactions_hold_each_event_once_however_late_without_the_erased(spark, world):
    interactions = read_table(spark, world["config"].table("silver.interactions"))
    ids = [row.event_id for row in interactions.select("event_id").collect()]
    expected = {record["event_id"] for record in FIRST_BATCH + SECOND_BATCH} - {"dee-straggler"}
    assert sorted(ids) == sorted(expected)
    order = interactions.where(F.col("event_id") == "ann-o1").select("order_id", "order_total", "is_cancellation",
                                                                      "items").first()
    assert (order.order_id, order.order_total, order.is_cancellation) == ("o-1", 10.0, False)
    assert [(item.product_id, item.quantity, item.unit_price) for item in order.items] == [("P1", 2, 5.0)]


def test_rerunning_a_batch_commits_nothing(spark, world):
    config = world["config"]
    checkpoint = config.checkpoint(build_features.CHECKPOINT_NAME)
    writer = FeaturesBatchWriter(config, load_keys(config), load_feature_rules(config),
                                 checkpoint_app_id(spark, checkpoint, build_features.QUERY_NAME))
    tables = [config.table("silver.interactions"), config.table("gold.user_features")]

    def versions():
        return [spark.sql(f"DESCRIBE HISTORY {sql_name(table)}").agg(F.max("version")).first()[0] for table in tables]

    before = versions()
    replayed = (read_table(spark, config.table("silver.interactions"))
                .where(F.col("event_id").isin("ann-o1", "ben-add-p3")))
    writer(replayed, 0)
    assert versions() == before


def test_refresh_ages_windows_and_sweeps_what_a_race_wrote_back_about_an_erased_person(spark, world):
    config = world["config"]
    # As if a features batch had raced Dee's erasure: her pre-erasure order back in
    # silver.interactions, and her row's first_seen_at from her former life.
    straggler = to_bronze(spark, [_order("u-dee", "2026-11-10T10:00:00Z", "o-8", [("P1", 1, 99.0)], "dee-raced")])
    save(interaction_rows(straggler).write.format("delta").mode("append"), config.table("silver.interactions"))
    spark.sql(f"UPDATE {sql_name(config.table('gold.user_features'))} "
              "SET first_seen_at = TIMESTAMP'2026-11-10 10:00:00' WHERE user_id = 'u-dee'")
    refreshed_at = "2026-11-28T00:00:00+00:00"
    args = ["--refresh-windows", "--as-of", refreshed_at]
    for override in world["overrides"]:
        args += ["--set", override]
    assert build_features.main(args) == 0
    actual = read_table(spark, config.table("gold.user_features")).select(
        "user_id", "features_as_of", "views_7d", "views_30d", "purchases_7d", "purchases_30d", "revenue_7d",
        "monetary", "days_since_first_seen", "days_since_last_seen", "recency_days", "cart_state",
        "lifecycle_stage", "primary_segment", "send_hour_source")
    moment = _ts(refreshed_at)
    expected = spark.createDataFrame([
        ("u-ann", moment, 0, 2, 0, 2, 0.0, 30.0, 26, 9, 9, "empty", "active", "general", "personal"),
        ("u-ben", moment, 0, 2, 0, 0, 0.0, 0.0, 13, 10, None, "abandoned", "prospect", "cart_abandoner", "everyone"),
        ("u-cy", moment, 0, 2, 0, 0, 0.0, 50.0, 52, 8, 52, "empty", "at_risk", "at_risk", "everyone"),
        # Dee's segment now holds Ann's three opens; nothing of her former life is left.
        ("u-dee", moment, 0, 1, 0, 1, 0.0, 15.0, 9, 9, 9, "empty", "active", "general", "segment"),
    ], actual.schema)
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)
    left = read_table(spark, config.table("silver.interactions")).where(F.col("event_id") == "dee-raced").count()
    assert left == 0


def test_a_bad_segment_rule_stops_the_job_before_spark_with_one_line(tmp_path, capsys):
    rules = tmp_path / "segments.yaml"
    rules.write_text("segments:\n  vip:\n    priority: 1\n    all:\n"
                     "      - {column: lifecycle_stage, op: '==', value: champion}\n", encoding="utf-8")
    code = build_features.main(["--once", "--set", f"storage.root={tmp_path}",
                                "--set", f"features.segments_file={rules}"])
    error = capsys.readouterr().err.strip()
    assert code == 2
    assert error == (f"tailor: {rules}: segment 'vip', condition 1: 'lifecycle_stage' is never 'champion'; "
                     "it is one of prospect, new, active, at_risk, lapsed")


def test_changed_windows_on_an_existing_table_are_refused_naming_the_keys(spark, world, capsys):
    args = ["--refresh-windows", "--set", "features.windows_days=[7, 30, 60]"]
    for override in world["overrides"]:
        if not override.startswith("features.windows_days"):
            args += ["--set", override]
    assert build_features.main(args) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("tailor: features.windows_days / features.rate_window_days do not match "
                            "gold.user_features at ")
    assert "lacks ['views_60d', 'carts_60d', 'purchases_60d', 'revenue_60d'] and has nothing besides" in error


def test_a_batch_cut_short_between_its_writes_completes_when_replayed(spark, world, monkeypatch):
    config = world["config"]
    writer = FeaturesBatchWriter(config, load_keys(config), load_feature_rules(config), "tests.features.crash")
    batch = interaction_rows(to_bronze(spark, [_page("u-eve", "2026-11-19T09:00:00Z", "eve-p1")]))
    interactions, features = config.table("silver.interactions"), config.table("gold.user_features")
    real_merge, calls = feature_writes.merge_features, []

    def killed_the_first_time(*args):
        calls.append(args)
        if len(calls) == 1:
            raise RuntimeError("executor lost")
        real_merge(*args)

    monkeypatch.setattr(feature_writes, "merge_features", killed_the_first_time)
    with pytest.raises(RuntimeError, match="executor lost"):
        writer(batch, 0)
    eve = F.col("user_id") == "u-eve"
    assert read_table(spark, interactions).where(eve).count() == 1
    assert read_table(spark, features).where(eve).count() == 0
    version = spark.sql(f"DESCRIBE HISTORY {sql_name(interactions)}").agg(F.max("version")).first()[0]

    writer(batch, 0)
    assert spark.sql(f"DESCRIBE HISTORY {sql_name(interactions)}").agg(F.max("version")).first()[0] == version
    assert [(row.views_30d, row.frequency) for row in read_table(spark, features).where(eve).collect()] == [(1, 0)]
