"""Per-batch metrics of a streaming query, from a StreamingQueryListener into a Delta table.

The listener only queues what each progress event says; the job's own thread appends
the queue to the table. Spark work inside a listener callback would stall the listener
bus. It appends, where a MERGE on (query id, batch id) would scan the table and took five
times as long on every flush. A batch is still stored once: the collector drops a batch
at or below the highest one it stored for that query, and each append is idempotent on
the query id and its highest batch id (Delta's txnAppId/txnVersion), so the same flush
committed twice, or by a restarted job, adds nothing. Both rest on batch ids only
growing within a query (its id lives in the checkpoint) and on Spark reporting a batch
only after committing it, so a restart never reports a stored batch again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql.streaming import StreamingQueryListener
from pyspark.sql.types import StructType

from pipelines.config import Config, TableRef
from pipelines.runtime.delta_tables import ensure_table
from pipelines.runtime.streaming import RunningQuery, append_once, await_query, last_batch_ran
from pipelines.schemas import STREAMING_PROGRESS

RowOf = Callable[[Any], dict[str, Any] | None]


def batch_timestamp(progress: Any) -> datetime:
    """The progress event's trigger time, zone-aware: PySpark stores an aware datetime as
    that instant, and a naive one as the Python process's local time."""
    return datetime.fromisoformat(progress.timestamp.replace("Z", "+00:00")).astimezone(UTC)


def progress_row(progress: Any) -> dict[str, Any] | None:
    """What any streaming query's batch did, or None for a trigger that ran no batch."""
    durations = progress.durationMs or {}
    if "addBatch" not in durations:
        return None
    watermark = (progress.eventTime or {}).get("watermark")
    moment = batch_timestamp(progress)
    lag = None
    if watermark and not watermark.startswith("1970-01-01"):
        lag = (moment - datetime.fromisoformat(watermark.replace("Z", "+00:00"))).total_seconds()
    return {
        "query_name": progress.name or "",
        "query_id": str(progress.id),
        "run_id": str(progress.runId),
        "batch_id": int(progress.batchId),
        "batch_timestamp": moment,
        "input_rows": int(progress.numInputRows or 0),
        "input_rows_per_second": float(progress.inputRowsPerSecond or 0.0),
        "processed_rows_per_second": float(progress.processedRowsPerSecond or 0.0),
        "batch_duration_ms": int(durations.get("triggerExecution", 0)),
        "state_rows": int(sum(operator.numRowsTotal for operator in progress.stateOperators or [])),
        "watermark_lag_s": lag,
    }


class BatchMetricsCollector(StreamingQueryListener):
    """Queues `row_of(progress)` for every batch of one named query; `flush` appends them."""

    def __init__(self, query_name: str, row_of: RowOf, schema: StructType, app_prefix: str):
        self.query_name = query_name
        self.row_of = row_of
        self.schema = schema
        self.app_prefix = app_prefix
        self._rows: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self.last_batch_seen = -1
        self._stored: dict[str, int] = {}  # query id -> highest batch id appended

    def onQueryStarted(self, event) -> None:
        pass

    def onQueryProgress(self, event) -> None:
        progress = event.progress
        if progress.name != self.query_name:
            return
        row = self.row_of(progress)
        with self._lock:
            self.last_batch_seen = max(self.last_batch_seen, progress.batchId)
            if row is not None:
                self._rows.append(row)

    def onQueryIdle(self, event) -> None:
        pass

    def onQueryTerminated(self, event) -> None:
        pass

    def drain(self) -> list[dict[str, Any]]:
        with self._lock:
            rows, self._rows = self._rows, []
        return rows

    def flush(self, spark: SparkSession, table: TableRef) -> int:
        rows = self.drain()
        if not rows:
            return 0
        by_query: dict[str, dict[int, dict[str, Any]]] = {}
        for row in rows:
            if row["batch_id"] > self._stored.get(row["query_id"], -1):
                by_query.setdefault(row["query_id"], {})[row["batch_id"]] = row
        for query_id, batches in by_query.items():
            highest = max(batches)
            append_once(spark.createDataFrame(list(batches.values()), self.schema), table,
                        f"{self.app_prefix}.{query_id}", highest)
            self._stored[query_id] = highest
        return sum(len(batches) for batches in by_query.values())

    def wait_for_last_progress(self, query: Any, timeout_s: float = 15) -> None:
        """Listener events arrive asynchronously; wait for the last batch's before the final flush."""
        ran = last_batch_ran(query)
        if ran is None:
            return
        deadline = time.monotonic() + timeout_s
        while self.last_batch_seen < ran and time.monotonic() < deadline:
            time.sleep(0.1)


def progress_collector(query_name: str) -> BatchMetricsCollector:
    """Collects progress_row for every batch of `query_name`, for audit.streaming_progress."""
    return BatchMetricsCollector(query_name, progress_row, STREAMING_PROGRESS, "tailor.progress")


def run_collecting(spark: SparkSession, config: Config, name: str, start: Callable[[], RunningQuery]) -> None:
    """Start a streaming query and wait for it, storing each batch's progress in
    audit.streaming_progress every ingest.metrics_flush_seconds and once more when it stops.
    (Progress is for watching: a crash loses what was not yet flushed. What must survive
    a crash, such as ingest's counts, is written by the batch itself.)"""
    progress = config.table("audit.streaming_progress")
    ensure_table(spark, progress, STREAMING_PROGRESS)
    sinks = ((progress_collector(name), progress),)
    for collector, _ in sinks:
        spark.streams.addListener(collector)

    def flush() -> None:
        for collector, table in sinks:
            collector.flush(spark, table)

    try:
        query = start()
        try:
            await_query(query, name, on_tick=flush, tick_seconds=config.ingest.metrics_flush_seconds)
        finally:
            for collector, _ in sinks:
                collector.wait_for_last_progress(query)
            flush()
    finally:
        for collector, _ in sinks:
            spark.streams.removeListener(collector)
