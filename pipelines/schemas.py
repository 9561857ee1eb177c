"""Schemas of the Delta tables Tailor writes (DESIGN.md, "Tables")."""

from pyspark.sql.types import (
    ArrayType,
    BinaryType,
    BooleanType,
    DateType,
    DoubleType,
    IntegerType,
    LongType,
    MapType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

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

# Which batch of which streaming query a metrics row is about.
_STREAMING_BATCH = [
    StructField("query_name", StringType(), False),
    StructField("query_id", StringType(), False),
    StructField("run_id", StringType(), False),
    StructField("batch_id", LongType(), False),
    StructField("batch_timestamp", TimestampType(), False),
]

INGEST_METRICS = StructType([
    *_STREAMING_BATCH,
    StructField("input_rows", LongType(), False),
    StructField("valid_rows", LongType(), False),
    StructField("quarantined_rows", LongType(), False),
    StructField("quarantined_by_code", MapType(StringType(), LongType()), False),
    StructField("duplicate_rows", LongType(), False),
    StructField("tombstones", LongType(), False),
    StructField("batch_duration_ms", LongType(), False),
    StructField("max_event_time_lag_s", DoubleType(), True),
    StructField("source_offsets", StringType(), True),
    # Last: a table from before they existed gains them at its end (add_missing_columns).
    StructField("crm_truncates", LongType(), True),        # counted and logged: no profile is deleted
    StructField("crm_schema_changes", LongType(), True),
])

BRONZE_EVENTS_COLUMNS = [field.name for field in BRONZE_EVENTS]
QUARANTINE_COLUMNS = [field.name for field in QUARANTINE]

# ---- profiles -------------------------------------------------------------------------

# Where a change sits in the order every profile write respects: event time first (the one
# clock CRM and first-party updates share), then the CRM's log position, then event_id.
SEQUENCE = StructType([
    StructField("ts_ms", LongType(), True),
    StructField("position", StringType(), True),   # pipelines.ingest.crm.position_sort: text in log order
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
    "first_name": ("first_name_encrypted", "first_name_key_id"),
    "last_name": ("last_name_encrypted", "last_name_key_id"),
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
    StructField("first_name_encrypted", BinaryType(), True),
    StructField("first_name_key_id", StringType(), True),
    StructField("last_name_encrypted", BinaryType(), True),
    StructField("last_name_key_id", StringType(), True),
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


# What `profiles.history_columns` may name -> (the register, the columns history keeps of
# it). A name is kept as silver.profiles keeps it: encrypted, with its key id.
HISTORY_TRACKABLE = {
    "email_hash": ("email", ("email_hash",)),
    "first_name": ("first_name", PERSON_REGISTERS["first_name"]),
    "last_name": ("last_name", PERSON_REGISTERS["last_name"]),
    "country": ("country", ("country",)),
    "locale": ("locale", ("locale",)),
}


def profiles_history_schema(tracked: tuple[str, ...]) -> StructType:
    return StructType([
        StructField("user_id", StringType(), False),
        StructField("valid_from", TimestampType(), False),
        StructField("valid_to", TimestampType(), True),
        StructField("is_current", BooleanType(), False),
        *[StructField(column, PROFILE_VALUE_TYPES[column], True)
          for name in tracked for column in HISTORY_TRACKABLE[name][1]],
        StructField("_sequence", SEQUENCE, False),      # the change that opened this version
        StructField("_field_sequences", StructType([StructField(name, SEQUENCE, True) for name in tracked]), True),
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


# ---- behaviour features -----------------------------------------------------------------

INTERACTION_ITEM = StructType([
    StructField("product_id", StringType(), True),
    StructField("quantity", IntegerType(), True),
    StructField("unit_price", DoubleType(), True),
])

INTERACTIONS = StructType([
    StructField("event_id", StringType(), False),
    StructField("user_id", StringType(), False),
    StructField("event_type", StringType(), False),
    StructField("occurred_at", TimestampType(), False),
    StructField("event_date", DateType(), False),
    StructField("source", StringType(), False),
    StructField("session_id", StringType(), True),
    StructField("product_id", StringType(), True),         # product views and cart changes
    StructField("quantity", IntegerType(), True),
    StructField("unit_price", DoubleType(), True),          # a cart line's price, a viewed product's price
    StructField("currency", StringType(), True),
    StructField("cart_id", StringType(), True),
    StructField("order_id", StringType(), True),
    StructField("items", ArrayType(INTERACTION_ITEM), True),  # purchase lines
    StructField("order_total", DoubleType(), True),         # negative for a cancellation
    StructField("is_cancellation", BooleanType(), True),
    StructField("campaign_id", StringType(), True),
    StructField("message_id", StringType(), True),
    StructField("ingested_at", TimestampType(), False),
])

# silver.products as DESIGN.md lists it; build_features reads product_id -> category.
PRODUCTS = StructType([
    StructField("product_id", StringType(), False),
    StructField("title", StringType(), True),
    StructField("category", StringType(), True),
    StructField("price", DoubleType(), True),
    StructField("currency", StringType(), True),
    StructField("image_url", StringType(), True),
    StructField("url", StringType(), True),
    StructField("in_stock", BooleanType(), True),
    StructField("active", BooleanType(), True),
    StructField("updated_at", TimestampType(), True),
])

# gold.recommendations: one row per person, what tailor score chose for them.
# Delta enforces no NOT NULL inside an array: the job fills every field.
RECOMMENDED_ITEM = StructType([
    StructField("product_id", StringType(), True),
    StructField("rank", IntegerType(), True),
    StructField("score", DoubleType(), True),
    StructField("reason", StringType(), True),    # buy_again, because_you_viewed, ..., popular_in_segment
])
RECOMMENDATIONS = StructType([
    StructField("user_id", StringType(), False),
    StructField("items", ArrayType(RECOMMENDED_ITEM), False),
    StructField("fallback", StringType(), True),  # null: personal; no_consent | cold_start
    StructField("model_name", StringType(), False),
    StructField("model_version", StringType(), False),
    StructField("scored_at", TimestampType(), False),
])

CART_ITEM = StructType([
    StructField("product_id", StringType(), True),
    StructField("quantity", LongType(), True),
    StructField("unit_price", DoubleType(), True),
    StructField("currency", StringType(), True),
    StructField("added_at", TimestampType(), True),
])

# Columns gold.user_features holds after the segment rules ran: the rules cannot refer to them.
SEGMENT_OUTPUT_COLUMNS = ("segments", "primary_segment", "best_send_hour", "send_hour_source")


def user_features_schema(windows_days: tuple[int, ...], rate_window_days: int) -> StructType:
    """gold.user_features: one row per user; the windowed columns follow the config."""
    windowed = []
    for days in windows_days:
        windowed += [StructField(f"views_{days}d", LongType(), False),
                     StructField(f"carts_{days}d", LongType(), False),
                     StructField(f"purchases_{days}d", LongType(), False),
                     StructField(f"revenue_{days}d", DoubleType(), False)]
    rate = rate_window_days
    return StructType([
        StructField("user_id", StringType(), False),
        StructField("features_as_of", TimestampType(), False),
        StructField("first_seen_at", TimestampType(), True),
        StructField("last_seen_at", TimestampType(), True),
        StructField("days_since_first_seen", IntegerType(), True),
        StructField("days_since_last_seen", IntegerType(), True),
        StructField("first_purchase_at", TimestampType(), True),
        StructField("last_purchase_at", TimestampType(), True),
        StructField("recency_days", IntegerType(), True),
        StructField("frequency", LongType(), False),
        StructField("monetary", DoubleType(), False),
        StructField("r_score", IntegerType(), True),
        StructField("f_score", IntegerType(), True),
        StructField("m_score", IntegerType(), True),
        StructField("rfm_cell", StringType(), True),
        *windowed,
        StructField("top_categories", ArrayType(StringType()), False),
        StructField(f"emails_delivered_{rate}d", LongType(), False),
        StructField(f"open_rate_{rate}d", DoubleType(), True),
        StructField(f"click_rate_{rate}d", DoubleType(), True),
        StructField("engagement_score", DoubleType(), False),
        StructField("cart_state", StringType(), False),     # empty | active | abandoned
        StructField("cart_items", ArrayType(CART_ITEM), False),
        StructField("cart_value", DoubleType(), False),
        StructField("cart_updated_at", TimestampType(), True),
        StructField("open_hour_counts", ArrayType(IntegerType()), False),   # 24 UTC hours
        StructField("lifecycle_stage", StringType(), False),  # prospect | new | active | at_risk | lapsed
        StructField("segments", ArrayType(StringType()), False),
        StructField("primary_segment", StringType(), False),
        StructField("best_send_hour", IntegerType(), False),
        StructField("send_hour_source", StringType(), False),  # personal | segment | everyone | default
    ])


_PRICE = StructType([StructField("amount", DoubleType(), True), StructField("currency", StringType(), True)])
CONTENT_PRODUCT = StructType([
    StructField("product_id", StringType(), True),
    StructField("title", StringType(), True),
    StructField("price", _PRICE, True),
    StructField("image_url", StringType(), True),
    StructField("url", StringType(), True),
    StructField("reason", StringType(), True),
])
CONTENT_CART_LINE = StructType([
    StructField("product_id", StringType(), True),
    StructField("title", StringType(), True),
    StructField("quantity", LongType(), True),
    StructField("price", _PRICE, True),
    StructField("image_url", StringType(), True),
    StructField("url", StringType(), True),
])
# DESIGN.md "The content row": the fields every served row carries, user_id aside.
CONTENT_FIELDS = [
    StructField("model", StructType([StructField("name", StringType(), True),
                                     StructField("version", StringType(), True)]), True),
    StructField("fallback", StringType(), True),      # null: personal; no_consent | cold_start | holdout | stale
    StructField("locale", StringType(), True),
    StructField("greeting", StructType([StructField("first_name", StringType(), True),
                                        StructField("text", StringType(), True)]), True),
    StructField("segment", StringType(), True),
    StructField("send_hour_utc", IntegerType(), True),
    StructField("hero", StructType([StructField("offer_id", StringType(), True),
                                    StructField("headline", StringType(), True),
                                    StructField("url", StringType(), True)]), True),
    StructField("products", ArrayType(CONTENT_PRODUCT), True),
    StructField("cart", ArrayType(CONTENT_CART_LINE), True),
]
_VERSIONING = [
    StructField("content_version", StringType(), False),   # <generated_at>/<table version that wrote it>
    StructField("generated_at", TimestampType(), False),
    StructField("content_hash", StringType(), False),      # SHA-256 of the content: unchanged rows keep their version
]

EMAIL_CONTENT = StructType([
    StructField("user_id", StringType(), False),
    StructField("status", StringType(), False),             # published | suppressed (no email consent: no content)
    StructField("email_consent_at", TimestampType(), True),  # when the current email consent status was set
    *CONTENT_FIELDS,
    *_VERSIONING,
])

CONTENT_DEFAULTS = StructType([
    StructField("key", StringType(), False),                # segment:<segment>:<locale> | global:<locale>
    *CONTENT_FIELDS,
    *_VERSIONING,
])

USER_TRAITS = StructType([
    StructField("user_id", StringType(), False),
    StructField("segments", ArrayType(StringType()), True),
    StructField("primary_segment", StringType(), True),
    StructField("lifecycle_stage", StringType(), True),
    StructField("rfm_cell", StringType(), True),
    StructField("engagement_score", DoubleType(), True),
    StructField("best_send_hour", IntegerType(), True),
    StructField("cart_state", StringType(), True),
    StructField("cart_value", DoubleType(), True),
    StructField("top_categories", ArrayType(StringType()), True),
    StructField("in_holdout", BooleanType(), False),
    StructField("features_as_of", TimestampType(), True),
    *_VERSIONING,
])

HOLDOUT_ASSIGNMENTS = StructType([
    StructField("user_id", StringType(), False),
    StructField("salt_id", StringType(), False),            # SHA-256 of holdout.salt, first 16 hex digits
    StructField("share", DoubleType(), False),
    StructField("bucket", DoubleType(), False),
    StructField("in_holdout", BooleanType(), False),
    StructField("assigned_on", DateType(), False),          # since when this person is in (or out of) the group
])

# One row per batch of every streaming query (pipelines.runtime.progress): the dashboard
# plots its throughput and batch duration; state size and watermark lag are kept for queries
# with state (none of Tailor's own today).
STREAMING_PROGRESS = StructType([
    *_STREAMING_BATCH,
    StructField("input_rows", LongType(), False),
    StructField("input_rows_per_second", DoubleType(), False),
    StructField("processed_rows_per_second", DoubleType(), False),
    StructField("batch_duration_ms", LongType(), False),
    StructField("state_rows", LongType(), False),
    StructField("watermark_lag_s", DoubleType(), True),     # trigger time - watermark, for queries with one
])

# One row per run of a job that started Spark (jobs/_common.entry_point): what ran, how
# long, and how it ended, for the dashboard and `tailor check-freshness` (the last publish).
JOB_RUNS = StructType([
    StructField("run_id", StringType(), False),
    StructField("job", StringType(), False),                # the command, e.g. ingest_events, publish_content
    StructField("env", StringType(), False),
    StructField("started_at", TimestampType(), False),
    StructField("finished_at", TimestampType(), False),
    StructField("duration_s", DoubleType(), False),
    StructField("outcome", StringType(), False),            # succeeded | failed | interrupted
    StructField("exit_code", IntegerType(), False),
    StructField("error", StringType(), True),               # the one-line message, or the exception's class
])

# One row per headline number of each `tailor report quality` (metric: profiles,
# completeness.country, segment_share.loyal, ...): the next report's "since the last report".
QUALITY_REPORT = StructType([
    StructField("report_id", StringType(), False),
    StructField("reported_at", TimestampType(), False),
    StructField("as_of", TimestampType(), False),           # what freshness and idle days were measured against
    StructField("metric", StringType(), False),
    StructField("value", DoubleType(), False),
])

QUALITY_RESULTS = StructType([
    StructField("run_id", StringType(), False),
    StructField("run_at", TimestampType(), False),
    StructField("mode", StringType(), False),               # enabled | dry_run
    StructField("dataset", StringType(), False),            # the table checked, e.g. silver.profiles
    StructField("table_version", LongType(), True),         # the Delta version the suite read
    StructField("expectation", StringType(), False),        # a stable name, e.g. silver.profiles.user_id_unique
    StructField("expectation_type", StringType(), False),   # Great Expectations' own: expect_column_values_to_be_unique
    StructField("severity", StringType(), False),           # critical | warning
    StructField("success", BooleanType(), False),
    StructField("observed_value", StringType(), True),      # JSON: what the expectation measured
    # The other tables the suite read (the catalogue, for recommendations), at the versions
    # it read them: a result holds only while they stay at those versions.
    StructField("input_versions", MapType(StringType(), LongType()), True),
])
