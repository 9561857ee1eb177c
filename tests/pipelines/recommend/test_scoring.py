"""The scoring rules on one person's hand-written candidates."""

from __future__ import annotations

from chispa import assert_df_equality

from pipelines.recommend.scoring import apply_rules, fallback_items

PRODUCTS = "product_id string, category string, active boolean, in_stock boolean"


def test_rules_drop_bought_unsellable_and_over_the_category_cap(spark):
    candidates = spark.createDataFrame([
        ("u1", "g", 0.95, "because_you_bought"),  # bought, but buy_again proposed it too: shown as buy_again
        ("u1", "a", 0.9, "because_you_bought"),   # bought, buy_again did not propose it: dropped
        ("u1", "b", 0.8, "buy_again"),
        ("u1", "c", 0.7, "because_you_viewed"),   # out of stock
        ("u1", "d", 0.6, "bought_together"),
        ("u1", "e", 0.5, "because_you_viewed"),   # a third of category x
        ("u1", "h", 0.45, "because_you_viewed"),  # inactive
        ("u1", "z", 0.42, "because_you_viewed"),  # not in the catalogue
        ("u1", "f", 0.4, "because_you_viewed"),   # beyond k
    ], "user_id string, item_id string, score double, reason string")
    bought = spark.createDataFrame([("u1", "a"), ("u1", "b"), ("u1", "g")], "user_id string, item_id string")
    repeatable = spark.createDataFrame([("u1", "b"), ("u1", "g")], "user_id string, item_id string")
    products = spark.createDataFrame([
        ("a", "x", True, True), ("b", "x", True, True), ("c", "y", True, False), ("d", "x", True, None),
        ("e", "x", True, True), ("f", "y", True, True), ("g", "y", True, True), ("h", "y", False, True),
    ], PRODUCTS)
    actual = apply_rules(candidates, bought, repeatable, products, k=4, max_per_category=2)
    expected = spark.createDataFrame([
        ("u1", "g", 0.95, "buy_again", 1), ("u1", "b", 0.8, "buy_again", 2),
        ("u1", "d", 0.6, "bought_together", 3), ("u1", "f", 0.4, "because_you_viewed", 4),
    ], "user_id string, item_id string, score double, reason string, rank int")
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_fallback_is_the_segment_list_else_the_country_else_everyone(spark):
    people = spark.createDataFrame([("u1", "vip", "GB"), ("u2", "vip", "FR"), ("u3", "new", "FR"), ("u4", None, None)],
                                   "user_id string, segment string, country string")
    lists = spark.createDataFrame(
        [("segment:vip", "a", 3.0, 1), ("country:FR", "b", 2.0, 1), ("everyone", "c", 1.0, 1)],
        "list_key string, item_id string, score double, rank int")
    actual = fallback_items(people, lists).select("user_id", "item_id")
    expected = spark.createDataFrame([("u1", "a"), ("u2", "a"), ("u3", "b"), ("u4", "c")],
                                     "user_id string, item_id string")
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


