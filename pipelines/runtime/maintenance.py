"""Table maintenance: make deletes final.

A Delta DELETE or MERGE leaves the old data files in place (time travel reads them), and
with deletion vectors it does not even rewrite the file that held the deleted rows, only
marks them. So erasure is final only after both steps, per table:
  REORG TABLE ... APPLY (PURGE)   rewrites files that carry deletion vectors
  VACUUM ... RETAIN n HOURS       removes files no version newer than n hours needs
"""

from __future__ import annotations

import logging

from pyspark.sql import SparkSession

from pipelines.config import TABLES, Config
from pipelines.errors import ConfigError
from pipelines.runtime.delta_tables import delta_table, sql_name, table_exists

log = logging.getLogger("tailor.maintenance")
DELTA_SAFETY_HOURS = 168
_RETENTION_CHECK = "spark.databricks.delta.retentionDurationCheck.enabled"


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


def vacuum_all(spark: SparkSession, config: Config, retention_hours: float | None = None) -> list[str]:
    """Purge and vacuum every Tailor table that exists; returns the tables done."""
    hours = vacuum_retention(config, retention_hours)
    if hours < DELTA_SAFETY_HOURS:
        spark.conf.set(_RETENTION_CHECK, "false")
    done = []
    for name in TABLES:
        table = config.table(name)
        if not table_exists(spark, table):
            continue
        spark.sql(f"REORG TABLE {sql_name(table)} APPLY (PURGE)")
        delta_table(spark, table).vacuum(hours)
        log.info("vacuumed %s (retention %g hours)", name, hours)
        done.append(name)
    return done
