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

from pipelines.config import TableRef
from pipelines.delta_tables import save
from pipelines.ingest import bronze_rows, quarantine_rows

log = logging.getLogger("tailor.sinks")
APP_ID_FILE = "_tailor_app_id"


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
