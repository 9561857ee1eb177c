"""Ingest metrics from progress events into bronze.ingest_metrics: one row per batch that
read something, and a flush of batches already stored adds nothing."""

from __future__ import annotations

from types import SimpleNamespace

from pipelines.config import TableRef
from pipelines.contracts.events import ERROR_CODES
from pipelines.ingest.metrics import IngestMetricsCollector
from pipelines.runtime.delta_tables import ensure_table, read_table
from pipelines.schemas import INGEST_METRICS

QUERY_ID = "7d0c1a52-0000-4000-8000-000000000001"


def _progress(batch_id: int, rows: int, name: str = "ingest_events"):
    outcome = {"rows": rows, "valid": rows - 1, "quarantined": 1, "tombstones": 0, "max_event_time_lag_s": 2.5,
               **{f"quarantined_{code}": 0 for code in ERROR_CODES}, "quarantined_malformed_json": 1}
    observed = {"ingest_input": {"rows": rows + 2}, "ingest_outcome": outcome} if rows else {}
    progress = SimpleNamespace(name=name, id=QUERY_ID, runId="run-1", batchId=batch_id,
                               timestamp="2026-11-28T10:00:00.000Z", observedMetrics=observed,
                               durationMs={"triggerExecution": 1500},
                               sources=[SimpleNamespace(endOffset='{"files": 3}')])
    return SimpleNamespace(progress=progress)


def test_each_batch_is_stored_once_however_often_it_is_flushed(spark, tmp_path):
    table = TableRef("bronze.ingest_metrics", path=str(tmp_path / "ingest_metrics"))
    ensure_table(spark, table, INGEST_METRICS)
    collector = IngestMetricsCollector("ingest_events")
    for event in (_progress(0, 10), _progress(1, 0), _progress(2, 5), _progress(3, 7, name="another_query")):
        collector.onQueryProgress(event)
    assert collector.flush(spark, table) == 2
    assert collector.flush(spark, table) == 0  # nothing queued since

    # The same batches reported again (as after a listener replay) and a new one.
    for event in (_progress(0, 10), _progress(2, 5)):
        collector.onQueryProgress(event)
    collector.flush(spark, table)
    collector.onQueryProgress(_progress(4, 3))
    collector.flush(spark, table)

    stored = sorted((r.batch_id, r.input_rows, r.valid_rows, r.quarantined_rows, r.duplicate_rows,
                     dict(r.quarantined_by_code), r.batch_duration_ms)
                    for r in read_table(spark, table).collect())
    assert stored == [(0, 12, 9, 1, 2, {"malformed_json": 1}, 1500), (2, 7, 4, 1, 2, {"malformed_json": 1}, 1500),
                      (4, 5, 2, 1, 2, {"malformed_json": 1}, 1500)]
    assert collector.last_batch_seen == 4
