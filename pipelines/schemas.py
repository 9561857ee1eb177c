"""Schemas of the Delta tables Tailor writes (DESIGN.md, "Tables")."""

from pyspark.sql.types import (BinaryType, DateType, DoubleType, IntegerType, LongType, MapType,
                               StringType, StructField, StructType, TimestampType)

_COORDINATES = [
    StructField("source_kind", StringType(), False),
    StructField("source_stream", StringType(), True),
    StructField("source_partition", StringType(), True),
    StructField("source_offset", StringType(), True),
    StructField("source_timestamp", TimestampType(), True),
]

BRONZE_EVENTS = StructType([
    StructField("event_id", StringType(), False),
    StructField("event_type", StringType(), False),
    StructField("schema_version", IntegerType(), False),
    StructField("user_id", StringType(), True),
    StructField("occurred_at", TimestampType(), False),
    StructField("source", StringType(), False),
    StructField("payload", StringType(), True),
    StructField("event_date", DateType(), False),
    *_COORDINATES,
    StructField("ingested_at", TimestampType(), False),
    StructField("contract_version", StringType(), False),
])

QUARANTINE = StructType([
    StructField("quarantine_id", StringType(), False),
    StructField("raw", BinaryType(), True),
    *_COORDINATES,
    StructField("stream", StringType(), False),          # events | crm: which validator applies
    StructField("error_code", StringType(), False),
    StructField("error_message", StringType(), False),
    StructField("ingested_at", TimestampType(), False),
    StructField("contract_version", StringType(), False),
    # Set by an operator who repairs a record; `tailor replay-quarantine` re-feeds it.
    StructField("fixed_raw", BinaryType(), True),
    StructField("replayed_at", TimestampType(), True),
    StructField("replay_outcome", StringType(), True),
])

INGEST_METRICS = StructType([
    StructField("query_name", StringType(), False),
    StructField("query_id", StringType(), False),
    StructField("run_id", StringType(), False),
    StructField("batch_id", LongType(), False),
    StructField("batch_timestamp", TimestampType(), False),
    StructField("input_rows", LongType(), False),
    StructField("valid_rows", LongType(), False),
    StructField("quarantined_rows", LongType(), False),
    StructField("quarantined_by_code", MapType(StringType(), LongType()), False),
    StructField("duplicate_rows", LongType(), False),
    StructField("tombstones", LongType(), False),
    StructField("batch_duration_ms", LongType(), False),
    StructField("max_event_time_lag_s", DoubleType(), True),
    StructField("source_offsets", StringType(), True),
])

BRONZE_EVENTS_COLUMNS = [field.name for field in BRONZE_EVENTS]
QUARANTINE_COLUMNS = [field.name for field in QUARANTINE]
