"""Candidate models: each turns an interaction log into up to n ranked items per user,
as (user_id, item_id, score, reason). Scores compare within one model only; the blend
works on ranks.

`users` names the users to recommend to (a DataFrame with user_id); `seen`, when given,
holds (user_id, item_id) pairs a model must not return (items a user already has, when
only new items are wanted). Time decay is relative to `as_of`, the end of the history.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pyspark.ml.feature import IndexToString, StringIndexer
from pyspark.ml.recommendation import ALS
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from pipelines.config import AlsConfig
from pipelines.recommend.interactions import decayed, user_items
from pipelines.recommend.metrics import top_k

CANDIDATE_COLUMNS = ("user_id", "item_id", "score", "reason")


def _without(candidates: DataFrame, seen: DataFrame | None) -> DataFrame:
    if seen is None:
        return candidates
    return candidates.join(seen.select("user_id", "item_id"), ["user_id", "item_id"], "left_anti")


def _ranked(candidates: DataFrame, seen: DataFrame | None, n: int) -> DataFrame:
    return top_k(_without(candidates, seen), n).select(*CANDIDATE_COLUMNS)


def popular(log: DataFrame, users: DataFrame, as_of, half_life_days: float, n: int,
            seen: DataFrame | None = None, segments: DataFrame | None = None, pool: int = 200) -> DataFrame:
    """The most-interacted items, time-decayed: within the user's segment when `segments`
    (user_id, segment) gives one, else over everyone. `pool` items per segment are kept
    before a user's own (`seen`) are left out: a user who has more than pool - n of them
    gets fewer than n. A user listed in several segments counts in the first by name."""
    strength = decayed(F.col("weight"), F.col("occurred_at"), as_of, half_life_days)
    overall = (log.groupBy("item_id").agg(F.sum(strength).alias("score"))
               .withColumn("segment", F.lit(None).cast("string")))
    by_segment = overall.limit(0)
    if segments is not None:
        segments = (segments.where(F.col("segment").isNotNull()).groupBy("user_id")
                    .agg(F.min("segment").alias("segment")))
        by_segment = (log.join(segments, "user_id").groupBy("segment", "item_id")
                      .agg(F.sum(strength).alias("score")))
    pools = top_k(overall.unionByName(by_segment), pool, partition=("segment",))
    targets = users.select("user_id")
    if segments is not None:
        targets = targets.join(segments, "user_id", "left")
    else:
        targets = targets.withColumn("segment", F.lit(None).cast("string"))
    # A user without a segment, or in a segment with no history, gets the overall list.
    has_pool = pools.select("segment").distinct().where(F.col("segment").isNotNull()).withColumn("_known", F.lit(True))
    targets = (targets.join(has_pool, "segment", "left")
               .withColumn("segment", F.when(F.col("_known"), F.col("segment"))).drop("_known"))
    # The pools are small (pool x segments): broadcast, or every user without a segment
    # would meet them in the one task that holds the null key.
    pools = F.broadcast(pools)
    candidates = (targets.join(pools, targets.segment.eqNullSafe(pools.segment))
                  .select("user_id", "item_id", "score", F.lit("popular_in_segment").alias("reason")))
    return _ranked(candidates, seen, n)


def buy_again(log: DataFrame, users: DataFrame, as_of, half_life_days: float, n: int) -> DataFrame:
    """Items the user bought, by how often and how lately: each purchase counts 1, decayed."""
    purchases = log.where(F.col("kind") == "purchase").join(users.select("user_id"), "user_id", "left_semi")
    candidates = (purchases.groupBy("user_id", "item_id")
                  .agg(F.sum(decayed(F.lit(1.0), F.col("occurred_at"), as_of, half_life_days)).alias("score"))
                  .withColumn("reason", F.lit("buy_again")))
    return _ranked(candidates, None, n)


def co_occurrence(log: DataFrame, users: DataFrame, as_of, half_life_days: float, n: int,
                  max_basket_items: int = 50, neighbours: int = 50, seen: DataFrame | None = None) -> DataFrame:
    """Items bought together with what the user has: item-to-item cosine similarity of
    baskets, summed over the user's items weighted by their decayed strength. A basket
    larger than `max_basket_items` is left out of the similarities (a wholesale order of
    hundreds of lines says little about what goes together, and costs its size squared).
    Items the user already has are not candidates."""
    baskets = (log.where(F.col("kind") == "purchase").select("basket_id", "item_id").distinct()
               .withColumn("_size", F.count("*").over(Window.partitionBy("basket_id")))
               .where(F.col("_size").between(2, max_basket_items)).drop("_size"))
    counts = baskets.groupBy("item_id").agg(F.count("*").alias("baskets"))
    pairs = (baskets.alias("a").join(baskets.alias("b"), "basket_id")
             .where(F.col("a.item_id") != F.col("b.item_id"))
             .groupBy(F.col("a.item_id").alias("item_id"), F.col("b.item_id").alias("other_id"))
             .agg(F.count("*").alias("together")))
    similar = (pairs.join(counts, "item_id")
               .join(counts.withColumnRenamed("item_id", "other_id").withColumnRenamed("baskets", "other_baskets"),
                     "other_id")
               .withColumn("score", F.col("together") / F.sqrt(F.col("baskets") * F.col("other_baskets")))
               .select("item_id", F.col("other_id").alias("neighbour_id"), "score"))
    nearest = top_k(similar.withColumnRenamed("item_id", "anchor_id").withColumnRenamed("neighbour_id", "item_id"),
                    neighbours, partition=("anchor_id",))
    held = user_items(log.join(users.select("user_id"), "user_id", "left_semi"), as_of, half_life_days)
    candidates = (held.select("user_id", F.col("item_id").alias("anchor_id"), "strength")
                  .join(nearest.select("anchor_id", "item_id", F.col("score").alias("similarity")), "anchor_id")
                  .groupBy("user_id", "item_id").agg(F.sum(F.col("strength") * F.col("similarity")).alias("score"))
                  .join(held.select("user_id", "item_id"), ["user_id", "item_id"], "left_anti")
                  .withColumn("reason", F.lit("bought_together")))
    return _ranked(candidates, seen, n)


@dataclass
class FittedAls:
    """An implicit-feedback ALS model and the id mappings it was fitted with."""

    model: object
    users: object  # StringIndexerModel for user_id
    items: object  # StringIndexerModel for item_id


def fit_als(log: DataFrame, as_of, half_life_days: float, settings: AlsConfig) -> FittedAls:
    """Implicit ALS over each pair's decayed strength (Hu, Koren and Volinsky's confidence
    1 + alpha x strength)."""
    pairs = user_items(log, as_of, half_life_days)
    # "keep": a user or item the model never saw gets no prediction (ALS drops it) instead
    # of failing the whole transform, when the registered model scores new pairs.
    users = StringIndexer(inputCol="user_id", outputCol="user_index", handleInvalid="keep").fit(pairs)
    items = StringIndexer(inputCol="item_id", outputCol="item_index", handleInvalid="keep").fit(pairs)
    ratings = items.transform(users.transform(pairs)).select(
        F.col("user_index").cast("int"), F.col("item_index").cast("int"), F.col("strength").alias("rating"))
    als = ALS(userCol="user_index", itemCol="item_index", ratingCol="rating", implicitPrefs=True,
              rank=settings.rank, maxIter=settings.max_iter, regParam=settings.reg_param, alpha=settings.alpha,
              seed=settings.seed, nonnegative=True, coldStartStrategy="drop", checkpointInterval=-1)
    if settings.blocks is not None:
        als = als.setNumUserBlocks(settings.blocks).setNumItemBlocks(settings.blocks)
    return FittedAls(als.fit(ratings), users, items)


# Scores per matrix product, whatever the catalogue's size: 5M float32 scores is 20 MB,
# and argpartition's int64 positions twice that, per Python worker (512 users at 10,000
# items, 5 at 1M).
_SCORE_CELLS = 5_000_000


def top_items(model: Any, users: DataFrame, n: int) -> DataFrame:
    """(user_index, item_index, rating): the `n` items of highest predicted rating (the dot
    product of the factors, as ALSModel's recommendForUserSubset) for each user of `users`
    (a user_index column) the model knows, best first within a user.

    Spark's recommendForUserSubset scores one user at a time with its pure-Java BLAS and
    keeps the best through a Guava ordering over every item, then shuffles partial lists
    to merge them (bench/scoring.py: the bare recommendForAllUsers(10) takes 21-41 s for 100k
    users x 10k items, where this takes 8 s for 30 items per user). Here
    the item factors (rank x items floats: 1.3 MB for 10k items) are broadcast, and each
    Arrow batch of users is scored as a matrix product in NumPy (OpenBLAS) with the best
    n found by argpartition: one pass, no shuffle, on the JVM's side only the join that
    picks the users. Ratings are float32 as Spark's; sums may round in another order, so
    two items whose ratings tie to the last bit may swap places."""
    import numpy as np
    import pyarrow as pa

    spark = users.sparkSession
    columns = "user_index int, item_index int, rating float"
    if n <= 0:
        return spark.createDataFrame([], columns)
    item_table = model.itemFactors.toArrow()
    item_ids = item_table.column("id").to_numpy().astype(np.int32)
    rank = int(model.rank)
    item_factors = (item_table.column("features").combine_chunks().flatten().to_numpy()
                    .astype(np.float32).reshape(len(item_ids), rank))
    shared = spark.sparkContext.broadcast((item_ids, np.ascontiguousarray(item_factors.T)))
    take = min(n, len(item_ids))
    chunk = max(1, _SCORE_CELLS // max(1, len(item_ids)))
    schema = pa.schema([("user_index", pa.int32()), ("item_index", pa.int32()), ("rating", pa.float32())])

    def score(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        ids, transposed = shared.value
        for batch in batches:
            user_ids = batch.column(0).to_numpy().astype(np.int32)
            factors = (batch.column(1).flatten().to_numpy(zero_copy_only=False).astype(np.float32)
                       .reshape(len(user_ids), rank))
            for start in range(0, len(user_ids), chunk):
                ratings = factors[start:start + chunk] @ transposed
                best = np.argpartition(ratings, -take, axis=1)[:, -take:] if take < ratings.shape[1] else \
                    np.broadcast_to(np.arange(ratings.shape[1]), ratings.shape)
                best_ratings = np.take_along_axis(ratings, best, axis=1)
                order = np.argsort(-best_ratings, axis=1, kind="stable")
                chosen = np.take_along_axis(best, order, axis=1)
                yield pa.RecordBatch.from_arrays(
                    [pa.array(np.repeat(user_ids[start:start + chunk], take)),
                     pa.array(ids[chosen].ravel()), pa.array(np.take_along_axis(best_ratings, order, axis=1).ravel())],
                    schema=schema)

    known = model.userFactors.join(users.select(F.col("user_index").alias("id")).distinct(), "id", "left_semi")
    return known.select(F.col("id").alias("user_index"), "features").mapInArrow(score, columns)


def als(fitted: FittedAls, log: DataFrame, users: DataFrame, n: int, seen: DataFrame | None = None,
        over_fetch: int = 0) -> DataFrame:
    """The model's top items per user; `because_you_bought` for users who bought, else
    `because_you_viewed`. `over_fetch` extra items per user make up for `seen` ones."""
    known = fitted.users.transform(users.select("user_id").distinct().join(
        log.select("user_id").distinct(), "user_id", "left_semi"))
    subset = known.select(F.col("user_index").cast("int").alias("user_index"), "user_id")
    raw = top_items(fitted.model, subset, n + over_fetch)
    item_ids = IndexToString(inputCol="item_index", outputCol="item_id", labels=fitted.items.labelsArray[0])
    bought = log.where(F.col("kind") == "purchase").select("user_id").distinct().withColumn("_bought", F.lit(True))
    candidates = (raw.join(subset, "user_index")
                  .select("user_id", "item_index", F.col("rating").alias("score"))
                  .transform(item_ids.transform)
                  .join(bought, "user_id", "left")
                  .withColumn("reason", F.when(F.col("_bought"), "because_you_bought").otherwise("because_you_viewed"))
                  .select(*CANDIDATE_COLUMNS))
    return _ranked(candidates, seen, n)
