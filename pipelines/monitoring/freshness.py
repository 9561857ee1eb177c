"""Freshness and quarantine checks for `tailor check-freshness`: each is a threshold in
monitoring.* against what the jobs left behind, so a scheduler or an alert can run it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from pipelines.config import CHECKPOINTS, Config
from pipelines.monitoring.status import read_checkpoint, utc_from_micros
from pipelines.runtime.delta_tables import delta_table, read_table, table_exists

# Commits that change no content: maintenance, not a publish.
MAINTENANCE_OPERATIONS = ("OPTIMIZE", "VACUUM START", "VACUUM END", "REORG", "SET TBLPROPERTIES", "CLUSTER BY")


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    text: str


def _minutes(age: timedelta) -> str:
    minutes = age.total_seconds() / 60
    return f"{minutes:.0f} min" if minutes < 120 else f"{minutes / 60:.1f} h"


def query_checks(config: Config, now: datetime) -> list[Check]:
    checks = []
    for query, limit in config.monitoring.max_batch_age_minutes.items():
        last = read_checkpoint(config.checkpoint(CHECKPOINTS[query]))
        if last is None:
            checks.append(Check(query, False, f"{query} has never committed a batch"))
            continue
        age = now - datetime.fromisoformat(last["batch_at"].replace("Z", "+00:00"))
        checks.append(Check(query, age <= timedelta(minutes=limit),
                            f"{query} last batch {_minutes(age)} ago (limit {limit:g} min)"))
    return checks


def publish_check(spark: SparkSession, config: Config, now: datetime) -> Check:
    table = config.table("gold.email_content")
    limit = config.monitoring.max_publish_age_hours
    if not table_exists(spark, table):
        return Check("publish", False, "gold.email_content does not exist: nothing published")
    written = utc_from_micros(delta_table(spark, table).history()
                              .where(~F.col("operation").isin(*MAINTENANCE_OPERATIONS))
                              .agg(F.max(F.unix_micros("timestamp"))).first()[0])
    if written is None:
        return Check("publish", False, "gold.email_content has never been published to")
    age = now - written
    return Check("publish", age <= timedelta(hours=limit),
                 f"gold.email_content written {_minutes(age)} ago (limit {limit:g} h)")


def quarantine_check(spark: SparkSession, config: Config, now: datetime) -> Check:
    table = config.table("bronze.ingest_metrics")
    window = config.monitoring.window_hours
    limit = config.monitoring.max_quarantine_rate
    since = int((now - timedelta(hours=window)).timestamp() * 1_000_000)
    if not table_exists(spark, table):
        return Check("quarantine", True, f"no records ingested in {window:g} h")
    totals = (read_table(spark, table).where(F.unix_micros("batch_timestamp") >= since)
              .agg(F.sum("input_rows").alias("input"), F.sum("quarantined_rows").alias("quarantined")).first())
    if not totals.input:
        return Check("quarantine", True, f"no records ingested in {window:g} h")
    rate = totals.quarantined / totals.input
    return Check("quarantine", rate <= limit,
                 f"quarantine rate {rate:.1%} of {totals.input} records in {window:g} h (limit {limit:.1%})")


def freshness_checks(spark: SparkSession, config: Config, now: datetime | None = None) -> list[Check]:
    """Every check, in a fixed order: the streaming queries, the publish, the quarantine rate."""
    now = now or datetime.now(UTC)
    return [*query_checks(config, now), publish_check(spark, config, now), quarantine_check(spark, config, now)]
