"""The quality report's transforms: pure DataFrame -> DataFrame functions over the tables
`tailor report quality` reads (pipelines/monitoring/quality_report.py reads, records and
renders). Counts and shares only: no user id, email or name leaves them."""

from __future__ import annotations

from datetime import UTC, date, datetime

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from pipelines.schemas import CONSENT_REGISTERS, PERSON_REGISTERS, PREFERENCE_REGISTERS

# Idle-time buckets of a profile: (label, more than this many days idle); the last holds the rest.
IDLE_BUCKETS = (("up to 7 days", 0), ("8-30 days", 7), ("31-90 days", 30), ("91-180 days", 90),
                ("181-365 days", 180), ("over a year", 365))
NEVER_ACTIVE = "no activity recorded"


def _filled(column: str) -> Column:
    return F.col(column).isNotNull() & (F.length(F.trim(F.col(column))) > 0)


def profile_attribute_filled() -> dict[str, Column]:
    """attribute (a profile register) -> when a profile holds it. Email, phone and names
    are judged by what is stored of them (a keyed hash, a ciphertext: a blank name is
    stored as none), consent by its status."""
    filled = {"email": F.col("email_hash").isNotNull(),
              **{name: F.col(f"{name}_encrypted").isNotNull() for name in ("phone", "first_name", "last_name")}}
    filled |= {name: _filled(name) for name in PERSON_REGISTERS if name not in filled}
    filled |= {"topics": F.coalesce(F.size("topics") > 0, F.lit(False)),
               "frequency_cap_per_week": F.col("frequency_cap_per_week").isNotNull(),
               "language": _filled("language"),
               "preferred_send_hour": F.col("preferred_send_hour").isNotNull()}
    filled |= {name: F.col(f"{name}.status").isNotNull() for name in CONSENT_REGISTERS}
    assert set(filled) == {*PERSON_REGISTERS, *PREFERENCE_REGISTERS, *CONSENT_REGISTERS}, "a register is not judged"
    return filled


def completeness(profiles: DataFrame) -> DataFrame:
    """profiles -> (attribute, filled, profiles): how many profiles hold each attribute, in
    the registers' order."""
    filled = profile_attribute_filled()
    counts = profiles.agg(F.count(F.lit(1)).alias("_profiles"),
                          *[F.count_if(condition).alias(f"_{n}") for n, condition in enumerate(filled.values())])
    rows = F.array(*[F.struct(F.lit(name).alias("attribute"), F.lit(n).alias("position"),
                              F.col(f"_{n}").alias("filled")) for n, name in enumerate(filled)])
    return (counts.select(F.inline(rows), F.col("_profiles").alias("profiles"))
            .orderBy("position").select("attribute", "filled", "profiles"))


def shared_email_groups(profiles: DataFrame) -> DataFrame:
    """profiles -> (profiles_per_email, emails): how many email hashes are shared by 2, 3,
    ... profiles. A person with two profiles gets two of every email."""
    return (profiles.where(F.col("email_hash").isNotNull()).groupBy("email_hash").count()
            .where(F.col("count") > 1)
            .groupBy(F.col("count").alias("profiles_per_email")).agg(F.count(F.lit(1)).alias("emails"))
            .orderBy("profiles_per_email"))


def idle_days(profiles: DataFrame, features: DataFrame | None, as_of: datetime) -> DataFrame:
    """(user_id, idle_days): whole days since the profile last changed or its person last
    did something (gold.user_features.last_seen_at), whichever is later; null when neither
    is known."""
    activity = profiles.select("user_id", "updated_at")
    if features is not None:
        activity = activity.join(features.select("user_id", "last_seen_at"), "user_id", "left")
    else:
        activity = activity.withColumn("last_seen_at", F.lit(None).cast("timestamp"))
    last_active = F.greatest("updated_at", "last_seen_at")  # greatest() skips nulls
    seconds = F.lit(int(as_of.timestamp())) - F.unix_timestamp(last_active)
    return activity.select("user_id", F.floor(seconds / 86400).cast("int").alias("idle_days"))


def idle_histogram(idle: DataFrame, stale_after_days: int) -> DataFrame:
    """(user_id, idle_days) -> (bucket, profiles, stale) over IDLE_BUCKETS and NEVER_ACTIVE,
    every bucket present, in order; `stale` counts the bucket's profiles idle for
    stale_after_days or more (one pass gives both)."""
    bucket = F.when(F.col("idle_days").isNull(), F.lit(NEVER_ACTIVE))
    for label, above in reversed(IDLE_BUCKETS):  # the highest lower bound a profile passes
        bucket = bucket.when(F.col("idle_days") > above, F.lit(label))
    bucket = bucket.otherwise(F.lit(IDLE_BUCKETS[0][0]))  # a change dated after as_of counts as fresh
    counts = idle.groupBy(bucket.alias("bucket")).agg(
        F.count(F.lit(1)).alias("profiles"), F.count_if(F.col("idle_days") >= stale_after_days).alias("stale"))
    labels = [label for label, _ in IDLE_BUCKETS] + [NEVER_ACTIVE]
    order = idle.sparkSession.createDataFrame(list(enumerate(labels)), "position int, bucket string")
    return (order.join(counts, "bucket", "left").orderBy("position")
            .select("bucket", F.coalesce("profiles", F.lit(0)).alias("profiles"),
                    F.coalesce("stale", F.lit(0)).alias("stale")))


def quarantine_by_day(quarantine: DataFrame, since: date) -> DataFrame:
    """bronze.quarantine -> (day, error_code, records) of what was quarantined on or after
    `since` (a UTC day), by the UTC day it arrived."""
    start = datetime.combine(since, datetime.min.time(), tzinfo=UTC)
    # Days since the epoch: the UTC day, whatever the session's time zone.
    day = F.date_from_unix_date(F.floor(F.unix_timestamp("ingested_at") / 86400).cast("int"))
    return (quarantine.where(F.col("ingested_at") >= F.lit(start))  # a plain range: Delta skips older files
            .groupBy(day.alias("day"), "error_code").agg(F.count(F.lit(1)).alias("records"))
            .orderBy("day", "error_code"))


def segment_mix(features: DataFrame) -> DataFrame:
    """gold.user_features -> (segment, users) per primary segment, the largest first."""
    segment = F.coalesce("primary_segment", F.lit("(none)"))
    return (features.groupBy(segment.alias("segment")).agg(F.count(F.lit(1)).alias("users"))
            .orderBy(F.desc("users"), "segment"))
