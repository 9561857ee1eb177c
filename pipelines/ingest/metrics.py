"""Per-batch ingest metrics, from a StreamingQueryListener into a Delta table.

The listener only queues what each progress event says; the job's own thread appends
the queue to `bronze.ingest_metrics`. Spark work inside a listener callback would stall
the listener bus. It appends, where a MERGE on (query id, batch id) would scan the table
and took five times as long on every flush. A batch is still stored once: the collector
drops a batch at or below the highest one it stored for that query, and each append is
idempotent on the query id and its highest batch id (Delta's txnAppId/txnVersion), so
the same flush committed twice, or by a restarted job, adds nothing. Both rest on batch
ids only growing within a query (its id lives in the checkpoint) and on Spark reporting a
batch only after committing it, so a restart never reports a stored batch again.
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql.streaming import StreamingQueryListener

from pipelines.config import TableRef
from pipelines.contracts.events import ERROR_CODES
from pipelines.ingest.transforms import OBSERVED_INPUT, OBSERVED_OUTCOME
from pipelines.runtime.streaming import append_once
from pipelines.schemas import INGEST_METRICS


def metrics_row(progress: Any) -> dict[str, Any] | None:
    """One metrics row from a StreamingQueryProgress, or None if it processed nothing."""
    observed = progress.observedMetrics or {}
    if OBSERVED_INPUT not in observed or OBSERVED_OUTCOME not in observed:
        return None
    rows_in = observed[OBSERVED_INPUT]["rows"] or 0
    outcome = observed[OBSERVED_OUTCOME]
    by_code = {code: outcome[f"quarantined_{code}"] for code in ERROR_CODES if outcome[f"quarantined_{code}"]}
    return {
        "query_name": progress.name or "",
        "query_id": str(progress.id),
        "run_id": str(progress.runId),
        "batch_id": int(progress.batchId),
        "batch_timestamp": datetime.fromisoformat(progress.timestamp.replace("Z", "+00:00"))
            .astimezone(UTC).replace(tzinfo=None),
        "input_rows": int(rows_in),
        "valid_rows": int(outcome["valid"] or 0),
        "quarantined_rows": int(outcome["quarantined"] or 0),
        "quarantined_by_code": by_code,
        "duplicate_rows": int(rows_in - (outcome["rows"] or 0)),
        "tombstones": int(outcome["tombstones"] or 0),
        "batch_duration_ms": int((progress.durationMs or {}).get("triggerExecution", 0)),
        "max_event_time_lag_s": outcome["max_event_time_lag_s"],
        "source_offsets": json.dumps([source.endOffset for source in progress.sources]),
    }


class IngestMetricsCollector(StreamingQueryListener):
    def __init__(self, query_name: str):
        self.query_name = query_name
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
        row = metrics_row(progress)
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
            append_once(spark.createDataFrame(list(batches.values()), INGEST_METRICS), table,
                        f"tailor.metrics.{query_id}", highest)
            self._stored[query_id] = highest
        return sum(len(batches) for batches in by_query.values())
