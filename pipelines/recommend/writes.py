"""tailor score's write: gold.recommendations by one MERGE, with the run's state in its commit."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from pipelines.config import Config, TableRef
from pipelines.runtime.delta_tables import delta_table, ensure_table
from pipelines.schemas import RECOMMENDATIONS

_USER_METADATA = "spark.databricks.delta.commitInfo.userMetadata"
_COLUMNS = tuple(field.name for field in RECOMMENDATIONS)


def ensure_recommendations_table(spark: SparkSession, config: Config) -> None:
    ensure_table(spark, config.table("gold.recommendations"), RECOMMENDATIONS,
                 properties={"delta.enableChangeDataFeed": "true"})


@contextmanager
def commit_metadata(spark: SparkSession, text: str) -> Iterator[None]:
    """Record `text` in the commits made inside (Delta's commitInfo.userMetadata): the
    state and the rows land in one atomic commit, so they can never disagree."""
    spark.conf.set(_USER_METADATA, text)
    try:
        yield
    finally:
        spark.conf.unset(_USER_METADATA)


def merge_recommendations(spark: SparkSession, table: TableRef, rows: DataFrame, erased: DataFrame | None,
                          full: bool, metadata: str) -> dict[str, int]:
    """Upsert one row per person; `erased` people's rows are deleted, and with `full`
    so is anyone `rows` does not hold. Returns the MERGE's counts."""
    source = rows.withColumn("_erase", F.lit(False))
    if erased is not None:
        source = source.unionByName(erased.select("user_id").withColumn("_erase", F.lit(True)),
                                    allowMissingColumns=True)
    values = {name: F.col(f"s.{name}") for name in _COLUMNS}
    merge = (delta_table(spark, table).alias("t").merge(source.alias("s"), "t.user_id = s.user_id")
             .whenMatchedDelete(condition=F.col("s._erase"))
             .whenMatchedUpdate(set=values)
             .whenNotMatchedInsert(condition=~F.col("s._erase"), values=values))
    if full:
        merge = merge.whenNotMatchedBySourceDelete()
    before = delta_table(spark, table).history(1).select("version").first()
    with commit_metadata(spark, metadata):
        merge.execute()
    last = delta_table(spark, table).history(1).select("version", "operationMetrics").first()
    # A MERGE with nothing to do makes no commit: the last entry is then an older one.
    metrics = last.operationMetrics if last and (before is None or last.version != before.version) else {}
    return {"inserted": int(metrics.get("numTargetRowsInserted", 0)),
            "updated": int(metrics.get("numTargetRowsUpdated", 0)),
            "deleted": int(metrics.get("numTargetRowsDeleted", 0))}
