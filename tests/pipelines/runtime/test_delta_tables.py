"""Jobs started together on a new deployment (parallel tasks of one workflow) create and
upgrade their shared tables at the same moment: each must go on, not fail once."""

from __future__ import annotations

import threading
from collections.abc import Callable

from pyspark.sql.types import LongType, StringType, StructField, StructType

from pipelines.config import TableRef
from pipelines.runtime.delta_tables import add_missing_columns, ensure_table, read_table

OLD = StructType([StructField("run_id", StringType())])
NEW = StructType([StructField("run_id", StringType()), StructField("input_versions", LongType())])


def together(action: Callable[[], object]) -> list[object]:
    """`action` in two threads released at once; what each returned, failing on any error."""
    barrier = threading.Barrier(2)
    results: list[object] = []
    errors: list[BaseException] = []

    def run() -> None:
        barrier.wait()
        try:
            results.append(action())
        except Exception as error:  # noqa: BLE001 - the test reports any
            errors.append(error)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [str(error)[:200] for error in errors] == []
    return results


def test_two_jobs_create_then_upgrade_one_table_at_the_same_moment(spark, tmp_path):
    table = TableRef("audit.quality_results", path=str(tmp_path / "quality_results"))
    together(lambda: ensure_table(spark, table, OLD))
    assert read_table(spark, table).columns == ["run_id"]
    added = together(lambda: add_missing_columns(spark, table, NEW))
    assert sorted(added, key=len) == [[], ["input_versions"]]  # one of them added it
    assert read_table(spark, table).columns == ["run_id", "input_versions"]
