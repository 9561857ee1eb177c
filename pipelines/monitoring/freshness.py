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


def last_publish(spark: SparkSession, config: Config) -> datetime | None:
    """When publishing last ran: its newest commit to gold.email_content (tagged
    tailor_publish in the commit's userMetadata: erasures, maintenance and schema changes
    commit there too), or its newest succeeded run in audit.job_runs (a publish that found
    nothing to change commits nothing)."""
    moments = []
    content = config.table("gold.email_content")
    if table_exists(spark, content):
        moments.append(delta_table(spark, content).history()
                       .where(F.col("userMetadata").contains('"tailor_publish"'))
                       .agg(F.max(F.unix_micros("timestamp"))).first()[0])
    runs = config.table("audit.job_runs")
    if table_exists(spark, runs):
        moments.append(read_table(spark, runs)
                       .where((F.col("job") == "publish_content") & (F.col("outcome") == "succeeded"))
                       .agg(F.max(F.unix_micros("finished_at"))).first()[0])
    found = [moment for moment in moments if moment is not None]
    return utc_from_micros(max(found)) if found else None


def publish_check(spark: SparkSession, config: Config, now: datetime) -> Check:
    limit = config.monitoring.max_publish_age_hours
    published = last_publish(spark, config)
    if published is None:
        return Check("publish", False, "nothing has been published yet")
    age = now - published
    return Check("publish", age <= timedelta(hours=limit), f"last publish {_minutes(age)} ago (limit {limit:g} h)")


def quarantine_totals(spark: SparkSession, config: Config, now: datetime) -> tuple[int, int] | None:
    """(records read, records quarantined) by ingest over the last monitoring.window_hours;
    None before the first ingest."""
    table = config.table("bronze.ingest_metrics")
    if not table_exists(spark, table):
        return None
    since = int((now - timedelta(hours=config.monitoring.window_hours)).timestamp() * 1_000_000)
    totals = (read_table(spark, table).where(F.unix_micros("batch_timestamp") >= since)
              .agg(F.sum("input_rows").alias("input"), F.sum("quarantined_rows").alias("quarantined")).first())
    return totals.input or 0, totals.quarantined or 0


def quarantine_check(spark: SparkSession, config: Config, now: datetime) -> Check:
    window = config.monitoring.window_hours
    limit = config.monitoring.max_quarantine_rate
    totals = quarantine_totals(spark, config, now)
    if not totals or not totals[0]:
        return Check("quarantine", True, f"no records ingested in {window:g} h")
    read, quarantined = totals
    rate = quarantined / read
    return Check("quarantine", rate <= limit,
                 f"quarantine rate {rate:.1%} of {read} records in {window:g} h (limit {limit:.1%})")


def freshness_checks(spark: SparkSession, config: Config, now: datetime | None = None) -> list[Check]:
    """Every check, in a fixed order: the streaming queries, the publish, the quarantine rate."""
    now = now or datetime.now(UTC)
    return [*query_checks(config, now), publish_check(spark, config, now), quarantine_check(spark, config, now)]
