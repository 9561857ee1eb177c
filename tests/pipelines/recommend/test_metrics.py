"""Ranking metrics against values worked out by hand, against a plain-Python reference
on random lists, and against Spark's own RankingEvaluator."""

from __future__ import annotations

import math
import random

import pytest
from pyspark.ml.evaluation import RankingEvaluator

from pipelines.recommend.metrics import metrics_by_group, top_k


def _recs(spark, rows):
    return spark.createDataFrame(rows, "group string, user_id string, item_id string, rank int")


def _truth(spark, rows):
    return spark.createDataFrame(rows, "user_id string, item_id string")


def test_metrics_match_values_worked_out_by_hand(spark):
    # Ann's truth {a, b, c}; she is shown a, x, b: hits at ranks 1 and 3.
    #   precision@3 = 2/3, recall@3 = 2/3
    #   dcg = 1/log2(2) + 1/log2(4) = 1.5; ideal = 1 + 1/log2(3) + 1/log2(4) = 2.130930
    #   ndcg = 0.703918;  map@3 = (1/1 + 2/3) / 3 = 0.555556
    # Bo's truth {z}; he is shown nothing: 0 everywhere.
    recs = _recs(spark, [("m", "ann", "a", 1), ("m", "ann", "x", 2), ("m", "ann", "b", 3),
                         ("m", "ann", "c", 4)])  # rank 4 is beyond k and must not count
    truth = _truth(spark, [("ann", "a"), ("ann", "b"), ("ann", "c"), ("bo", "z"), ("bo", "z")])
    result = metrics_by_group(recs, truth, k=3, catalogue_items=8, groups=["m", "silent"])
    assert result["m"] == pytest.approx({"ndcg@3": 0.703918 / 2, "precision@3": (2 / 3) / 2,
                                         "recall@3": (2 / 3) / 2, "map@3": 0.555556 / 2,
                                         "coverage": 3 / 8}, abs=1e-6)
    assert result["silent"] == {"ndcg@3": 0.0, "precision@3": 0.0, "recall@3": 0.0, "map@3": 0.0, "coverage": 0.0}


def test_ideal_dcg_is_capped_by_k_and_map_by_the_truth_size(spark):
    # One hit at rank 1 of k=2 with five relevant items: ideal dcg counts 2 hits, not 5.
    recs = _recs(spark, [("m", "u", "a", 1), ("m", "u", "q", 2)])
    truth = _truth(spark, [("u", item) for item in "abcde"])
    result = metrics_by_group(recs, truth, k=2, catalogue_items=2)["m"]
    assert result["ndcg@2"] == pytest.approx(1 / (1 + 1 / math.log2(3)))
    assert result["map@2"] == pytest.approx(1 / 2)
    assert result["recall@2"] == pytest.approx(1 / 5)


def _reference(lists: dict[str, list[str]], truth: dict[str, set[str]], k: int) -> dict[str, float]:
    """The textbook definitions, written independently of the Spark code."""
    totals = {"ndcg": 0.0, "precision": 0.0, "recall": 0.0, "map": 0.0}
    for user, relevant in truth.items():
        shown = lists.get(user, [])[:k]
        hits = [1 if item in relevant else 0 for item in shown]
        dcg = sum(hit / math.log2(i + 2) for i, hit in enumerate(hits))
        ideal = sum(1 / math.log2(i + 2) for i in range(min(len(relevant), k)))
        precisions = [sum(hits[: i + 1]) / (i + 1) for i, hit in enumerate(hits) if hit]
        totals["ndcg"] += dcg / ideal
        totals["precision"] += sum(hits) / k
        totals["recall"] += sum(hits) / len(relevant)
        totals["map"] += sum(precisions) / min(len(relevant), k)
    return {f"{name}@{k}": value / len(truth) for name, value in totals.items()}


def test_metrics_agree_with_a_reference_and_with_spark_ranking_evaluator(spark):
    chance = random.Random(7)
    items = [f"i{n}" for n in range(30)]
    truth = {f"u{n}": set(chance.sample(items, chance.randint(1, 8))) for n in range(40)}
    lists = {user: chance.sample(items, chance.randint(0, 12)) for user in truth if chance.random() < 0.9}
    k = 10
    recs = _recs(spark, [("m", user, item, rank + 1) for user, shown in lists.items()
                         for rank, item in enumerate(shown)])
    truth_frame = _truth(spark, [(user, item) for user, relevant in truth.items() for item in relevant])
    ours = metrics_by_group(recs, truth_frame, k, catalogue_items=len(items))["m"]
    expected = _reference(lists, truth, k)
    assert {name: ours[name] for name in expected} == pytest.approx(expected)

    index = {item: float(n) for n, item in enumerate(items)}
    pairs = spark.createDataFrame(
        [([index[i] for i in lists.get(user, [])], [index[i] for i in sorted(relevant)])
         for user, relevant in truth.items()],
        "prediction array<double>, label array<double>")
    for metric, spark_name in (("ndcg", "ndcgAtK"), ("precision", "precisionAtK"), ("recall", "recallAtK"),
                               ("map", "meanAveragePrecisionAtK")):
        value = RankingEvaluator(metricName=spark_name, k=k).evaluate(pairs)
        assert ours[f"{metric}@{k}"] == pytest.approx(value), metric


def test_top_k_ranks_by_score_then_item_id(spark):
    scored = spark.createDataFrame([("u", "b", 1.0), ("u", "a", 1.0), ("u", "c", 3.0), ("u", "d", 0.5)],
                                   "user_id string, item_id string, score double")
    ranked = [(r.item_id, r.rank) for r in top_k(scored, 3).orderBy("rank").collect()]
    assert ranked == [("c", 1), ("a", 2), ("b", 3)]
