"""Ingest metrics from a batch's observed values, and streaming progress from progress
events into audit.streaming_progress: one row per batch that ran, per query, and a batch
reported or flushed again is stored once."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

from pyspark.sql import functions as F

from pipelines.config import TableRef
from pipelines.contracts.events import ERROR_CODES
from pipelines.ingest.metrics import metrics_row
from pipelines.runtime.delta_tables import ensure_table, read_table
from pipelines.runtime.progress import progress_collector
from pipelines.runtime.streaming import BatchFacts
from pipelines.schemas import STREAMING_PROGRESS

FIRST, SECOND = "7d0c1a52-0000-4000-8000-000000000001", "7d0c1a52-0000-4000-8000-000000000002"
AT = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)


def _batch(observed):
    return BatchFacts(query_id=FIRST, run_id="run-1", batch_id=7, batch_timestamp=AT, observed=observed,
                      source_offsets=['{"files": 3}', None])


def _outcome(**counts):
    return {"rows": 0, "valid": 0, "quarantined": 0, "tombstones": 0, "crm_truncates": 0, "crm_schema_changes": 0,
            "max_event_time_lag_s": None, **{f"quarantined_{code}": 0 for code in ERROR_CODES}, **counts}


def test_a_batch_row_counts_duplicates_as_input_less_what_the_dedup_kept():
    observed = {"ingest_input": {"rows": 12},
                "ingest_outcome": _outcome(rows=10, valid=6, quarantined=3, tombstones=1, max_event_time_lag_s=2.5,
                                           quarantined_malformed_json=2, quarantined_missing_field=1)}
    row = metrics_row("ingest_events", _batch(observed), 1500)
    assert row == {"query_name": "ingest_events", "query_id": FIRST, "run_id": "run-1", "batch_id": 7,
                   "batch_timestamp": AT, "input_rows": 12, "valid_rows": 6, "quarantined_rows": 3,
                   "quarantined_by_code": {"malformed_json": 2, "missing_field": 1}, "duplicate_rows": 2,
                   "tombstones": 1, "crm_truncates": 0, "crm_schema_changes": 0, "batch_duration_ms": 1500,
                   "max_event_time_lag_s": 2.5, "source_offsets": '[{"files": 3}, null]'}


def test_a_batch_that_read_nothing_writes_no_row():
    assert metrics_row("ingest_events", _batch({"ingest_input": {"rows": 0}, "ingest_outcome": _outcome()}), 9) is None
    assert metrics_row("ingest_events", _batch({}), 9) is None


def _progress(batch_id: int, rows: int, query_id: str = FIRST, name: str = "merge_profiles", ran: bool = True):
    durations = {"triggerExecution": 1500, **({"addBatch": 1200} if ran else {})}
    progress = SimpleNamespace(name=name, id=query_id, runId="run-1", batchId=batch_id,
                               timestamp="2026-11-28T10:00:00.000Z", numInputRows=rows, inputRowsPerSecond=1.0,
                               processedRowsPerSecond=2.0, durationMs=durations, eventTime={},
                               stateOperators=[SimpleNamespace(numRowsTotal=4)])
    return SimpleNamespace(progress=progress)


def _report(collector, *events):
    for event in events:
        collector.onQueryProgress(event)


def test_each_batch_is_stored_once_per_query_however_often_it_is_reported(spark, tmp_path):
    table = TableRef("audit.streaming_progress", path=str(tmp_path / "streaming_progress"))
    ensure_table(spark, table, STREAMING_PROGRESS)

    def version():
        return spark.sql(f"DESCRIBE HISTORY delta.`{table.path}`").agg(F.max("version")).first()[0]

    collector = progress_collector("merge_profiles")
    # Trigger 1 ran no batch; another query's progress is not this job's.
    _report(collector, _progress(0, 10), _progress(1, 0, ran=False), _progress(2, 5),
            _progress(3, 7, name="another_query"))
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
    restarted = progress_collector("merge_profiles")
    _report(restarted, _progress(0, 6, query_id=SECOND))
    before = version()
    restarted.flush(spark, table)
    assert version() == before

    rows = sorted((r.query_id[-1], r.batch_id, r.input_rows, r.batch_duration_ms, r.state_rows)
                  for r in read_table(spark, table).collect())
    assert rows == [("1", 0, 10, 1500, 4), ("1", 2, 5, 1500, 4), ("1", 4, 3, 1500, 4), ("2", 0, 6, 1500, 4)]
    assert collector.last_batch_seen == 4
