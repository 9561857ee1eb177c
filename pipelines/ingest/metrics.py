"""Per-batch ingest metrics (rows in, valid, quarantined by code, duplicates, event-time
lag) for `bronze.ingest_metrics`, from the values the ingest flow observes
(`pipelines.ingest.transforms`). Each batch writes its own row (`pipelines.ingest.writes`),
so a crash loses no committed batch's counts."""

from __future__ import annotations

import json
import logging
from typing import Any

from pipelines.contracts.events import ERROR_CODES
from pipelines.ingest.transforms import OBSERVED_INPUT, OBSERVED_OUTCOME
from pipelines.runtime.streaming import BatchFacts

log = logging.getLogger("tailor.ingest")


def metrics_row(query_name: str, batch: BatchFacts, duration_ms: int) -> dict[str, Any] | None:
    """One metrics row for a batch, or None if it read nothing (a watermark's no-data batch)."""
    observed = batch.observed
    rows_in = (observed.get(OBSERVED_INPUT) or {}).get("rows") or 0
    if not rows_in or OBSERVED_OUTCOME not in observed:
        return None
    outcome = observed[OBSERVED_OUTCOME]
    by_code = {code: outcome[f"quarantined_{code}"] for code in ERROR_CODES if outcome[f"quarantined_{code}"]}
    row = {
        "query_name": query_name,
        "query_id": batch.query_id,
        "run_id": batch.run_id,
        "batch_id": batch.batch_id,
        "batch_timestamp": batch.batch_timestamp,
        "input_rows": int(rows_in),
        "valid_rows": int(outcome["valid"] or 0),
        "quarantined_rows": int(outcome["quarantined"] or 0),
        "quarantined_by_code": by_code,
        "duplicate_rows": int(rows_in - (outcome["rows"] or 0)),
        "tombstones": int(outcome["tombstones"] or 0),
        "crm_truncates": int(outcome["crm_truncates"] or 0),
        "crm_schema_changes": int(outcome["crm_schema_changes"] or 0),
        "batch_duration_ms": int(duration_ms),
        "max_event_time_lag_s": outcome["max_event_time_lag_s"],
        "source_offsets": json.dumps([json.loads(offset) if offset else None for offset in batch.source_offsets]),
    }
    if row["crm_truncates"] or row["crm_schema_changes"]:
        # Neither deletes nor changes a profile: a truncate of a CRM table is far more often
        # a reload than everyone leaving, and the next snapshot or changes say who is there.
        log.warning("ingest batch %d: %d CRM truncate(s) and %d schema change message(s), counted in "
                    "bronze.ingest_metrics; no profile was changed by them", row["batch_id"],
                    row["crm_truncates"], row["crm_schema_changes"])
    return row
