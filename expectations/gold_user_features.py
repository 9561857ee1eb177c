"""gold.user_features: one row per user, no segment holding nearly everyone, send hours
that are hours."""

from __future__ import annotations

from datetime import datetime

import great_expectations.expectations as gxe
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from expectations import Batch, Check, Previous, Read
from expectations.common import key_checks
from pipelines.config import Config

DATASET = "gold.user_features"


def segment_shares(features: DataFrame) -> DataFrame:
    """(segment, share): each primary segment's share of the users."""
    everyone = Window.partitionBy()
    return (features.groupBy(F.col("primary_segment").alias("segment")).count()
            .select("segment", (F.col("count") / F.sum("count").over(everyone)).alias("share")))


def batches(read: Read, config: Config, previous: Previous, as_of: datetime) -> list[Batch]:
    features = read(DATASET)
    if features is None:
        return []
    return [
        Batch(DATASET, features, (
            *key_checks(DATASET, "user_id"),
            Check(f"{DATASET}.best_send_hour_is_an_hour", "warning",
                  gxe.ExpectColumnValuesToBeBetween(column="best_send_hour", min_value=0, max_value=23)))),
        Batch(f"{DATASET}.segments", segment_shares(features), (
            # Every segment's share, not the largest: a table with no user yet holds no
            # segment above the cap (a column's max over no rows fails).
            Check(f"{DATASET}.segment_share", "critical",
                  gxe.ExpectColumnValuesToBeBetween(column="share", max_value=config.quality.max_segment_share)),)),
    ]
