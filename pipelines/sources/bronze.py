"""bronze.events as a source for the jobs downstream of ingest."""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession

from pipelines.config import Config
from pipelines.runtime.delta_tables import read_stream


def read_bronze_events(spark: SparkSession, config: Config, max_files_per_trigger: int | None) -> DataFrame:
    """bronze.events as a stream. Erasure deletes rows from it; the stream skips those
    commits rather than failing on a source that is not append-only."""
    options = {"skipChangeCommits": "true"}
    if max_files_per_trigger:
        options["maxFilesPerTrigger"] = str(max_files_per_trigger)
    return read_stream(spark, config.table("bronze.events"), options)
