"""tailor publish's writes: gold.email_content, gold.content_defaults and
gold.user_traits by MERGE on their key, rewriting only rows whose content changed (so the
Change Data Feed the export reads holds only real changes), and gold.holdout_assignments."""

from __future__ import annotations

import logging
from datetime import date, datetime

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from pipelines.config import Config, TableRef
from pipelines.recommend.writes import commit_metadata
from pipelines.runtime.delta_tables import add_missing_columns, delta_table, ensure_table, table_version
from pipelines.schemas import CONTENT_DEFAULTS, EMAIL_CONTENT, HOLDOUT_ASSIGNMENTS, USER_TRAITS

# table -> (schema, key column)
PUBLISHED_TABLES: dict[str, tuple[StructType, str]] = {
    "gold.email_content": (EMAIL_CONTENT, "user_id"),
    "gold.content_defaults": (CONTENT_DEFAULTS, "key"),
    "gold.user_traits": (USER_TRAITS, "user_id"),
}
_VERSIONING = ("content_version", "generated_at", "content_hash")
log = logging.getLogger("tailor.publish")


def ensure_publish_tables(spark: SparkSession, config: Config) -> None:
    for name, (schema, _) in PUBLISHED_TABLES.items():
        ensure_table(spark, config.table(name), schema,
                     properties={"delta.enableChangeDataFeed": "true"})
        added = add_missing_columns(spark, config.table(name), schema)
        if added:
            log.info("%s: added the columns %s", name, ", ".join(added))
    ensure_table(spark, config.table("gold.holdout_assignments"), HOLDOUT_ASSIGNMENTS)


def _counts(spark: SparkSession, table: TableRef, before: int | None) -> dict[str, int]:
    last = delta_table(spark, table).history(1).select("version", "operationMetrics").first()
    # A MERGE with nothing to do makes no commit: the last entry is then an older one.
    metrics = last.operationMetrics if last and last.version != before else {}
    return {"inserted": int(metrics.get("numTargetRowsInserted", 0)),
            "updated": int(metrics.get("numTargetRowsUpdated", 0)),
            "deleted": int(metrics.get("numTargetRowsDeleted", 0))}


def merge_published(spark: SparkSession, config: Config, name: str, rows: DataFrame, content_version: str,
                    generated_at: datetime, metadata: str) -> dict[str, int]:
    """Make table `name` hold exactly `rows` (its columns but the versioning ones): a row
    whose content hash changed, or a new one, is written with this run's content_version
    and generated_at; an unchanged row is left alone; a key `rows` no longer holds (an
    erased person, a segment or locale gone) is deleted. One commit, with `metadata`."""
    schema, key = PUBLISHED_TABLES[name]
    content = [field.name for field in schema if field.name not in (key, *_VERSIONING)]
    source = rows.select(key, *content,
                         F.lit(content_version).alias("content_version"),
                         F.lit(generated_at).cast("timestamp").alias("generated_at"),
                         F.sha2(F.to_json(F.struct(*content)), 256).alias("content_hash"))
    values = {field.name: F.col(f"s.{field.name}") for field in schema}
    table = config.table(name)
    before = table_version(spark, table)
    merge = (delta_table(spark, table).alias("t").merge(source.alias("s"), f"t.{key} = s.{key}")
             .whenMatchedUpdate(condition="t.content_hash <> s.content_hash", set=values)
             .whenNotMatchedInsert(values=values)
             .whenNotMatchedBySourceDelete())
    with commit_metadata(spark, metadata):
        merge.execute()
    return _counts(spark, table, before)


def merge_holdout(spark: SparkSession, config: Config, assignments: DataFrame, on: date) -> dict[str, int]:
    """gold.holdout_assignments holds one row per person for the current salt: a new
    person is added with `on` as the day their assignment starts; a person whose side
    changed (the share was changed) gets the new side and a new start, one who stayed
    keeps their start; the rows of
    people gone and of earlier salts are deleted (table history keeps them until VACUUM)."""
    table = config.table("gold.holdout_assignments")
    before = table_version(spark, table)
    columns = [field.name for field in HOLDOUT_ASSIGNMENTS if field.name != "assigned_on"]
    values = {name: F.col(f"s.{name}") for name in columns} | {"assigned_on": F.lit(on)}
    (delta_table(spark, table).alias("t")
     .merge(assignments.alias("s"), "t.user_id = s.user_id AND t.salt_id = s.salt_id")
     .whenMatchedUpdate(condition="t.in_holdout <> s.in_holdout", set=values)
     .whenMatchedUpdate(condition="t.share <> s.share", set={"share": F.col("s.share")})
     .whenNotMatchedInsert(values=values)
     .whenNotMatchedBySourceDelete()
     .execute())
    return _counts(spark, table, before)
