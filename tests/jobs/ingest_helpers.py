"""Reconciliation helpers for the ingest tests: what the Python validator (an independent
oracle) says should land, compared with what did land."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime

from pipelines.contracts import validate_event


def expected_outcome(event_lines: list[bytes], crm_changes: list[dict]) -> tuple[set[str], Counter, int]:
    """(event_ids that must be in bronze, quarantine codes expected, duplicate lines)."""
    now = datetime.now(UTC)
    valid_ids: list[str] = []
    codes: Counter = Counter()
    for line in event_lines:
        problem = validate_event(line, now)
        if problem:
            codes[problem.code] += 1
        else:
            valid_ids.append(json.loads(line)["event_id"])
    for change in crm_changes:
        row = change["after"] or change["before"]
        valid_ids.append(f"crm:crm.customers:{change['source']['lsn']}:{change['op']}:{row['user_id']}")
    duplicates = len(valid_ids) - len(set(valid_ids))
    return set(valid_ids), codes, duplicates


def landed(spark, config):
    bronze = spark.read.format("delta").load(config.table("bronze.events").path)
    quarantine = spark.read.format("delta").load(config.table("bronze.quarantine").path)
    metrics = spark.read.format("delta").load(config.table("bronze.ingest_metrics").path)
    return bronze, quarantine, metrics
