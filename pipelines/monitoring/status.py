"""Where every job and table stands, gathered read-only from what the jobs leave behind:
Delta history, streaming checkpoints, bronze.ingest_metrics, audit.quality_results, the
MLflow registry and the serving store. Each part is a plain dict, so `tailor status`
prints it and `--format json` hands it to a scheduler's check."""

from __future__ import annotations

import json
import posixpath
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from pipelines.config import CHECKPOINTS, TABLES, Config
from pipelines.runtime.delta_tables import read_table, sql_name, table_exists
from pipelines.runtime.filesystems import filesystem

PUBLISHED_KINDS = {"gold.email_content": "content", "gold.user_traits": "traits", "gold.content_defaults": "default"}


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def utc_from_micros(micros: int | None) -> datetime | None:
    """A timestamp Spark computed as unix_micros: PySpark would hand back the TIMESTAMP
    itself as a naive datetime in the Python process's zone, whatever the session's."""
    return None if micros is None else datetime.fromtimestamp(micros / 1_000_000, UTC)


def table_status(spark: SparkSession, config: Config) -> list[dict[str, Any]]:
    """Per table: its latest version, when and by what it was written, its id and rows."""
    tables = []
    for name in TABLES:
        table = config.table(name)
        if not table_exists(spark, table):
            tables.append({"table": name, "exists": False})
            continue
        last = spark.sql(f"DESCRIBE HISTORY {sql_name(table)} LIMIT 1").select(
            "version", "operation", F.unix_micros("timestamp").alias("micros")).first()
        detail = spark.sql(f"DESCRIBE DETAIL {sql_name(table)}").first()
        tables.append({"table": name, "exists": True, "version": int(last.version),
                       "updated_at": _iso(utc_from_micros(last.micros)), "operation": last.operation,
                       "id": detail.id, "files": int(detail.numFiles), "rows": read_table(spark, table).count()})
    return tables


def _read_text(fs: Any, path: str) -> str:
    with fs.open_input_stream(path) as stream:
        return bytes(stream.read()).decode("utf-8")


def _last_batch(fs: Any, folder: str) -> int | None:
    from pyarrow import fs as pafs

    batches = [int(info.base_name) for info in fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
               if info.type == pafs.FileType.File and info.base_name.isdigit()]
    return max(batches, default=None)


def read_checkpoint(checkpoint: str) -> dict[str, Any] | None:
    """The last committed batch of a streaming query's checkpoint: its id, when it was
    planned, and each source's end offset (Spark's offset log: a version line, a metadata
    line, then one line per source). None when the query has never committed a batch."""
    fs, folder = filesystem(checkpoint)
    batch = _last_batch(fs, posixpath.join(folder, "commits"))
    if batch is None:
        return None
    lines = _read_text(fs, posixpath.join(folder, "offsets", str(batch))).splitlines()
    metadata = json.loads(lines[1])
    sources = [json.loads(line) if line.strip() not in ("", "-") else None for line in lines[2:]]
    planned = datetime.fromtimestamp(metadata["batchTimestampMs"] / 1000, UTC)
    return {"batch": batch, "batch_at": _iso(planned), "sources": sources}


def _delta_lag(offset: dict[str, Any], tables: list[dict[str, Any]]) -> dict[str, Any]:
    """How far a query reading a Delta table is behind it. Delta's offset (v, index) says
    version v is read up to file `index` (-1: none of it yet), so v - 1 is the last version
    read whole; isStartingVersion means the first full snapshot is still being read."""
    source = next((table for table in tables if table.get("id") == offset.get("reservoirId")), None)
    if source is None:
        return {"source": None, "note": "reads a table that no longer exists (re-created?)"}
    if offset.get("isStartingVersion"):
        return {"source": source["table"], "note": f"still reading {source['table']}'s first snapshot "
                                                   f"(version {offset['reservoirVersion']})"}
    read_through = int(offset["reservoirVersion"]) - 1
    return {"source": source["table"], "read_through_version": read_through,
            "versions_behind": max(0, source["version"] - read_through)}


def _ingest_last_batch(spark: SparkSession, config: Config) -> dict[str, Any] | None:
    table = config.table("bronze.ingest_metrics")
    if not table_exists(spark, table):
        return None
    last = read_table(spark, table).orderBy(F.desc("batch_timestamp"), F.desc("batch_id")).first()
    if last is None:
        return None
    return {"input_rows": int(last.input_rows), "valid_rows": int(last.valid_rows),
            "quarantined_rows": int(last.quarantined_rows), "duplicate_rows": int(last.duplicate_rows),
            "batch_duration_ms": int(last.batch_duration_ms), "event_time_lag_s": last.max_event_time_lag_s}


def query_status(spark: SparkSession, config: Config, tables: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per streaming query: its last committed batch, and how far behind its source it is
    (versions, for a query reading a Delta table; event-time lag of the last batch, for
    ingest, from bronze.ingest_metrics)."""
    queries = []
    for query, folder in CHECKPOINTS.items():
        checkpoint = config.checkpoint(folder)
        last = read_checkpoint(checkpoint)
        status: dict[str, Any] = {"query": query, "checkpoint": checkpoint, "started": last is not None}
        if last is not None:
            status.update(batch=last["batch"], batch_at=last["batch_at"])
            delta_offsets = [offset for offset in last["sources"] if offset and "reservoirVersion" in offset]
            if delta_offsets:
                status["lag"] = _delta_lag(delta_offsets[0], tables)
            if query == "ingest_events":
                status["last_batch"] = _ingest_last_batch(spark, config)
        queries.append(status)
    return queries


def validation_status(spark: SparkSession, config: Config) -> dict[str, Any] | None:
    """The last validation run: per dataset, expectations passed and failed, and the
    critical ones that failed (the ones that block training and publishing)."""
    table = config.table("audit.quality_results")
    if not table_exists(spark, table):
        return None
    results = read_table(spark, table)
    last = results.orderBy(F.desc("run_at")).select("run_id", F.unix_micros("run_at").alias("micros"), "mode").first()
    if last is None:
        return None
    rows = results.where(F.col("run_id") == last.run_id).collect()
    datasets: dict[str, dict[str, Any]] = {}
    for row in sorted(rows, key=lambda row: (row.dataset, row.expectation)):
        entry = datasets.setdefault(row.dataset, {"passed": 0, "failed": 0, "critical_failed": [],
                                                  "table_version": row.table_version})
        entry["passed" if row.success else "failed"] += 1
        if not row.success and row.severity == "critical":
            entry["critical_failed"].append(row.expectation)
    return {"run_id": last.run_id, "run_at": _iso(utc_from_micros(last.micros)), "mode": last.mode,
            "passed": not any(entry["critical_failed"] for entry in datasets.values()), "datasets": datasets}


def model_status(config: Config) -> dict[str, Any] | None:
    """The registered model's champion: version, when registered, its test metrics (train
    logs each model's as test.<model>.<metric>). None without a store or champion."""
    from mlflow.exceptions import MlflowException

    from pipelines.recommend.tracking import CHAMPION, existing_store_client

    client = existing_store_client(config)
    if client is None:
        return None
    name = config.mlflow.registered_model
    try:
        version = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None
    metrics = client.get_run(version.run_id).data.metrics
    tests = {key.removeprefix("test."): value for key, value in sorted(metrics.items()) if key.startswith("test.")}
    registered = datetime.fromtimestamp(int(version.creation_timestamp) / 1000, UTC)
    return {"name": name, "version": int(version.version), "registered_at": _iso(registered),
            "run_id": version.run_id, "test_metrics": tests}


def serving_status(config: Config, tables: list[dict[str, Any]]) -> dict[str, Any]:
    """The serving store: the table version each published table was exported at, against
    the table's own, and the records readers see per kind."""
    from pipelines.publish.export import state_name
    from pipelines.serving import open_store
    from pipelines.serving.base import KINDS, one_line

    versions = {table["table"]: table for table in tables if table.get("exists")}
    status: dict[str, Any] = {"type": config.serving.type}
    if config.serving.type == "sqlite" and not Path(config.under_root(config.serving.sqlite.path)).exists():
        return {**status, "error": "no store yet (nothing published)"}  # opening would create it
    try:
        with open_store(config) as store:
            status["live_generation"] = store.live_generation()
            exports = {}
            for name in PUBLISHED_KINDS:
                text = store.get_state(state_name(name))
                point = json.loads(text) if text else None
                table = versions.get(name)
                exports[name] = {
                    "exported_version": point["version"] if point else None,
                    "table_version": table["version"] if table else None,
                    "same_table": bool(point and table and point["table_id"] == table["id"]),
                }
            status["exports"] = exports
            status["records"] = {kind: store.count(kind) for kind in KINDS}
    except Exception as error:  # noqa: BLE001 (status reports an unreachable store; it does not fail on one)
        status["error"] = one_line(error)
    return status


def pipeline_status(spark: SparkSession, config: Config) -> dict[str, Any]:
    tables = table_status(spark, config)
    return {
        "at": _iso(datetime.now(UTC)),
        "env": config.env,
        "storage_root": config.under_root("").rstrip("/"),
        "queries": query_status(spark, config, tables),
        "tables": tables,
        "validation": validation_status(spark, config),
        "model": model_status(config),
        "serving": serving_status(config, tables),
    }
