"""The blend: candidates from several models merged by weighted reciprocal rank.

An item's blended score is the sum over models of weight / (rank_constant + rank) where
that model ranked it; ranks, not raw scores, because each model's scores live on their
own scale. The reason shown is the one of the model that contributed most. Weights are
tuned on a validation split carved from the training period: every point of a grid over
the simplex is scored in one pass (see `metrics.ranking_metrics`' groups).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from pipelines.recommend.metrics import metrics_by_group, top_k


def ranked_union(candidates: Mapping[str, DataFrame]) -> DataFrame:
    """(model, user_id, item_id, rank, reason) of every model's list."""
    parts = []
    for name, frame in candidates.items():
        order = Window.partitionBy("user_id").orderBy(F.col("score").desc(), F.col("item_id"))
        parts.append(frame.select(F.lit(name).alias("model"), "user_id", "item_id", "reason",
                                  F.row_number().over(order).alias("rank")))
    union = parts[0]
    for part in parts[1:]:
        union = union.unionByName(part)
    return union


def weight_grid(models: list[str], step: float) -> list[dict[str, float]]:
    """Every weighting of `models` in multiples of `step` that sums to 1 (stars and bars:
    each choice of bar positions among units + models - 1 slots is one weighting)."""
    units = round(1 / step)
    slots = units + len(models) - 1
    points = []
    for bars in itertools.combinations(range(slots), len(models) - 1):
        edges = (-1, *bars, slots)
        shares = [edges[i + 1] - edges[i] - 1 for i in range(len(models))]
        points.append({name: share / units for name, share in zip(models, shares, strict=True)})
    return points


def blend_groups(union: DataFrame, weightings: Mapping[str, Mapping[str, float]], rank_constant: float,
                 k: int) -> DataFrame:
    """(group, user_id, item_id, score, reason, rank): each weighting's top k per user."""
    rows = [F.struct(F.lit(group).alias("group"), F.lit(model).alias("model"), F.lit(float(weight)).alias("weight"))
            for group, weights in weightings.items() for model, weight in weights.items() if weight > 0]
    # Built in the JVM, not from a Python list (which Spark reads through a Python worker).
    table = union.sparkSession.range(1).select(F.explode(F.array(*rows)).alias("w")).select("w.*")
    contributions = (union.join(F.broadcast(table), "model")
                     .withColumn("part", F.col("weight") / (F.lit(rank_constant) + F.col("rank"))))
    best = Window.partitionBy("group", "user_id", "item_id").orderBy(F.col("part").desc(), F.col("model"))
    scored = (contributions.withColumn("_first", F.row_number().over(best))
              .groupBy("group", "user_id", "item_id")
              .agg(F.sum("part").alias("score"),
                   F.max(F.when(F.col("_first") == 1, F.col("reason"))).alias("reason")))
    return top_k(scored, k, partition=("group", "user_id"))


def blend(candidates: Mapping[str, DataFrame], weights: Mapping[str, float], rank_constant: float,
          k: int) -> DataFrame:
    """(user_id, item_id, score, reason) of one weighting's top k."""
    return (blend_groups(ranked_union(candidates), {"blend": weights}, rank_constant, k)
            .select("user_id", "item_id", "score", "reason"))


def tune_weights(candidates: Mapping[str, DataFrame], truth: DataFrame, k: int,
                 rank_constant: float, step: float) -> tuple[dict[str, float], dict[str, float]]:
    """(the weighting with the best ndcg@k on `truth`, its metrics). Ties (to 12 places:
    averages summed in another order differ in the last bits) go to the first point of
    the grid, so the result is reproducible."""
    models = list(candidates)
    grid = {f"w{number}": point for number, point in enumerate(weight_grid(models, step))}
    union = ranked_union(candidates).cache()
    try:
        results = metrics_by_group(blend_groups(union, grid, rank_constant, k), truth, k, catalogue_items=1,
                                   groups=list(grid))
    finally:
        union.unpersist()
    metric = f"ndcg@{k}"
    best = max(grid, key=lambda group: (round(results.get(group, {}).get(metric, 0.0), 12), -int(group[1:])))
    return dict(grid[best]), results.get(best, {})
