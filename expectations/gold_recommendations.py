"""gold.recommendations: one row per user, and every recommended product one the
catalogue sells."""

from __future__ import annotations

from datetime import datetime

import great_expectations.expectations as gxe
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from expectations import Batch, Check, Previous, Read
from expectations.common import key_checks
from pipelines.config import Config

DATASET = "gold.recommendations"


def recommended_products(recommendations: DataFrame, products: DataFrame) -> DataFrame:
    """(user_id, product_id, catalogue_status): `active`, `inactive`, or `unknown` (the
    catalogue does not hold it) for every recommended item."""
    items = recommendations.select("user_id", F.explode("items").alias("item")).select(
        "user_id", F.col("item.product_id").alias("product_id"))
    catalogue = products.select("product_id", F.when(F.col("active"), F.lit("active"))
                                .otherwise(F.lit("inactive")).alias("catalogue_status"))
    return (items.join(catalogue, "product_id", "left")
            .select("user_id", "product_id",
                    F.coalesce("catalogue_status", F.lit("unknown")).alias("catalogue_status")))


def batches(read: Read, config: Config, previous: Previous, as_of: datetime) -> list[Batch]:
    recommendations, products = read(DATASET), read("silver.products")
    if recommendations is None:
        return []
    found = [Batch(DATASET, recommendations, tuple(key_checks(DATASET, "user_id")))]
    if products is not None:
        found.append(Batch(f"{DATASET}.items", recommended_products(recommendations, products), (
            Check(f"{DATASET}.products_known_and_active", "critical",
                  gxe.ExpectColumnValuesToBeInSet(column="catalogue_status", value_set=["active"])),)))
    return found
