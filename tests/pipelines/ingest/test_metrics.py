"""Ingest metrics from progress events into bronze.ingest_metrics: one row per batch that
read something, per query, and a batch reported or flushed again is stored once."""

from __future__ import annotations

from types import SimpleNamespace

from pyspark.sql import functions as F

from pipelines.config import TableRef
from pipelines.contracts.events import ERROR_CODES
from pipelines.ingest.metrics import ingest_metrics_collector
from pipelines.runtime.delta_tables import ensure_table, read_table
from pipelines.schemas import INGEST_METRICS

FIRST, SECOND = "7d0c1a52-0000-4000-8000-000000000001", "7d0c1a52-0000-4000-8000-000000000002"


def _progress(batch_id: int, rows: int, query_id: str = FIRST, name: str = "ingest_events"):
    outcome = {"rows": rows, "valid": rows - 1, "quarantined": 1, "tombstones": 0, "crm_truncates": 0,
               "crm_schema_changes": 0, "max_event_time_lag_s": 2.5,
               **{f"quarantined_{code}": 0 for code in ERROR_CODES}, "quarantined_malformed_json": 1}
    observed = {"ingest_input": {"rows": rows + 2}, "ingest_outcome": outcome} if rows else {}
    progress = SimpleNamespace(name=name, id=query_id, runId="run-1", batchId=batch_id,
                               timestamp="2026-11-28T10:00:00.000Z", observedMetrics=observed,
                               durationMs={"triggerExecution": 1500},
                               sources=[SimpleNamespace(endOffset='{"files": 3}')])
    return SimpleNamespace(progress=progress)


def _report(collector, *events):
    for event in events:
        collector.onQueryProgress(event)


def test_each_batch_is_stored_once_per_query_however_often_it_is_reported(spark, tmp_path):
    table = TableRef("bronze.ingest_metrics", path=str(tmp_path / "ingest_metrics"))
    ensure_table(spark, table, INGEST_METRICS)

    def version():
        return spark.sql(f"DESCRIBE HISTORY delta.`{table.path}`").agg(F.max("version")).first()[0]

    collector = ingest_metrics_collector("ingest_events")
    # Batch 1 read nothing; another query's progress is not this job's.
    _report(collector, _progress(0, 10), _progress(1, 0), _progress(2, 5), _progress(3, 7, name="another_query"))
    assert collector.flush(spark, table) == 2
    assert collector.flush(spark, table) == 0  # nothing queued since

    stored = version()
    _report(collector, _progress(0, 10), _progress(2, 5))  # reported again, alone
    assert collector.flush(spark, table) == 0
    assert version() == stored
    _report(collector, _progress(2, 5), _progress(4, 3))   # reported again, with a new batch
    assert collector.flush(spark, table) == 1
    # A second query id (a new checkpoint) starts its batch ids from 0 again.
    _report(collector, _progress(0, 6, query_id=SECOND))
    assert collector.flush(spark, table) == 1

    # A restarted job: a fresh collector, whose first flush repeats the last one committed.
    restarted = ingest_metrics_collector("ingest_events")
    _report(restarted, _progress(0, 6, query_id=SECOND))
    before = version()
    restarted.flush(spark, table)
    assert version() == before

    rows = sorted((r.query_id[-1], r.batch_id, r.input_rows, r.valid_rows, r.quarantined_rows, r.duplicate_rows,
                   dict(r.quarantined_by_code), r.batch_duration_ms)
                  for r in read_table(spark, table).collect())
    assert rows == [("1", 0, 12, 9, 1, 2, {"malformed_json": 1}, 1500),
                    ("1", 2, 7, 4, 1, 2, {"malformed_json": 1}, 1500),
                    ("1", 4, 5, 2, 1, 2, {"malformed_json": 1}, 1500),
                    ("2", 0, 8, 5, 1, 2, {"malformed_json": 1}, 1500)]
    assert collector.last_batch_seen == 4
