"""Creating and addressing Delta tables by TableRef (a path, or a catalog name)."""

from __future__ import annotations

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, DataFrameWriter, SparkSession
from pyspark.sql.types import StructType

from pipelines.config import TableRef

DEFAULT_PROPERTIES = {
    "delta.enableDeletionVectors": "true",
}


def ensure_table(spark: SparkSession, table: TableRef, schema: StructType,
                 partition_by: tuple[str, ...] = (), properties: dict[str, str] | None = None) -> None:
    """Create the table if it does not exist; an existing table is left as it is."""
    builder = DeltaTable.createIfNotExists(spark).addColumns(schema)
    builder = builder.tableName(table.catalog_name) if table.catalog_name else builder.location(table.path)
    if partition_by:
        builder = builder.partitionedBy(*partition_by)
    for key, value in {**DEFAULT_PROPERTIES, **(properties or {})}.items():
        builder = builder.property(key, value)
    builder.execute()


def delta_table(spark: SparkSession, table: TableRef) -> DeltaTable:
    if table.catalog_name:
        return DeltaTable.forName(spark, table.catalog_name)
    return DeltaTable.forPath(spark, table.path)


def read_table(spark: SparkSession, table: TableRef) -> DataFrame:
    if table.catalog_name:
        return spark.read.table(table.catalog_name)
    return spark.read.format("delta").load(table.path)


def save(writer: DataFrameWriter, table: TableRef) -> None:
    if table.catalog_name:
        writer.saveAsTable(table.catalog_name)
    else:
        writer.save(table.path)
