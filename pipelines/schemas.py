"""Schemas of the Delta tables Tailor writes (DESIGN.md, "Tables")."""

from pyspark.sql.types import (ArrayType, BinaryType, BooleanType, DateType, DoubleType, IntegerType,
                               LongType, MapType,
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

# ---- profiles -------------------------------------------------------------------------

# Where a change sits in the order every profile write respects: event time first (the one
# clock CRM and first-party updates share), then the CRM's log position, then event_id.
SEQUENCE = StructType([
    StructField("ts_ms", LongType(), True),
    StructField("lsn", LongType(), True),
    StructField("event_id", StringType(), True),
])

CONSENT = StructType([
    StructField("status", StringType(), True),          # granted | revoked
    StructField("granted_at", TimestampType(), True),   # the latest grant
    StructField("revoked_at", TimestampType(), True),   # the latest revocation
    StructField("source", StringType(), True),
    StructField("actor", StringType(), True),
    StructField("updated_at", TimestampType(), True),   # when the current status was set
])

# Each independently updatable part of a profile ("register") and the columns it sets.
# A change sets some registers; each register keeps the sequence of the change that set
# it last, so partial and out-of-order updates end in the same state whatever the order.
PERSON_REGISTERS = {
    "email": ("email_hash", "email_encrypted", "email_key_id"),
    "phone": ("phone_encrypted", "phone_key_id"),
    "first_name": ("first_name",),
    "last_name": ("last_name",),
    "country": ("country",),
    "locale": ("locale",),
}
PREFERENCE_REGISTERS = {
    "topics": ("topics",),
    "frequency_cap_per_week": ("frequency_cap_per_week",),
    "language": ("language",),
    "preferred_send_hour": ("preferred_send_hour",),
}
CONSENT_REGISTERS = {f"consent_{purpose}": (f"consent_{purpose}",)
                     for purpose in ("email_marketing", "personalization", "profiling")}
REGISTERS = {**PERSON_REGISTERS, **PREFERENCE_REGISTERS, **CONSENT_REGISTERS}

_PROFILE_VALUES = [
    StructField("email_hash", StringType(), True),
    StructField("email_encrypted", BinaryType(), True),
    StructField("email_key_id", StringType(), True),
    StructField("phone_encrypted", BinaryType(), True),
    StructField("phone_key_id", StringType(), True),
    StructField("first_name", StringType(), True),
    StructField("last_name", StringType(), True),
    StructField("country", StringType(), True),
    StructField("locale", StringType(), True),
    StructField("topics", ArrayType(StringType()), True),
    StructField("frequency_cap_per_week", IntegerType(), True),
    StructField("language", StringType(), True),
    StructField("preferred_send_hour", IntegerType(), True),
    *[StructField(column, CONSENT, True) for (column,) in CONSENT_REGISTERS.values()],
]
PROFILE_VALUE_TYPES = {field.name: field.dataType for field in _PROFILE_VALUES}

PROFILES = StructType([
    StructField("user_id", StringType(), False),
    *_PROFILE_VALUES,
    StructField("first_seen_at", TimestampType(), True),
    StructField("updated_at", TimestampType(), True),   # event time of the newest change applied
    StructField("_sequence", SEQUENCE, True),           # the newest change applied
    StructField("_field_sequences", StructType([StructField(name, SEQUENCE, True) for name in REGISTERS]), True),
])
# Delta keeps min/max statistics in its log, which VACUUM never removes: columns that hold
# a person's name or address in clear stay out of them.
PROFILES_STATS_COLUMNS = ("user_id", "email_hash", "country", "locale", "updated_at")


def profiles_history_schema(tracked: tuple[str, ...]) -> StructType:
    return StructType([
        StructField("user_id", StringType(), False),
        StructField("valid_from", TimestampType(), False),
        StructField("valid_to", TimestampType(), True),
        StructField("is_current", BooleanType(), False),
        *[StructField(column, PROFILE_VALUE_TYPES[column], True) for column in tracked],
        StructField("_sequence", SEQUENCE, False),      # the change that opened this version
        StructField("_field_sequences", StructType([StructField(column, SEQUENCE, True) for column in tracked]), True),
    ])


PROFILE_TOMBSTONES = StructType([
    StructField("subject_hash", StringType(), False),   # keyed hash of the user_id, never the id
    StructField("deleted_sequence", SEQUENCE, False),   # changes at or before this are dropped
    StructField("erased_at", TimestampType(), False),
])

DUPLICATE_PROFILES = StructType([
    StructField("email_hash", StringType(), False),
    StructField("user_ids", ArrayType(StringType()), False),
    StructField("profile_count", LongType(), False),
])

AUDIT_LOG = StructType([
    StructField("audit_id", StringType(), False),       # event_ref:field
    StructField("subject_hash", StringType(), False),   # keyed hash of the user_id: no clear-text PII
    StructField("action", StringType(), False),         # consent | preference | erasure
    StructField("field", StringType(), True),
    StructField("before", StringType(), True),          # JSON
    StructField("after", StringType(), True),           # JSON
    StructField("outcome", StringType(), False),        # applied | superseded (a newer change won)
    StructField("actor", StringType(), True),
    StructField("source", StringType(), False),
    StructField("event_ref", StringType(), False),      # keyed hash of the event_id, which may name the user
    StructField("occurred_at", TimestampType(), False),
    StructField("recorded_at", TimestampType(), False),
])
