"""silver.interactions: one row per event id, each with a user."""

from __future__ import annotations

from datetime import datetime

import great_expectations.expectations as gxe

from expectations import Batch, Check, Previous, Read
from expectations.common import key_checks
from pipelines.config import Config

DATASET = "silver.interactions"


def batches(read: Read, config: Config, previous: Previous, as_of: datetime) -> list[Batch]:
    interactions = read(DATASET)
    if interactions is None:
        return []
    return [Batch(DATASET, interactions, (
        *key_checks(DATASET, "event_id"),
        Check(f"{DATASET}.user_id_not_null", "critical", gxe.ExpectColumnValuesToNotBeNull(column="user_id"))))]
