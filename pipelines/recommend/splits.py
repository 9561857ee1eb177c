"""Train / test splits of an interaction log: by time (train on the past, test on what
came after) or at random within each user, reproducible from a seed."""

from __future__ import annotations

from datetime import datetime

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F


def time_split(log: DataFrame, at: datetime) -> tuple[DataFrame, DataFrame]:
    """(before `at`, from `at` on); rows without a time go to train."""
    moment = F.lit(at).cast("timestamp")
    is_test = F.col("occurred_at").isNotNull() & (F.col("occurred_at") >= moment)
    return log.where(~is_test), log.where(is_test)


def random_split(log: DataFrame, test_fraction: float, seed: int) -> tuple[DataFrame, DataFrame]:
    """Within each user, floor(n x fraction) of their n rows go to test, chosen by a hash
    of the row and the seed: the same seed gives the same split on any cluster, and a user
    with one row keeps it in train."""
    key = F.xxhash64(F.lit(seed), *[F.coalesce(F.col(c).cast("string"), F.lit("")) for c in log.columns])
    per_user = Window.partitionBy("user_id")
    ordered = per_user.orderBy(key)
    marked = (log.withColumn("_n", F.count("*").over(per_user))
              .withColumn("_position", F.row_number().over(ordered))
              .withColumn("_test", F.col("_position") <= F.floor(F.col("_n") * test_fraction)))
    columns = log.columns
    return marked.where(~F.col("_test")).select(*columns), marked.where(F.col("_test")).select(*columns)


def truth_for(train: DataFrame, test: DataFrame, exclude_seen: bool) -> DataFrame:
    """(user_id, item_id) the evaluated users went on to interact with: users known from
    train only (a model cannot be asked about a stranger), and with `exclude_seen` only
    items they had not touched in train."""
    truth = test.select("user_id", "item_id").distinct().join(
        train.select("user_id").distinct(), "user_id", "left_semi")
    if exclude_seen:
        truth = truth.join(train.select("user_id", "item_id").distinct(), ["user_id", "item_id"], "left_anti")
    return truth
