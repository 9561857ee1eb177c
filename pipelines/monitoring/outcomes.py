"""Job outcomes in audit.job_runs: one row per run of a job that started Spark."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime

from pipelines.config import Config
from pipelines.runtime.delta_tables import ensure_table, save
from pipelines.schemas import JOB_RUNS

log = logging.getLogger("tailor.outcomes")


def outcome_of(exit_code: int) -> str:
    return {0: "succeeded", 130: "interrupted"}.get(exit_code, "failed")


def record_job_run(config: Config, job: str, started: datetime, exit_code: int, error: str | None) -> bool:
    """Append the run to audit.job_runs with the Spark session the job started; False (and
    nothing written) when it started none. A failure to record is logged, never raised:
    it must not turn a job that succeeded into one that failed."""
    from pyspark.sql import SparkSession

    spark = SparkSession.getActiveSession()
    if spark is None:
        return False
    finished = datetime.now(UTC)
    # Zone-aware: PySpark would read naive datetimes as the process's local time.
    row = (uuid.uuid4().hex, job, config.env, started, finished,
           round((finished - started).total_seconds(), 3), outcome_of(exit_code), exit_code, error)
    try:
        table = config.table("audit.job_runs")
        ensure_table(spark, table, JOB_RUNS)
        save(spark.createDataFrame([row], JOB_RUNS).write.format("delta").mode("append"), table)
        return True
    except Exception as problem:  # noqa: BLE001 (see the docstring)
        log.warning("could not record %s's outcome in audit.job_runs: %s", job, type(problem).__name__)
        return False
