"""Train / test splits of an interaction log: by time (train on the past, test on what
came after) or at random within each user, reproducible from a seed."""

from __future__ import annotations

from datetime import UTC, datetime

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F


def time_split(log: DataFrame, at: datetime) -> tuple[DataFrame, DataFrame]:
    """(before `at`, from `at` on); rows without a time go to train. A naive `at` is UTC."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    moment = F.lit(at).cast("timestamp")
    is_test = F.col("occurred_at").isNotNull() & (F.col("occurred_at") >= moment)
    return log.where(~is_test), log.where(is_test)


def random_split(log: DataFrame, test_fraction: float, seed: int) -> tuple[DataFrame, DataFrame]:
    """Within each user, floor(n x fraction) of their n baskets go to test, whole, chosen
    by a hash of the user, the basket and the seed: the same seed gives the same split on
    any cluster. A basket is never cut in two (the test would ask what else was in an
    order the model has half seen), and a user with fewer than 1 / fraction baskets stays
    in train whole."""
    baskets = log.select("user_id", "basket_id").distinct()
    per_user = Window.partitionBy("user_id")
    ordered = per_user.orderBy(F.xxhash64(F.lit(seed), F.col("user_id"), F.coalesce(F.col("basket_id"), F.lit(""))),
                               F.col("basket_id"))
    tested = (baskets.withColumn("_n", F.count("*").over(per_user))
              .withColumn("_position", F.row_number().over(ordered))
              .where(F.col("_position") <= F.floor(F.col("_n") * test_fraction))
              .select("user_id", "basket_id"))
    keys = ["user_id", "basket_id"]
    return log.join(tested, keys, "left_anti"), log.join(tested, keys, "left_semi")


def truth_for(train: DataFrame, test: DataFrame, exclude_seen: bool) -> DataFrame:
    """(user_id, item_id) the evaluated users went on to interact with: users known from
    train only (a model cannot be asked about a stranger), and with `exclude_seen` only
    items they had not touched in train."""
    truth = test.select("user_id", "item_id").distinct().join(
        train.select("user_id").distinct(), "user_id", "left_semi")
    if exclude_seen:
        truth = truth.join(train.select("user_id", "item_id").distinct(), ["user_id", "item_id"], "left_anti")
    return truth
