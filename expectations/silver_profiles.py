"""silver.profiles: one row per user id; watched columns do not go blank."""

from __future__ import annotations

from datetime import datetime

from expectations import Batch, Previous, Read
from expectations.common import key_checks, null_share_checks
from pipelines.config import Config

DATASET = "silver.profiles"


def batches(read: Read, config: Config, previous: Previous, as_of: datetime) -> list[Batch]:
    profiles = read(DATASET)
    if profiles is None:
        return []
    watched = config.quality.watched_columns.get(DATASET, ())
    return [Batch(DATASET, profiles, (*key_checks(DATASET, "user_id"), *null_share_checks(
        DATASET, profiles, watched, previous, config.quality.max_null_share_increase)))]
