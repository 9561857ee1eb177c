"""load_catalog's writes: silver.products by MERGE, bad feed rows into bronze.quarantine."""

from __future__ import annotations

from datetime import datetime

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from pipelines.catalog.transforms import KEPT_WHEN_ABSENT, PRODUCT_FIELDS, deactivatable
from pipelines.config import Config, TableRef
from pipelines.runtime.delta_tables import delta_table, ensure_table, read_table, save
from pipelines.schemas import PRODUCTS


def ensure_products_table(spark: SparkSession, config: Config) -> None:
    ensure_table(spark, config.table("silver.products"), PRODUCTS,
                 properties={"delta.enableChangeDataFeed": "true"})


def merge_products(spark: SparkSession, table: TableRef, latest: DataFrame, listed_only: DataFrame,
                   full_feed: bool, feed_as_of: datetime | None) -> dict[str, int]:
    """Upsert the feed's products (`latest`, one row each, with the fields it `supplied`).

    A stored product newer than the feed's row is kept (a feed replayed late does not undo
    a later one), an unchanged product is not rewritten, and a field the row left out
    keeps its stored value. With `full_feed`, an active product the feed leaves out becomes
    inactive (see `deactivatable`); `listed_only` holds ids named only on bad rows, which
    stay as they are. Deactivation keeps updated_at, so the product's next appearance in a
    full feed, even with the same updated_at, makes it active again."""
    source = (latest.withColumn("listed_only", F.lit(False))
              .unionByName(listed_only.withColumn("listed_only", F.lit(True)), allowMissingColumns=True))

    def incoming(name: str):
        given = F.col(f"s.{name}")
        # In a full feed, being listed is being active, unless the row says otherwise.
        if name not in KEPT_WHEN_ABSENT or (full_feed and name == "active"):
            return given
        return F.when(F.array_contains(F.col("s.supplied"), name), given).otherwise(F.col(f"t.{name}"))

    values = {name: incoming(name) for name in PRODUCT_FIELDS}
    changed = F.lit(False)
    for name in PRODUCT_FIELDS:
        # updated_at is not content: a feed without it stamps every row with the load time.
        if name not in ("product_id", "updated_at"):
            changed = changed | ~F.col(f"t.{name}").eqNullSafe(values[name])
    newer = F.col("t.updated_at").isNull() | (F.col("s.updated_at") >= F.col("t.updated_at"))
    written = ~F.col("s.listed_only")
    merge = (delta_table(spark, table).alias("t")
             .merge(source.alias("s"), "t.product_id = s.product_id")
             .whenMatchedUpdate(condition=written & newer & changed, set=values)
             .whenNotMatchedInsert(condition=written, values={name: F.col(f"s.{name}") for name in PRODUCT_FIELDS}))
    if full_feed:
        merge = merge.whenNotMatchedBySourceUpdate(
            condition=deactivatable(F.col("t.active"), F.col("t.updated_at"), feed_as_of),
            set={"active": F.lit(False)})
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
