"""Ingest's writes: the bronze tables, and the foreachBatch writer that lands each
micro-batch in bronze.events and bronze.quarantine, and its counts in
bronze.ingest_metrics, exactly once."""

from __future__ import annotations

import time

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from pipelines.config import Config, TableRef
from pipelines.ingest.metrics import metrics_row
from pipelines.ingest.transforms import bronze_rows, is_valid, quarantine_rows
from pipelines.runtime.delta_tables import add_missing_columns, ensure_table
from pipelines.runtime.streaming import BatchWriter, append_once, running_batch
from pipelines.schemas import BRONZE_EVENTS, INGEST_METRICS, QUARANTINE


def ensure_bronze_tables(spark: SparkSession, config: Config) -> None:
    # Append-only by how it is written, not by `delta.appendOnly`: an erasure request must
    # still be able to delete a person's events.
    # Delta keeps min/max statistics in its log, which VACUUM never removes; the payload
    # can hold a person's name or address, so it stays out of them.
    stats = ",".join(name for name in BRONZE_EVENTS.fieldNames() if name not in ("payload", "event_date"))
    ensure_table(spark, config.table("bronze.events"), BRONZE_EVENTS, partition_by=("event_date",),
                 properties={"delta.dataSkippingStatsColumns": stats})
    ensure_table(spark, config.table("bronze.quarantine"), QUARANTINE)
    ensure_table(spark, config.table("bronze.ingest_metrics"), INGEST_METRICS)
    add_missing_columns(spark, config.table("bronze.ingest_metrics"), INGEST_METRICS)


def ingest_batch_writer(spark: SparkSession, query_name: str, bronze: TableRef, quarantine: TableRef,
                        metrics: TableRef, app_id: str) -> BatchWriter:
    """The batch's rows go to bronze and quarantine, then its counts to the metrics table,
    each an idempotent append: a batch replayed after a crash adds only what its cut-short
    run had not committed, and counts the same rows (same input, same dedup state)."""

    def write(batch: DataFrame, batch_id: int) -> None:
        started = time.monotonic()
        # The batch is cached for two writes and read back once each: compressing the cache
        # cost about a fifth of the batch's time. Set on the query's own session.
        batch.sparkSession.conf.set("spark.sql.inMemoryColumnarStorage.compressed", "false")
        batch.persist()
        try:
            # A full aggregate, not isEmpty(): every partition must run, so the dedup state
            # of this batch is committed. A table with nothing to add gets no commit (a Delta
            # commit costs seconds; the watermark's no-data batches are empty).
            valid, quarantined = batch.agg(F.count_if(is_valid()), F.count_if(F.col("error_code").isNotNull())).first()
            if valid:
                append_once(bronze_rows(batch), bronze, app_id, batch_id)
            if quarantined:
                append_once(quarantine_rows(batch), quarantine, app_id, batch_id)
            # The aggregate above computed every row, so the observed counts are complete.
            row = metrics_row(query_name, running_batch(spark, query_name, batch_id),
                              int((time.monotonic() - started) * 1000))
            if row is not None:
                append_once(spark.createDataFrame([row], INGEST_METRICS), metrics, f"{app_id}.metrics", batch_id)
        finally:
            batch.unpersist()

    return write
