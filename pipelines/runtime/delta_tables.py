"""Creating and addressing Delta tables by TableRef (a path, or a catalog name)."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from delta.exceptions import (
    ConcurrentAppendException,
    ConcurrentDeleteDeleteException,
    ConcurrentDeleteReadException,
    ConcurrentTransactionException,
    ConcurrentWriteException,
    DeltaConcurrentModificationException,
    MetadataChangedException,
    ProtocolChangedException,
)
from delta.tables import DeltaTable
from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, DataFrameWriter, SparkSession
from pyspark.sql.types import StructType

from pipelines.config import CLUSTERED_BY, TableRef

log = logging.getLogger("tailor.delta")
T = TypeVar("T")
TXN_APP_ID = "spark.databricks.delta.write.txnAppId"
TXN_VERSION = "spark.databricks.delta.write.txnVersion"

DEFAULT_PROPERTIES = {
    "delta.enableDeletionVectors": "true",
}


def ensure_table(spark: SparkSession, table: TableRef, schema: StructType,
                 partition_by: tuple[str, ...] = (), properties: dict[str, str] | None = None) -> None:
    """Create the table if it does not exist (clustered as CLUSTERED_BY says); an existing
    table is left as it is."""
    # Every job calls this for each table it touches, nearly always on tables that exist:
    # the lookup costs a tenth of building and running CREATE TABLE IF NOT EXISTS.
    if table_exists(spark, table):
        return
    cluster_by = CLUSTERED_BY.get(table.layer_name, ())
    if table.catalog_name:  # catalog.layer.name: the layer is a schema Unity Catalog must hold first
        schema = ".".join(f"`{part}`" for part in table.catalog_name.split(".")[:-1])
        spark.sql(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    builder = DeltaTable.createIfNotExists(spark).addColumns(schema)
    builder = builder.tableName(table.catalog_name) if table.catalog_name else builder.location(table.path)
    if partition_by:
        builder = builder.partitionedBy(*partition_by)
    if cluster_by:
        builder = builder.clusterBy(*cluster_by)
    for key, value in {**DEFAULT_PROPERTIES, **(properties or {})}.items():
        builder = builder.property(key, value)
    # Jobs started together on a new deployment create their shared tables at once: Delta
    # lets one commit the table and refuses the others (ProtocolChangedException), or one
    # that starts a moment later finds the other's log written but not yet committed (a
    # non-empty location). What they wanted exists then, or does once the other commits.
    for attempt in range(_CREATE_ATTEMPTS):
        try:
            builder.execute()
            return
        except CONFLICTS:
            if table_exists(spark, table):
                return
            raise
        except AnalysisException as error:
            if "DELTA_CREATE_TABLE_WITH_NON_EMPTY_LOCATION" not in str(error) or attempt == _CREATE_ATTEMPTS - 1:
                raise
            time.sleep(0.2 * (attempt + 1))
            if table_exists(spark, table):
                return


_CREATE_ATTEMPTS = 5


_ADD_COLUMN_ATTEMPTS = 3


def add_missing_columns(spark: SparkSession, table: TableRef, schema: StructType) -> list[str]:
    """Add the nullable columns of `schema` an existing table lacks (a table created by an
    older Tailor); returns the names of those this call added (another job upgrading the
    table at the same time may add some). Columns are never dropped or retyped here."""
    present = set(read_table(spark, table).columns)
    missing = [field for field in schema if field.name not in present]
    added = []
    for field in missing:
        if not field.nullable:
            raise ValueError(f"{table}: column {field.name} is missing and cannot be added (it is NOT NULL)")
        for attempt in range(_ADD_COLUMN_ATTEMPTS):
            try:
                spark.sql(f"ALTER TABLE {sql_name(table)} ADD COLUMNS (`{field.name}` {field.dataType.simpleString()})")
                added.append(field.name)
                break
            except (AnalysisException, *CONFLICTS) as error:
                # Two jobs upgrading one table at once: the other added the column first (the
                # ALTER finds a duplicate), or changed the table while this ALTER committed.
                if field.name in read_table(spark, table).columns:
                    break
                if not isinstance(error, CONFLICTS) or attempt == _ADD_COLUMN_ATTEMPTS - 1:
                    raise
    return added


def delta_table(spark: SparkSession, table: TableRef) -> DeltaTable:
    if table.catalog_name:
        return DeltaTable.forName(spark, table.catalog_name)
    return DeltaTable.forPath(spark, table.path)


def read_table(spark: SparkSession, table: TableRef) -> DataFrame:
    if table.catalog_name:
        return spark.read.table(table.catalog_name)
    return spark.read.format("delta").load(table.path)


def read_table_at(spark: SparkSession, table: TableRef, version: int | None) -> DataFrame:
    """The table as it was at `version` (None: as it is now)."""
    if version is None:
        return read_table(spark, table)
    reader = spark.read.format("delta").option("versionAsOf", version)
    return reader.table(table.catalog_name) if table.catalog_name else reader.load(table.path)


def save(writer: DataFrameWriter, table: TableRef) -> None:
    if table.catalog_name:
        writer.saveAsTable(table.catalog_name)
    else:
        writer.save(table.path)


def table_exists(spark: SparkSession, table: TableRef) -> bool:
    if table.catalog_name:
        return spark.catalog.tableExists(table.catalog_name)
    return DeltaTable.isDeltaTable(spark, table.path)


def table_version(spark: SparkSession, table: TableRef) -> int | None:
    """The table's latest version, or None when it does not exist yet."""
    if not table_exists(spark, table):
        return None
    return int(delta_table(spark, table).history(1).select("version").first().version)


def read_changes(spark: SparkSession, table: TableRef, first_version: int, last_version: int) -> DataFrame:
    """The table's Change Data Feed over versions first..last (both included)."""
    reader = (spark.read.format("delta").option("readChangeFeed", "true")
              .option("startingVersion", first_version).option("endingVersion", last_version))
    return reader.table(table.catalog_name) if table.catalog_name else reader.load(table.path)


def sql_name(table: TableRef) -> str:
    """The table as SQL names it: catalog.schema.table, or delta.`path`."""
    return table.catalog_name or f"delta.`{table.path}`"


# Commit conflicts: another writer committed first and what it changed overlaps what this
# write read. Delta leaves the table untouched, so running the write again is safe.
CONFLICTS = (ConcurrentAppendException, ConcurrentDeleteReadException, ConcurrentDeleteDeleteException,
             ConcurrentTransactionException, ConcurrentWriteException, MetadataChangedException,
             ProtocolChangedException, DeltaConcurrentModificationException)


def retry_on_conflict(write: Callable[[], T], what: str, retries: int,
                      backoff_s: float = 0.5, on_conflict: Callable[[int], None] | None = None) -> T:
    """Run `write`; when it loses a commit race, wait (with jitter) and run it again."""
    attempt = 0
    while True:
        try:
            return write()
        except CONFLICTS as conflict:
            attempt += 1
            if attempt > retries:
                raise
            kind = type(conflict).__name__
            log.warning("%s lost a commit race (%s); retry %d of %d", what, kind, attempt, retries)
            if on_conflict:
                on_conflict(attempt)
            time.sleep(backoff_s * (2 ** (attempt - 1)) * (0.5 + random.random()))


@contextmanager
def idempotent_writes(spark: SparkSession, app_id: str, version: int) -> Iterator[None]:
    """Every Delta write in the block (MERGE, DELETE, UPDATE, append) carries this
    txnAppId/txnVersion, so a micro-batch replayed after a crash skips each write it had
    already committed. The confs are set on the session the streaming query runs in,
    which Spark clones per query, so other queries are not affected."""
    spark.conf.set(TXN_APP_ID, app_id)
    spark.conf.set(TXN_VERSION, str(version))
    try:
        yield
    finally:
        spark.conf.unset(TXN_APP_ID)
        spark.conf.unset(TXN_VERSION)


def read_stream(spark: SparkSession, table: TableRef, options: dict[str, str] | None = None) -> DataFrame:
    reader = spark.readStream.format("delta")
    for key, value in (options or {}).items():
        reader = reader.option(key, value)
    return reader.table(table.catalog_name) if table.catalog_name else reader.load(table.path)
