"""The one place a SparkSession is built, from config.

Locally the Delta and Kafka jars come from `jars/spark` (fetched by Maven, `make jars`)
through `spark.jars`; on EMR config switches to `spark.jars.packages`, and on Databricks
the runtime already has them (`spark.jars.mode: cluster`).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from pipelines.config import Config
from pipelines.errors import EnvironmentProblem
from pipelines.pii import DEDUP_SALT_REDACTION
from pipelines.runtime.preflight import require_java

log = logging.getLogger("tailor.spark")
_jvm_log: str | None = None
_REDACTION_KEY = "spark.sql.redaction.string.regex"
_DELTA_CONF = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
}


def local_jars(config: Config) -> list[str]:
    folder = Path(config.resolve(config.spark.jars.local_dir))
    jars = sorted(str(path) for path in folder.glob("*.jar"))
    if not any("delta-spark" in Path(jar).name for jar in jars):
        raise EnvironmentProblem(
            f"the Delta and Kafka jars are missing from {folder}: run `make jars` "
            "(needs Maven and Maven Central)"
        )
    return jars


def is_local(config: Config) -> bool:
    return bool(config.spark.master and config.spark.master.startswith("local"))


def log_file(config: Config, app_name: str | None) -> str | None:
    """Where a local job's JVM logs go, when config routes them to a file."""
    if not (is_local(config) and config.spark.log4j_config):
        return None
    return config.under_root(f"logs/{app_name or config.spark.app_name}.log")


def spark_conf(config: Config, app_name: str | None = None) -> dict[str, str]:
    """Every setting the session gets, so it can be inspected without starting Spark."""
    conf = dict(_DELTA_CONF)
    conf["spark.app.name"] = config.spark.app_name
    conf["spark.sql.shuffle.partitions"] = str(config.spark.shuffle_partitions)
    conf["spark.ui.enabled"] = str(config.spark.ui_enabled).lower()
    if config.spark.master:
        conf["spark.master"] = config.spark.master
    jars = config.spark.jars
    if jars.mode == "local_dir":
        conf["spark.jars"] = ",".join(local_jars(config))
    elif jars.mode == "packages":
        conf["spark.jars.packages"] = ",".join(jars.packages)
    conf.update(config.spark.conf)
    # Plans printed by Spark never show ingest's dedup salt (see pii.dedup_salt).
    redaction = conf.get(_REDACTION_KEY)
    conf[_REDACTION_KEY] = f"({redaction})|({DEDUP_SALT_REDACTION})" if redaction else DEDUP_SALT_REDACTION
    log_to = log_file(config, app_name)
    if log_to and config.spark.log4j_config:
        # Read when the driver JVM starts: pyspark hands these to spark-submit.
        options = (f"-Dlog4j2.configurationFile=file:{config.conf_file(config.spark.log4j_config)} "
                   f"-Dtailor.log.file={log_to}")
        existing = conf.get("spark.driver.extraJavaOptions")
        conf["spark.driver.extraJavaOptions"] = f"{existing} {options}" if existing else options
    return conf


def build_spark(config: Config, app_name: str | None = None):
    """Get or create the session for a job; the job names itself in the Spark UI."""
    from pyspark.sql import SparkSession

    if is_local(config):
        require_java()
        # Python workers (Python data sources, pandas UDFs) must run this interpreter.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    builder = SparkSession.builder
    for key, value in spark_conf(config, app_name).items():
        builder = builder.config(key, value)
    if app_name:
        builder = builder.appName(f"{config.spark.app_name}-{app_name}")
    global _jvm_log
    first = SparkSession.getActiveSession() is None
    session = builder.getOrCreate()
    _quiet_query_context_logs()
    log_to = log_file(config, app_name)
    if first and log_to:
        _jvm_log = log_to
        log.info("Spark and JVM logs: %s", log_to)
    return session


def _quiet_query_context_logs() -> None:
    """PySpark logs every analysis error's query context as a JSON line on stderr, even
    when the caller catches the error and answers it in one line; the raised error
    carries the same message."""
    from pyspark.logger import PySparkLogger

    for name in ("DataFrameQueryContextLogger", "SQLQueryContextLogger"):
        PySparkLogger.getLogger(name).setLevel(logging.CRITICAL)


def jvm_log() -> str | None:
    """The file this process's JVM logs to, when config routes them to one."""
    return _jvm_log
