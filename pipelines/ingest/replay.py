"""Re-feed quarantined records through the same validation path as ingest.

An operator repairs a record by writing the corrected bytes into `fixed_raw` (for example
with a Delta UPDATE); `tailor replay-quarantine` then validates `fixed_raw` exactly as the
ingest job would. After a contract change (say, a newly registered schema_version), the
original bytes can be re-tried as they are with `--include-unfixed`. Each record is
replayed once: its row gets `replayed_at` and an outcome, and is not picked again unless
an operator clears `replayed_at`.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from pipelines.config import CrmTableConfig
from pipelines.ingest.transforms import is_valid
from pipelines.ingest.validation import (
    RAW_COLUMNS,
    SOURCE_COORDINATES,
    add_ingest_columns,
    validate_crm_changes,
    validate_events,
)

REPLAYABLE_STREAMS = ("events", "crm")


def replay_candidates(quarantine: DataFrame, include_unfixed: bool) -> DataFrame:
    # A catalogue row (stream 'catalog') is fixed in its feed and loaded again, not replayed.
    pending = quarantine.where(F.col("replayed_at").isNull() & F.col("stream").isin(*REPLAYABLE_STREAMS))
    if not include_unfixed:
        pending = pending.where(F.col("fixed_raw").isNotNull())
    return pending.withColumn("raw", F.coalesce("fixed_raw", "raw"))


def revalidate(candidates: DataFrame, crm_tables: dict[str, CrmTableConfig],
               now: Column | None = None) -> DataFrame:
    """The candidates through the ingest validators, with the quarantine_id of each row.

    The validators keep only the raw columns, so the id comes back by the coordinates,
    which are unique in the quarantine."""
    events = validate_events(candidates.where(F.col("stream") == "events").select(*RAW_COLUMNS), now)
    crm = validate_crm_changes(candidates.where(F.col("stream") == "crm").select(*RAW_COLUMNS), now, crm_tables)
    ids = candidates.select(*SOURCE_COORDINATES, "quarantine_id")
    return add_ingest_columns(events.unionByName(crm)).join(ids, list(SOURCE_COORDINATES), "inner")


def replay_outcomes(validated: DataFrame, bronze_event_ids: DataFrame) -> DataFrame:
    """quarantine_id, outcome, and whether the row should go to bronze.

    A record that is valid now but whose event_id bronze already holds is a duplicate;
    it is marked, not landed twice."""
    known = bronze_event_ids.select(F.col("event_id").alias("_known_id")).distinct()
    joined = validated.join(known, validated.event_id == known._known_id, "left")
    outcome = (F.when(F.col("control").isNotNull(), F.concat(F.lit("not_data:"), F.col("control")))
               .when(~is_valid(), F.concat(F.lit("still_invalid:"), F.col("error_code"), F.lit(": "),
                                           F.col("error_message")))
               .when(F.col("_known_id").isNotNull(), F.lit("already_in_bronze"))
               .otherwise(F.lit("landed")))
    return joined.withColumn("replay_outcome", outcome).drop("_known_id")
