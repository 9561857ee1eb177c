"""The blend's arithmetic and tuning, and the splits' promises."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from pipelines.recommend.blend import blend, tune_weights, weight_grid
from pipelines.recommend.splits import random_split, time_split, truth_for

CANDIDATES = "user_id string, item_id string, score double, reason string"


def test_weight_grid_covers_the_simplex():
    grid = weight_grid(["a", "b", "c"], 0.5)
    assert sorted(tuple(point.values()) for point in grid) == sorted([
        (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0), (0.5, 0.5, 0.0), (0.5, 0.0, 0.5), (0.0, 0.5, 0.5)])
    assert len(weight_grid(["a", "b", "c", "d"], 0.25)) == 35


def test_blend_sums_weighted_reciprocal_ranks_and_keeps_the_top_contributors_reason(spark):
    first = spark.createDataFrame([("u", "x", 9.0, "buy_again"), ("u", "y", 5.0, "buy_again")], CANDIDATES)
    second = spark.createDataFrame([("u", "y", 0.9, "because_you_bought"), ("u", "z", 0.8, "because_you_bought")],
                                   CANDIDATES)
    # rank_constant 1: x = 0.75/(1+1) = 0.375; y = 0.75/(1+2) + 0.25/(1+1) = 0.375; z = 0.25/(1+2)
    rows = blend({"first": first, "second": second}, {"first": 0.75, "second": 0.25}, rank_constant=1.0,
                 k=3).collect()
    scores = {row.item_id: (row.score, row.reason) for row in rows}
    assert scores["x"] == (pytest.approx(0.375), "buy_again")
    assert scores["y"] == (pytest.approx(0.375), "buy_again")  # 0.25 from first beats 0.125 from second
    assert scores["z"] == (pytest.approx(0.25 / 3), "because_you_bought")


def test_tuning_picks_the_weighting_that_ranks_the_truth_first(spark):
    truth = spark.createDataFrame([(f"u{n}", f"good{n}") for n in range(6)], "user_id string, item_id string")
    right = spark.createDataFrame([(f"u{n}", f"good{n}", 1.0, "buy_again") for n in range(6)], CANDIDATES)
    wrong = spark.createDataFrame([(f"u{n}", f"bad{n}", 1.0, "popular_in_segment") for n in range(6)], CANDIDATES)
    weights, metrics = tune_weights({"wrong": wrong, "right": right}, truth, k=1, rank_constant=1.0, step=0.25)
    assert weights["right"] > weights["wrong"]
    assert metrics["ndcg@1"] == pytest.approx(1.0)


LOG = "user_id string, item_id string, weight double, occurred_at timestamp, basket_id string, kind string"


def _log(spark, rows):
    return spark.createDataFrame([(u, i, 1.0, t, f"{u}{i}", "purchase") for u, i, t in rows], LOG)


def test_time_split_and_truth_keep_only_known_users_and_with_exclude_seen_new_items(spark):
    at = datetime(2026, 11, 1)
    before, after = at - timedelta(days=1), at + timedelta(days=1)
    log = _log(spark, [("ann", "tea", before), ("ann", "tea", after), ("ann", "mug", after), ("new", "pot", after),
                       ("bob", "pan", None)])
    train, test = time_split(log, at)
    assert sorted((r.user_id, r.item_id) for r in train.collect()) == [("ann", "tea"), ("bob", "pan")]
    assert sorted((r.user_id, r.item_id) for r in truth_for(train, test, exclude_seen=False).collect()) == [
        ("ann", "mug"), ("ann", "tea")]
    assert [(r.user_id, r.item_id) for r in truth_for(train, test, exclude_seen=True).collect()] == [("ann", "mug")]


def test_random_split_is_per_user_reproducible_and_keeps_a_single_row_in_train(spark):
    at = datetime(2026, 11, 1)
    rows = [("heavy", f"i{n}", at + timedelta(hours=n)) for n in range(20)] + [("once", "x", at)]
    log = _log(spark, rows)
    train, test = random_split(log, 0.25, seed=3)
    tested = sorted(r.item_id for r in test.collect())
    assert len(tested) == 5 and {r.user_id for r in test.collect()} == {"heavy"}
    assert train.count() == 16
    again = sorted(r.item_id for r in random_split(log.repartition(3), 0.25, seed=3)[1].collect())
    assert again == tested
    assert sorted(r.item_id for r in random_split(log, 0.25, seed=4)[1].collect()) != tested


def test_random_split_never_cuts_a_basket_in_two(spark):
    at = datetime(2026, 11, 1)
    rows = [("ann", f"i{line}", 1.0, at, f"order{order}", "purchase") for order in range(8) for line in range(3)]
    train, test = random_split(spark.createDataFrame(rows, LOG), 0.25, seed=5)
    tested = {r.basket_id for r in test.collect()}
    assert len(tested) == 2 and test.count() == 6
    assert tested.isdisjoint({r.basket_id for r in train.collect()})
