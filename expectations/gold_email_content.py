"""gold.email_content: one row per user, and every published row with a greeting and
products."""

from __future__ import annotations

from datetime import datetime

import great_expectations.expectations as gxe
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from expectations import Batch, Check, Previous, Read
from expectations.common import key_checks
from pipelines.config import Config

DATASET = "gold.email_content"


def published_rows(content: DataFrame) -> DataFrame:
    """(user_id, greeting_text, product_count) of the rows the API serves (not suppressed)."""
    text = F.when(F.trim(F.col("greeting.text")) != "", F.col("greeting.text"))
    return (content.where(F.col("status") == "published")
            .select("user_id", text.alias("greeting_text"),
                    F.coalesce(F.size("products"), F.lit(0)).alias("product_count")))


def batches(read: Read, config: Config, previous: Previous, as_of: datetime) -> list[Batch]:
    content = read(DATASET)
    if content is None:
        return []
    return [
        Batch(DATASET, content, tuple(key_checks(DATASET, "user_id"))),
        Batch(f"{DATASET}.published", published_rows(content), (
            Check(f"{DATASET}.greeting_present", "critical",
                  gxe.ExpectColumnValuesToNotBeNull(column="greeting_text")),
            Check(f"{DATASET}.products_present", "critical",
                  gxe.ExpectColumnValuesToBeBetween(column="product_count", min_value=1)))),
    ]
