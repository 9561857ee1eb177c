"""Streaming sinks: the foreachBatch writers that make each micro-batch land exactly once.

Delta's idempotent writes (`txnAppId` + `txnVersion`) skip a batch already committed, so
a batch replayed after a crash (the checkpoint had not recorded it yet) adds nothing.
The app id is minted once per checkpoint and stored beside it: a new checkpoint (batch
ids from 0 again) gets a new app id, so its batches are never mistaken for old ones.
"""

from __future__ import annotations

import logging
import uuid
from typing import Callable

from pyspark.sql import DataFrame, SparkSession

from pipelines.config import Config, TableRef
from pipelines.runtime.delta_tables import ensure_table, read_stream, save
from pipelines.ingest.transforms import bronze_rows, quarantine_rows
from pipelines.schemas import BRONZE_EVENTS, INGEST_METRICS, QUARANTINE

log = logging.getLogger("tailor.sinks")
APP_ID_FILE = "_tailor_app_id"


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


def read_bronze_events(spark: SparkSession, config: Config, max_files_per_trigger: int | None) -> DataFrame:
    """bronze.events as a stream for the jobs downstream of ingest. Erasure deletes rows
    from it; the stream skips those commits rather than failing on a source that is not
    append-only."""
    options = {"skipChangeCommits": "true"}
    if max_files_per_trigger:
        options["maxFilesPerTrigger"] = str(max_files_per_trigger)
    return read_stream(spark, config.table("bronze.events"), options)


def checkpoint_app_id(spark: SparkSession, checkpoint: str, name: str) -> str:
    """The idempotent-write app id of the query using `checkpoint`, created on first use."""
    jvm = spark.sparkContext._jvm
    hadoop_conf = spark.sparkContext._jsc.hadoopConfiguration()
    path = jvm.org.apache.hadoop.fs.Path(f"{checkpoint.rstrip('/')}/{APP_ID_FILE}")
    fs = path.getFileSystem(hadoop_conf)
    if fs.exists(path):
        stream = fs.open(path)
        try:
            reader = jvm.java.io.BufferedReader(jvm.java.io.InputStreamReader(stream, "UTF-8"))
            return reader.readLine().strip()
        finally:
            stream.close()
    app_id = f"tailor.{name}.{uuid.uuid4()}"
    stream = fs.create(path, False)
    try:
        stream.write(bytearray(app_id.encode("utf-8")))
    finally:
        stream.close()
    return app_id


def append_once(frame: DataFrame, table: TableRef, app_id: str, version: int) -> None:
    writer = (frame.write.format("delta").mode("append")
              .option("txnAppId", app_id).option("txnVersion", version))
    save(writer, table)


def ingest_batch_writer(bronze: TableRef, quarantine: TableRef, app_id: str
                        ) -> Callable[[DataFrame, int], None]:
    def write(batch: DataFrame, batch_id: int) -> None:
        batch.persist()
        try:
            append_once(bronze_rows(batch), bronze, app_id, batch_id)
            append_once(quarantine_rows(batch), quarantine, app_id, batch_id)
        finally:
            batch.unpersist()

    return write
