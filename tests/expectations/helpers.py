"""A failed critical result recorded for a table's current version, as tailor validate
would leave it: what the gates of train and publish read."""

from __future__ import annotations

from datetime import UTC, datetime

from pipelines.runtime.delta_tables import delta_table, ensure_table
from pipelines.schemas import QUALITY_RESULTS


def record_failure(spark, config, dataset: str, expectation: str, success: bool = False) -> int:
    version = delta_table(spark, config.table(dataset)).history(1).first().version
    table = config.table("audit.quality_results")
    ensure_table(spark, table, QUALITY_RESULTS)
    row = ("run-1", datetime.now(UTC), "enabled", dataset, version, expectation, "expect_column_values_to_be_unique",
           "critical", success, '{"unexpected_count": 1}', None)
    spark.createDataFrame([row], QUALITY_RESULTS).write.format("delta").mode("append").save(table.path)
    return version
