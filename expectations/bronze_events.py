"""bronze.events: event ids present and unique, the quarantine rate of the last
`quality.quarantine_window_hours` of ingest, and how fresh the newest event is."""

from __future__ import annotations

from datetime import datetime, timedelta

import great_expectations.expectations as gxe
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from expectations import Batch, Check, Previous, Read
from expectations.common import key_checks
from pipelines.config import Config

DATASET = "bronze.events"
# Freshness is measured against the time of the run, not a table version: a recorded pass
# says nothing about later (a stalled stream moves neither table), so the gate never
# reuses this suite's results.
RESULTS_DEPEND_ON_TIME = True


def quarantine_rate(metrics: DataFrame, window_hours: float) -> DataFrame:
    """One row: quarantined / read over the last `window_hours` of ingest (before the newest
    batch, in processing time, the clock batch_timestamp keeps); null: nothing read."""
    newest = metrics.agg(F.max("batch_timestamp").alias("_newest"))
    window = metrics.crossJoin(newest).where(
        F.col("batch_timestamp") > F.col("_newest") - F.make_dt_interval(secs=F.lit(window_hours * 3600.0)))
    return window.agg((F.sum("quarantined_rows") / F.sum("input_rows")).alias("quarantine_rate"))


def freshness(events: DataFrame, as_of: datetime, clock_skew: timedelta) -> DataFrame:
    """One row: hours from the newest event time to `as_of` (null: no events). Events
    stamped more than `clock_skew` after it are left out (clocks differ between producers,
    but one bad clock must not make the table look fresh for ever)."""
    believable = events.where(F.col("occurred_at") <= F.lit(as_of + clock_skew))
    return believable.agg(((F.lit(as_of).cast("double") - F.max("occurred_at").cast("double")) / 3600.0)
                          .alias("lag_hours"))


def batches(read: Read, config: Config, previous: Previous, as_of: datetime) -> list[Batch]:
    events, metrics = read(DATASET), read("bronze.ingest_metrics")
    if events is None:
        return []
    quality = config.quality
    found = [Batch(DATASET, events, tuple(key_checks(DATASET, "event_id"))),
             Batch(f"{DATASET}.freshness", freshness(events, as_of, timedelta(minutes=quality.clock_skew_minutes)), (
                 # No believable event at all is as stale as it gets (a value check skips nulls).
                 Check(f"{DATASET}.freshness_known", "critical", gxe.ExpectColumnValuesToNotBeNull(column="lag_hours")),
                 Check(f"{DATASET}.freshness_lag_hours", "critical",
                       gxe.ExpectColumnValuesToBeBetween(column="lag_hours",
                                                         max_value=quality.max_freshness_lag_hours))))]
    if metrics is not None:
        found.append(Batch(f"{DATASET}.quarantine", quarantine_rate(metrics, quality.quarantine_window_hours), (
            Check(f"{DATASET}.quarantine_rate", "critical",
                  gxe.ExpectColumnValuesToBeBetween(column="quarantine_rate",
                                                    max_value=quality.max_quarantine_rate)),)))
    return found
