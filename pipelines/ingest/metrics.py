"""Per-batch ingest metrics (rows in, valid, quarantined by code, duplicates, event-time
lag) for `bronze.ingest_metrics`, collected as pipelines.runtime.progress describes."""

from __future__ import annotations

import json
import logging
from typing import Any

from pipelines.contracts.events import ERROR_CODES
from pipelines.ingest.transforms import OBSERVED_INPUT, OBSERVED_OUTCOME
from pipelines.runtime.progress import BatchMetricsCollector, batch_timestamp
from pipelines.schemas import INGEST_METRICS

log = logging.getLogger("tailor.ingest")


def metrics_row(progress: Any) -> dict[str, Any] | None:
    """One metrics row from a StreamingQueryProgress, or None if it processed nothing."""
    observed = progress.observedMetrics or {}
    if OBSERVED_INPUT not in observed or OBSERVED_OUTCOME not in observed:
        return None
    rows_in = observed[OBSERVED_INPUT]["rows"] or 0
    outcome = observed[OBSERVED_OUTCOME]
    by_code = {code: outcome[f"quarantined_{code}"] for code in ERROR_CODES if outcome[f"quarantined_{code}"]}
    row = {
        "query_name": progress.name or "",
        "query_id": str(progress.id),
        "run_id": str(progress.runId),
        "batch_id": int(progress.batchId),
        "batch_timestamp": batch_timestamp(progress),
        "input_rows": int(rows_in),
        "valid_rows": int(outcome["valid"] or 0),
        "quarantined_rows": int(outcome["quarantined"] or 0),
        "quarantined_by_code": by_code,
        "duplicate_rows": int(rows_in - (outcome["rows"] or 0)),
        "tombstones": int(outcome["tombstones"] or 0),
        "crm_truncates": int(outcome["crm_truncates"] or 0),
        "crm_schema_changes": int(outcome["crm_schema_changes"] or 0),
        "batch_duration_ms": int((progress.durationMs or {}).get("triggerExecution", 0)),
        "max_event_time_lag_s": outcome["max_event_time_lag_s"],
        "source_offsets": json.dumps([source.endOffset for source in progress.sources]),
    }
    if row["crm_truncates"] or row["crm_schema_changes"]:
        # Neither deletes nor changes a profile: a truncate of a CRM table is far more often
        # a reload than everyone leaving, and the next snapshot or changes say who is there.
        log.warning("ingest batch %d: %d CRM truncate(s) and %d schema change message(s), counted in "
                     "bronze.ingest_metrics; no profile was changed by them", row["batch_id"],
                     row["crm_truncates"], row["crm_schema_changes"])
    return row


def ingest_metrics_collector(query_name: str) -> BatchMetricsCollector:
    """Collects metrics_row for every batch of the ingest query, for bronze.ingest_metrics."""
    return BatchMetricsCollector(query_name, metrics_row, INGEST_METRICS, "tailor.metrics")
