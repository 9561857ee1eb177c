"""The writes of build_features: a micro-batch of behaviour events into silver.interactions,
then the touched users' rows of gold.user_features; and the daily refresh of every row.

Each write of a batch carries the query's txnAppId (one per step) with the batch id, so a
batch replayed after a crash skips what it had already committed, and is retried when it
loses a commit race. The refresh needs no txnAppId: it recomputes rows from the tables,
so running it twice leaves the same rows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, date, datetime

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from pipelines.config import Config
from pipelines.errors import ConfigError
from pipelines.features.segments import SegmentRules, load_segment_rules
from pipelines.features.transforms import (
    COLUMN_CHOICES,
    feature_schema,
    one_row_per_event,
    rule_columns,
    score_against_population,
    user_behaviour,
    without_erased,
)
from pipelines.pii import PiiKeys
from pipelines.profiles.transforms import erased_users
from pipelines.runtime.delta_tables import delta_table, ensure_table, read_table, retry_on_conflict, table_exists
from pipelines.runtime.streaming import BatchSteps
from pipelines.schemas import INTERACTIONS, PRODUCTS, PROFILE_TOMBSTONES

log = logging.getLogger("tailor.features")


def load_feature_rules(config: Config) -> SegmentRules:
    """The segment rules, checked against gold.user_features' columns (before Spark starts)."""
    settings = config.features
    return load_segment_rules(config.conf_file(settings.segments_file), rule_columns(settings), COLUMN_CHOICES)


def ensure_feature_tables(spark: SparkSession, config: Config) -> None:
    """Create the tables when missing. An existing gold.user_features must have the columns
    the configured windows name: a MERGE would otherwise fail mid-batch, or leave old
    windows' columns behind, never updated again."""
    # The change feed tells tailor score whose interactions changed since its last run.
    ensure_table(spark, config.table("silver.interactions"), INTERACTIONS, partition_by=("event_date",),
                 properties={"delta.enableChangeDataFeed": "true"})
    features = config.table("gold.user_features")
    expected = feature_schema(config.features)
    ensure_table(spark, features, expected)
    present = read_table(spark, features).columns
    missing = [name for name in expected.fieldNames() if name not in present]
    extra = [name for name in present if name not in expected.fieldNames()]
    if missing or extra:
        raise ConfigError(
            f"features.windows_days / features.rate_window_days do not match gold.user_features at {features}: "
            f"the table lacks {missing or 'nothing'} and has {extra or 'nothing'} besides; keep the old windows, "
            "or move the table aside and run `tailor build-features --refresh-windows` to rebuild it")


def as_of_for(config: Config) -> datetime:
    """The moment windows end: features.as_of when set, else now."""
    return config.features.as_of or datetime.now(UTC)


def _optional(spark: SparkSession, config: Config, name: str, schema) -> DataFrame:
    table = config.table(name)
    return read_table(spark, table) if table_exists(spark, table) else spark.createDataFrame([], schema)


def lookback(spark: SparkSession, config: Config, as_of: datetime) -> DataFrame:
    """silver.interactions in the lookback window, read from its date partitions only."""
    first_day = date.fromordinal(as_of.astimezone(UTC).date().toordinal() - config.features.lookback_days)
    return read_table(spark, config.table("silver.interactions")).where(F.col("event_date") >= F.lit(first_day))


def recompute_users(spark: SparkSession, config: Config, rules: SegmentRules, users: DataFrame,
                    as_of: datetime) -> DataFrame:
    """gold.user_features rows for `users` (user_id), from their interactions as of `as_of`."""
    settings = config.features
    history = lookback(spark, config, as_of)
    products = _optional(spark, config, "silver.products", PRODUCTS)
    stored = read_table(spark, config.table("gold.user_features"))
    touched = user_behaviour(settings, as_of)(
        users, history, products, stored.join(users, "user_id", "left_semi")).localCheckpoint()
    # Checkpointed: the MERGE that writes these rows changes the table they were read from.
    return score_against_population(settings, rules, as_of)(touched, stored).localCheckpoint()


def merge_features(spark: SparkSession, config: Config, rows: DataFrame) -> None:
    """Upsert rows by user_id; a row computed as of an older moment never replaces a newer one."""
    (delta_table(spark, config.table("gold.user_features")).alias("t")
     .merge(rows.alias("s"), "t.user_id = s.user_id")
     .whenMatchedUpdateAll(condition=F.col("s.features_as_of") >= F.col("t.features_as_of"))
     .whenNotMatchedInsertAll()
     .execute())


class FeaturesBatchWriter:
    """foreachBatch function of build_features: `batch` holds the interactions bronze got."""

    def __init__(self, config: Config, keys: PiiKeys, rules: SegmentRules, app_id: str,
                 on_conflict: Callable[[int], None] | None = None):
        self.config = config
        self.keys = keys
        self.rules = rules
        self.steps = BatchSteps(app_id, config.features.conflict_retries, on_conflict)

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        spark = batch.sparkSession
        tombstones = _optional(spark, self.config, "silver.profile_tombstones", PROFILE_TOMBSTONES)
        # One row per event id (a redelivery within the batch; across batches the insert's
        # MERGE skips it), the same one when a crashed batch is run again.
        events = batch.transform(one_row_per_event).localCheckpoint().transform(
            without_erased(tombstones, self.keys)).localCheckpoint()
        if events.isEmpty():
            return
        self.steps.run(spark, "interactions", batch_id, lambda: self._insert_interactions(spark, events))
        as_of = as_of_for(self.config)
        rows = recompute_users(spark, self.config, self.rules, events.select("user_id").distinct(), as_of)
        self.steps.run(spark, "features", batch_id, lambda: merge_features(spark, self.config, rows))
        log.info("batch %d: %d users' features as of %s", batch_id, rows.count(), as_of.isoformat())

    def _insert_interactions(self, spark: SparkSession, events: DataFrame) -> None:
        """Insert the events not stored yet: an event id seen before (a restart from an
        empty checkpoint re-reads bronze) is skipped. The dates in the condition let
        Delta read only the partitions this batch falls in."""
        dates = sorted(row.event_date.isoformat() for row in events.select("event_date").distinct().collect())
        in_dates = ", ".join(f"DATE'{day}'" for day in dates)
        (delta_table(spark, self.config.table("silver.interactions")).alias("t")
         .merge(events.alias("s"), f"t.event_date IN ({in_dates}) AND t.event_date = s.event_date "
                                   "AND t.event_id = s.event_id")
         .whenNotMatchedInsertAll()
         .execute())


def sweep_erased(spark: SparkSession, config: Config, keys: PiiKeys, users: DataFrame) -> int:
    """Remove what a features batch wrote back about an erased person: a batch that read a
    person's last events while merge_profiles was erasing them can commit after the purge
    (the tombstone is merge_profiles' last write). Their interactions up to the erasure go,
    and a gold row that predates it (recomputed afterwards from what is left). Returns the
    number of erased people found among `users`."""
    tombstones = config.table("silver.profile_tombstones")
    if not table_exists(spark, tombstones):
        return 0
    erased = erased_users(read_table(spark, tombstones), keys.hmac_key)(users).localCheckpoint()
    found = erased.count()
    if not found:
        return 0
    (delta_table(spark, config.table("silver.interactions")).alias("t")
     .merge(erased.alias("s"), "t.user_id = s.user_id AND t.occurred_at <= s.erased_through")
     .whenMatchedDelete().execute())
    (delta_table(spark, config.table("gold.user_features")).alias("t")
     .merge(erased.alias("s"), "t.user_id = s.user_id AND NOT (t.first_seen_at > s.erased_through)")
     .whenMatchedDelete().execute())
    return found


def refresh_windows(spark: SparkSession, config: Config, rules: SegmentRules, keys: PiiKeys,
                    as_of: datetime) -> int:
    """Recompute every user's row as of `as_of`: windows age, recency grows, quintiles and
    segment hours follow the whole population. Erasures are swept first. Returns the
    number of rows written."""
    settings = config.features

    def users() -> DataFrame:
        stored_users = read_table(spark, config.table("gold.user_features")).select("user_id")
        return stored_users.unionByName(lookback(spark, config, as_of).select("user_id")).distinct()

    swept = retry_on_conflict(lambda: sweep_erased(spark, config, keys, users()), "build_features erasure sweep",
                              settings.conflict_retries)
    if swept:
        log.info("refresh: removed rows written back about %d erased person(s) (ids not logged)", swept)

    def write() -> int:
        rows = recompute_users(spark, config, rules, users(), as_of)
        merge_features(spark, config, rows)
        return rows.count()

    return retry_on_conflict(write, "build_features refresh", settings.conflict_retries)
