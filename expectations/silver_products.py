"""silver.products: one row per product id, prices not negative, watched columns do not
go blank."""

from __future__ import annotations

from datetime import datetime

import great_expectations.expectations as gxe

from expectations import Batch, Check, Previous, Read
from expectations.common import key_checks, null_share_checks
from pipelines.config import Config

DATASET = "silver.products"


def batches(read: Read, config: Config, previous: Previous, as_of: datetime) -> list[Batch]:
    products = read(DATASET)
    if products is None:
        return []
    watched = config.quality.watched_columns.get(DATASET, ())
    return [Batch(DATASET, products, (
        *key_checks(DATASET, "product_id"),
        Check(f"{DATASET}.price_not_negative", "warning",
              gxe.ExpectColumnValuesToBeBetween(column="price", min_value=0)),
        *null_share_checks(DATASET, products, watched, previous, config.quality.max_null_share_increase)))]
