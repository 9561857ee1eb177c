"""load_catalog's writes: silver.products by MERGE, bad feed rows into bronze.quarantine."""

from __future__ import annotations

from datetime import datetime

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from pipelines.catalog.transforms import PRODUCT_FIELDS
from pipelines.config import Config, TableRef
from pipelines.runtime.delta_tables import delta_table, ensure_table, read_table, save
from pipelines.schemas import PRODUCTS


def ensure_products_table(spark: SparkSession, config: Config) -> None:
    ensure_table(spark, config.table("silver.products"), PRODUCTS, cluster_by=("product_id",),
                 properties={"delta.enableChangeDataFeed": "true"})


def merge_products(spark: SparkSession, table: TableRef, latest: DataFrame, loaded_at: datetime,
                   deactivate_missing: bool) -> dict[str, int]:
    """Upsert the feed's products; with `deactivate_missing`, an active product the feed
    leaves out becomes inactive. A stored product newer than the feed's row is kept (a feed
    replayed late does not undo a later one), and an unchanged product is not rewritten.
    Deactivation keeps updated_at, so the product's next appearance in a feed, even with
    the same updated_at, makes it active again."""
    changed = F.lit(False)
    for name in PRODUCT_FIELDS:
        # updated_at is not content: a feed without it stamps every row with the load time.
        if name not in ("product_id", "updated_at"):
            changed = changed | ~F.col(f"t.{name}").eqNullSafe(F.col(f"s.{name}"))
    newer = F.col("t.updated_at").isNull() | (F.col("s.updated_at") >= F.col("t.updated_at"))
    merge = (delta_table(spark, table).alias("t")
             .merge(latest.alias("s"), "t.product_id = s.product_id")
             .whenMatchedUpdateAll(condition=newer & changed)
             .whenNotMatchedInsertAll())
    if deactivate_missing:
        merge = merge.whenNotMatchedBySourceUpdate(condition=F.col("t.active"), set={"active": F.lit(False)})
    before = delta_table(spark, table).history(1).select("version").first()
    merge.execute()
    last = delta_table(spark, table).history(1).select("version", "operationMetrics").first()
    # Delta makes no commit for a MERGE that changed nothing: then the last entry is older.
    metrics = last.operationMetrics if last and (before is None or last.version != before.version) else {}
    return {
        "inserted": int(metrics.get("numTargetRowsInserted", 0)),
        "updated": int(metrics.get("numTargetRowsMatchedUpdated", 0)),
        "deactivated": int(metrics.get("numTargetRowsNotMatchedBySourceUpdated", 0)),
    }


def append_new_quarantine(spark: SparkSession, table: TableRef, rows: DataFrame) -> int:
    """Append the rows whose quarantine_id the table does not hold yet; how many."""
    known = read_table(spark, table).select("quarantine_id")
    fresh = rows.join(known, "quarantine_id", "left_anti").localCheckpoint()
    count = fresh.count()
    if count:
        save(fresh.write.format("delta").mode("append"), table)
    return count
