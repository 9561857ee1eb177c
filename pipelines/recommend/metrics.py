"""Ranking metrics at k for many recommenders at once, as Spark expressions.

`recommendations` holds (group, user_id, item_id, rank) with rank 1 the best; `truth`
holds (user_id, item_id), the items each evaluated user went on to interact with. A
group is one model, or one weighting of a blend while tuning: every group is scored
against the same users in one pass, so a grid costs one job, not one per point.

Definitions (binary relevance, the ones Spark's RankingMetrics uses):
  precision@k = hits in the top k / k
  recall@k    = hits in the top k / |truth|
  ndcg@k      = sum over hits of 1 / log2(rank + 1), divided by the same sum for
                min(|truth|, k) hits at the top
  map@k       = sum over hits of (hits up to that rank / rank), divided by min(|truth|, k)
  coverage    = distinct items recommended to anyone / items in the catalogue
A user the recommender says nothing to scores 0 on each; users without truth are not
evaluated.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

METRICS = ("ndcg", "precision", "recall", "map")


def top_k(candidates: DataFrame, k: int, partition: tuple[str, ...] = ("user_id",)) -> DataFrame:
    """The k best-scored items per partition, ranked from 1 (ties broken by item id)."""
    order = Window.partitionBy(*partition).orderBy(F.col("score").desc(), F.col("item_id"))
    return candidates.withColumn("rank", F.row_number().over(order)).where(F.col("rank") <= k)


def _ideal_dcg(relevant: str, k: int):
    return F.expr(f"aggregate(sequence(1, least({relevant}, {k})), 0D, (acc, i) -> acc + 1D / log2(i + 1))")


def ranking_metrics(recommendations: DataFrame, truth: DataFrame, k: int, groups: list[str] | None = None
                    ) -> DataFrame:
    """(group, users, ndcg, precision, recall, map, recommended_items) per group; ranks
    above k are ignored. `groups` lists every group to report, so one that recommended
    nothing scores 0 rather than going missing (default: the groups present)."""
    relevant = truth.select("user_id", "item_id").distinct()
    sizes = relevant.groupBy("user_id").agg(F.count("*").alias("relevant"))
    spark = recommendations.sparkSession
    # Built in the JVM, not from a Python list (which Spark reads through a Python worker).
    group_names = (spark.range(1).select(F.explode(F.array(*[F.lit(name) for name in groups])).alias("group"))
                   if groups is not None else recommendations.select("group").distinct())
    hits = (recommendations.where(F.col("rank") <= k)
            .join(relevant.withColumn("hit", F.lit(1)), ["user_id", "item_id"], "left")
            .fillna(0, ["hit"]))
    running = (Window.partitionBy("group", "user_id").orderBy("rank")
               .rowsBetween(Window.unboundedPreceding, Window.currentRow))
    per_user = (hits.withColumn("hits_so_far", F.sum("hit").over(running))
                .groupBy("group", "user_id")
                .agg(F.sum("hit").alias("hits"),
                     F.sum(F.col("hit") / F.log2(F.col("rank") + 1)).alias("dcg"),
                     F.sum(F.when(F.col("hit") == 1, F.col("hits_so_far") / F.col("rank")).otherwise(0.0))
                     .alias("precision_sum")))
    scored = (group_names.crossJoin(sizes)
              .join(per_user, ["group", "user_id"], "left")
              .fillna(0, ["hits", "dcg", "precision_sum"])
              .select("group", "user_id",
                      (F.col("dcg") / _ideal_dcg("relevant", k)).alias("ndcg"),
                      (F.col("hits") / k).alias("precision"),
                      (F.col("hits") / F.col("relevant")).alias("recall"),
                      (F.col("precision_sum") / F.least(F.col("relevant"), F.lit(k))).alias("map")))
    averages = scored.groupBy("group").agg(F.count("*").alias("users"),
                                           *[F.avg(name).alias(name) for name in METRICS])
    breadth = (recommendations.where(F.col("rank") <= k).groupBy("group")
               .agg(F.countDistinct("item_id").alias("recommended_items")))
    return averages.join(breadth, "group", "left").fillna(0, ["recommended_items"])


def metrics_by_group(recommendations: DataFrame, truth: DataFrame, k: int, catalogue_items: int,
                     groups: list[str] | None = None) -> dict[str, dict[str, float]]:
    """{group: {"ndcg@k": ..., "precision@k": ..., "recall@k": ..., "map@k": ..., "coverage": ...}}."""
    result = {}
    for row in ranking_metrics(recommendations, truth, k, groups).collect():
        values = {f"{name}@{k}": float(row[name]) for name in METRICS}
        values["coverage"] = row.recommended_items / catalogue_items if catalogue_items else 0.0
        result[row.group] = values
    return result
