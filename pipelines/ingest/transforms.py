"""The ingest flow as pure functions: validate both raw streams, drop producer retries,
observe what happened, and split each micro-batch into bronze rows and quarantine rows."""

from __future__ import annotations

from collections.abc import Callable

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from pipelines.config import CrmTableConfig
from pipelines.contracts.events import ERROR_CODES
from pipelines.ingest.validation import SOURCE_COORDINATES, add_ingest_columns, validate_crm_changes, validate_events
from pipelines.schemas import BRONZE_EVENTS_COLUMNS, QUARANTINE_COLUMNS

OBSERVED_INPUT = "ingest_input"
OBSERVED_OUTCOME = "ingest_outcome"


def validate_streams(crm_tables: dict[str, CrmTableConfig]) -> Callable[[dict[str, DataFrame]], DataFrame]:
    def transform(streams: dict[str, DataFrame]) -> DataFrame:
        return streams["events"].transform(validate_events).unionByName(
            validate_crm_changes(streams["crm"], tables=crm_tables))

    return transform


def is_valid() -> Column:
    """Data that passed validation: not quarantined, and not a control record (a Kafka
    tombstone, a CRM truncate or schema change)."""
    return F.col("error_code").isNull() & F.col("control").isNull()


def coordinates_key() -> Column:
    """Where a record sits in its source, as one string: unique per record read."""
    return F.concat_ws("|", *SOURCE_COORDINATES)


def dedup_key(salt: str) -> Column:
    """A valid event is known by its event_id; anything else by its source coordinates,
    so a broken record is never mistaken for a retry of another. Kept in the dedup state
    as a salted SHA-256: a CRM event_id names the person, and the state must not hold it
    after an erasure (a keyed hash in the JVM, where an HMAC per record in Python would
    cost the ingest its speed; `pii.dedup_salt` says why the salt may sit in the plan)."""
    key = F.when(is_valid(), F.concat(F.lit("e|"), F.col("event_id"))).otherwise(
        F.concat(F.lit("c|"), coordinates_key()))
    return F.sha2(F.concat(F.lit(salt), key), 256)


def drop_retried_duplicates(dedup_window: str, salt: str) -> Callable[[DataFrame], DataFrame]:
    """Drop records whose event_id was seen within `dedup_window` of ingest time.

    The watermark is on ingest time, not event time: retries arrive close together in
    ingest time whatever their event time, and a late event must never be dropped here."""

    def transform(validated: DataFrame) -> DataFrame:
        return (validated.transform(add_ingest_columns)
                .observe(OBSERVED_INPUT, F.count(F.lit(1)).alias("rows"))
                # Only the quarantine keeps a record's bytes: the rest need not travel
                # through the dedup's shuffle and the batch's cache.
                .withColumn("raw", F.when(F.col("error_code").isNotNull(), F.col("raw")))
                .withColumn("_dedup_key", dedup_key(salt))
                .withWatermark("ingested_at", dedup_window)
                .dropDuplicatesWithinWatermark(["_dedup_key"])
                .drop("_dedup_key"))

    return transform


def observe_outcome(deduplicated: DataFrame) -> DataFrame:
    lag = F.max(F.when(is_valid(), F.unix_timestamp("ingested_at") - F.unix_timestamp("occurred_at")))
    counts = [F.count_if(F.col("error_code") == code).alias(f"quarantined_{code}") for code in ERROR_CODES]
    return deduplicated.observe(
        OBSERVED_OUTCOME,
        F.count(F.lit(1)).alias("rows"),
        F.count_if(is_valid()).alias("valid"),
        F.count_if(F.col("error_code").isNotNull()).alias("quarantined"),
        F.count_if(F.col("control") == "tombstone").alias("tombstones"),
        F.count_if(F.col("control") == "truncate").alias("crm_truncates"),
        F.count_if(F.col("control") == "schema_change").alias("crm_schema_changes"),
        lag.cast("double").alias("max_event_time_lag_s"),
        *counts,
    )


def bronze_rows(batch: DataFrame) -> DataFrame:
    return batch.where(is_valid()).select(*BRONZE_EVENTS_COLUMNS)


def quarantine_rows(batch: DataFrame) -> DataFrame:
    return (batch.where(F.col("error_code").isNotNull())
            .withColumn("quarantine_id", F.sha2(coordinates_key(), 256))
            .withColumn("fixed_raw", F.lit(None).cast("binary"))
            .withColumn("replayed_at", F.lit(None).cast("timestamp"))
            .withColumn("replay_outcome", F.lit(None).cast("string"))
            .select(*QUARANTINE_COLUMNS))
