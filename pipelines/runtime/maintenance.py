"""Table maintenance: compact what streaming writes in small commits, keep clustering,
bound each table's history, make deletes final, and drop orphaned checkpoints.

Per table, in this order:
  ALTER TABLE ... CLUSTER BY (key)   when CLUSTERED_BY names keys the table lacks
  OPTIMIZE ...                       bin-packs small files; on a clustered table it also
                                     clusters the files not yet clustered (FULL: all of
                                     them, after the keys changed)
  delta.logRetentionDuration         Delta deletes commits older than this at its next
                                     log checkpoint (and delta.deletedFileRetentionDuration,
                                     the vacuum retention, which it must not exceed)
  REORG TABLE ... APPLY (PURGE)      rewrites files that carry deletion vectors
  VACUUM ... RETAIN n HOURS          removes files no version newer than n hours needs
  a log checkpoint                   deletes the expired commits now (their file
                                     statistics name the rows the files held)

A Delta DELETE or MERGE leaves the old data files in place (time travel reads them), and
with deletion vectors it does not even rewrite the file that held the deleted rows, only
marks them: erasure is final only after the last two steps.

OPTIMIZE and REORG rewrite files without changing a row (dataChange=false), so streaming
readers of a table skip them; ALTER TABLE commits change metadata only. A running job can
keep writing: a commit race is retried.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from py4j.protocol import Py4JError
from pyspark.sql import SparkSession

from pipelines.config import CHECKPOINTS, CLUSTERED_BY, TABLES, Config
from pipelines.errors import ConfigError
from pipelines.runtime.delta_tables import delta_table, retry_on_conflict, sql_name, table_exists
from pipelines.runtime.filesystems import filesystem

log = logging.getLogger("tailor.maintenance")
DELTA_SAFETY_HOURS = 168
_RETENTION_CHECK = "spark.databricks.delta.retentionDurationCheck.enabled"
_LOG_RETENTION = "delta.logRetentionDuration"
_DELETED_FILE_RETENTION = "delta.deletedFileRetentionDuration"
ORPHAN_IDLE_HOURS = 24.0


@dataclass(frozen=True)
class TableUpkeep:
    """What maintenance did to one table."""

    table: str
    files_before: int
    files_after: int
    clustered_by: tuple[str, ...]
    clustering_added: bool
    vacuumed: bool
    seconds: float


def vacuum_retention(config: Config, retention_hours: float | None = None) -> float:
    """The retention a vacuum runs with; one below Delta's safety margin only when config
    allows it. Checked before Spark starts."""
    hours = config.maintenance.vacuum_retention_hours if retention_hours is None else retention_hours
    if hours < DELTA_SAFETY_HOURS and not config.maintenance.allow_short_retention:
        raise ConfigError(
            f"maintenance.vacuum_retention_hours: {hours:g} is below Delta's {DELTA_SAFETY_HOURS}-hour "
            "safety margin, which protects running readers and writers; set "
            "maintenance.allow_short_retention=true only when no job is running")
    return hours


def _allow_retention(spark: SparkSession, hours: float) -> None:
    if hours < DELTA_SAFETY_HOURS:
        spark.conf.set(_RETENTION_CHECK, "false")


def _purge_and_vacuum(spark: SparkSession, config: Config, name: str, hours: float) -> None:
    table = config.table(name)
    retry_on_conflict(lambda: spark.sql(f"REORG TABLE {sql_name(table)} APPLY (PURGE)"),
                      f"purge {name}", config.maintenance.conflict_retries)
    delta_table(spark, table).vacuum(hours)
    _expire_old_commits(spark, config, name)
    log.info("vacuumed %s (retention %g hours)", name, hours)


def _expire_old_commits(spark: SparkSession, config: Config, name: str) -> None:
    """Write a log checkpoint now, which makes Delta delete the commits (and their .crc
    files) older than delta.logRetentionDuration, up to the newest checkpoint older than
    that. The commits of a file's `add` hold the min/max of its columns, so until they go,
    a user id that was the smallest or largest in a file outlives the file. Delta counts
    the retention from midnight (UTC). Best effort: open-source Delta only (Databricks
    ships Delta under other class names, and checkpoints and cleans up on its own); the
    next checkpoint Delta writes after a commit does the same, only later."""
    detail = _detail(spark, config, name)
    _bound_history(spark, config, name, dict(detail.properties or {}))
    try:
        delta_log = spark._jvm.org.apache.spark.sql.delta.DeltaLog  # type: ignore[union-attr]
        delta_log.forTable(spark._jsparkSession, detail.location).checkpoint()
    except (Py4JError, TypeError) as error:  # TypeError: py4j found no such class here
        log.warning("%s: no log checkpoint written now (%s); Delta deletes expired commits at its next one",
                    name, type(error).__name__)


def vacuum_all(spark: SparkSession, config: Config, retention_hours: float | None = None) -> list[str]:
    """Purge and vacuum every Tailor table that exists; returns the tables done."""
    hours = vacuum_retention(config, retention_hours)
    _allow_retention(spark, hours)
    done = []
    for name in TABLES:
        if table_exists(spark, config.table(name)):
            _purge_and_vacuum(spark, config, name, hours)
            done.append(name)
    return done


def _detail(spark: SparkSession, config: Config, name: str):
    return spark.sql(f"DESCRIBE DETAIL {sql_name(config.table(name))}").first()


def _cluster(spark: SparkSession, config: Config, name: str, current: tuple[str, ...],
             partitioned: bool) -> bool:
    """Cluster the table by CLUSTERED_BY's keys when it is not already; True when changed."""
    wanted = CLUSTERED_BY.get(name, ())
    if not wanted or wanted == current:
        return False
    if partitioned:
        log.warning("%s is partitioned, so it cannot be clustered by %s; left as it is", name, ", ".join(wanted))
        return False
    spark.sql(f"ALTER TABLE {sql_name(config.table(name))} CLUSTER BY ({', '.join(wanted)})")
    log.info("%s: clustered by %s (was: %s)", name, ", ".join(wanted), ", ".join(current) or "none")
    return True


def _bound_history(spark: SparkSession, config: Config, name: str, properties: dict[str, str]) -> None:
    """Set delta.logRetentionDuration and delta.deletedFileRetentionDuration from config:
    how long commits stay, and how long a checkpoint remembers removed files (the
    retention a VACUUM without RETAIN uses; Delta wants it at most the former). From the
    configured retention, not a one-off `--retention-hours`, which must not become the
    table's default."""
    wanted = {_LOG_RETENTION: f"interval {config.maintenance.log_retention_days} days",
              _DELETED_FILE_RETENTION: f"interval {round(config.maintenance.vacuum_retention_hours * 3600)} seconds"}
    changed = {key: value for key, value in wanted.items() if properties.get(key) != value}
    if changed:
        settings = ", ".join(f"'{key}' = '{value}'" for key, value in changed.items())
        spark.sql(f"ALTER TABLE {sql_name(config.table(name))} SET TBLPROPERTIES ({settings})")


def maintain_table(spark: SparkSession, config: Config, name: str, vacuum_hours: float | None) -> TableUpkeep:
    """Cluster, compact, bound the history of, and (with vacuum_hours) purge and vacuum
    one existing table."""
    started = time.monotonic()
    detail = _detail(spark, config, name)
    current = tuple(detail.clusteringColumns or ())
    added = _cluster(spark, config, name, current, bool(detail.partitionColumns))
    clustered_by = CLUSTERED_BY.get(name, ()) if added else current
    # FULL reclusters files clustered by the old keys too; plain OPTIMIZE leaves them.
    full = " FULL" if added and current else ""
    retry_on_conflict(lambda: spark.sql(f"OPTIMIZE {sql_name(config.table(name))}{full}").collect(),
                      f"OPTIMIZE {name}", config.maintenance.conflict_retries)
    _bound_history(spark, config, name, dict(detail.properties or {}))
    if vacuum_hours is not None:
        _purge_and_vacuum(spark, config, name, vacuum_hours)
    after = _detail(spark, config, name)
    return TableUpkeep(name, int(detail.numFiles), int(after.numFiles), clustered_by, added,
                       vacuum_hours is not None, round(time.monotonic() - started, 1))


def maintain_all(spark: SparkSession, config: Config, vacuum: bool = True,
                 retention_hours: float | None = None) -> tuple[list[TableUpkeep], dict[str, str]]:
    """Maintain every Tailor table that exists: (what was done, table -> why it failed).
    A table that fails (a commit race lost past the retries) does not stop the others, so
    one busy table never leaves the rest without their purge and VACUUM."""
    hours = vacuum_retention(config, retention_hours) if vacuum else None
    if hours is not None:
        _allow_retention(spark, hours)
    done, failed = [], {}
    for name in TABLES:
        try:
            if table_exists(spark, config.table(name)):
                done.append(maintain_table(spark, config, name, hours))
        except Exception as error:  # noqa: BLE001 (reported per table; the job exits 1)
            # The class only: an error's text may quote the rows it failed on; the JVM's log has it.
            log.error("maintaining %s failed: %s", name, type(error).__name__)
            failed[name] = type(error).__name__
    return done, failed


def orphaned_checkpoints(config: Config, idle_hours: float = ORPHAN_IDLE_HOURS) -> list[str]:
    """Checkpoint folders under the checkpoint root that no current query uses: left by a
    query whose checkpoint was renamed. A folder counts only when it holds a query's
    `metadata` file and nothing in it changed for `idle_hours`, so a query of an older
    deployment still running during an upgrade keeps its checkpoint."""
    from pyarrow import fs as pafs

    root = config.checkpoint("")
    fs, folder = filesystem(root)
    current = set(CHECKPOINTS.values())
    idle_since = time.time() - idle_hours * 3600
    orphans = []
    for info in fs.get_file_info(pafs.FileSelector(folder.rstrip("/"), allow_not_found=True)):
        name = info.base_name
        if info.type != pafs.FileType.Directory or name in current:
            continue
        if fs.get_file_info(f"{info.path}/metadata").type != pafs.FileType.File:
            continue
        changed = [entry.mtime_ns for entry in fs.get_file_info(pafs.FileSelector(info.path, recursive=True))
                   if entry.type == pafs.FileType.File and entry.mtime_ns is not None]
        if max(changed, default=0) / 1e9 < idle_since:
            orphans.append(root.rstrip("/") + "/" + name)
    return sorted(orphans)


def remove_checkpoints(paths: list[str]) -> None:
    for path in paths:
        fs, folder = filesystem(path)
        fs.delete_dir(folder)
        log.info("removed the orphaned checkpoint %s", path)
