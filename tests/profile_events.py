"""Builders for profile change events as they arrive (Debezium envelopes and Tailor
events), and the way to turn them into bronze.events rows: the real validation path."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from pipelines.config import CrmTableConfig
from pipelines.ingest.transforms import bronze_rows
from pipelines.ingest.validation import add_ingest_columns, validate_crm_changes, validate_events

RAW_SCHEMA = ("raw binary, source_kind string, source_stream string, source_partition string, "
              "source_offset string, source_timestamp timestamp")
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
PERSON_FIELDS = ("email", "first_name", "last_name", "phone", "country", "locale")


@contextmanager
def pii_keys_in_env(key_id: str, encryption_key: bytes, hmac_key: bytes) -> Iterator[None]:
    """The PII keys the profile writer loads, set in the environment for a module's tests."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TAILOR_PII_ENCRYPTION_KEY", f"{key_id}:{base64.b64encode(encryption_key).decode()}")
        patch.setenv("TAILOR_PII_HMAC_KEY", base64.b64encode(hmac_key).decode())
        yield


def millis(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def person(user_id: str, **fields: Any) -> dict[str, Any]:
    row = {"user_id": user_id, **{name: None for name in PERSON_FIELDS}, "updated_at": None}
    row.update(fields)
    return row


def crm(op: str, lsn: int | None, at: str, after: dict | None = None, before: dict | None = None,
        wrapped: bool = False) -> dict[str, Any]:
    """A Debezium change of crm.public.customers, committed at `at`."""
    source = {"lsn": lsn, "ts_ms": millis(at), "db": "crm", "schema": "public", "table": "customers",
              "connector": "postgresql", "name": "crm"}
    change = {"before": before, "after": after, "op": op, "ts_ms": millis(at) + 40, "source": source,
              "transaction": None}
    if wrapped:  # Kafka Connect's JSON converter with schemas.enable=true
        return {"schema": {"type": "struct", "name": "crm.public.customers.Envelope"}, "payload": change}
    return change


def event(event_type: str, user_id: str, at: str, payload: dict[str, Any], event_id: str,
          source: str = "preference_centre") -> dict[str, Any]:
    return {"event_id": event_id, "event_type": event_type, "schema_version": 1, "user_id": user_id,
            "occurred_at": at, "source": source, "payload": payload}


def raw_records(spark: SparkSession, records: list[Any], stream: str) -> DataFrame:
    rows = [(None if record is None else json.dumps(record).encode("utf-8"), "files", stream, "f.jsonl",
             str(number), None) for number, record in enumerate(records)]
    return spark.createDataFrame(rows, RAW_SCHEMA)


def to_bronze(spark: SparkSession, records: list[dict[str, Any]],
              crm_tables: dict[str, CrmTableConfig] | None = None) -> DataFrame:
    """bronze.events rows for `records` (Tailor events and CRM changes, in any mix),
    through the ingest job's own validation; anything invalid fails the test."""
    now = F.lit(NOW.isoformat()).cast("timestamp")
    events = [r for r in records if "event_type" in r]
    changes = [r for r in records if "event_type" not in r]
    validated = validate_events(raw_records(spark, events, "landing/events"), now).unionByName(
        validate_crm_changes(raw_records(spark, changes, "landing/crm"), now, crm_tables))
    # Cached first: a filter over the bare plan would inline the whole validation
    # expression a second time, past what Spark's code generator compiles.
    validated = validated.transform(add_ingest_columns).persist()
    problems = validated.where(F.col("error_code").isNotNull()).select("error_code", "error_message").collect()
    assert not problems, f"test records must be valid: {problems}"
    return bronze_rows(validated)
