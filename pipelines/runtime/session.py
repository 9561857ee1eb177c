"""The one place a SparkSession is built, from config.

Locally the Delta and Kafka jars come from `jars/spark` (fetched by Maven, `make jars`)
through `spark.jars`; on EMR config switches to `spark.jars.packages`, and on Databricks
the runtime already has them (`spark.jars.mode: cluster`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pipelines.config import Config
from pipelines.errors import EnvironmentProblem
from pipelines.runtime.preflight import require_java

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


def spark_conf(config: Config) -> dict[str, str]:
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
    return conf


def build_spark(config: Config, app_name: str | None = None):
    """Get or create the session for a job; the job names itself in the Spark UI."""
    from pyspark.sql import SparkSession

    if config.spark.master and config.spark.master.startswith("local"):
        require_java()
        # Python workers (Python data sources, pandas UDFs) must run this interpreter.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    builder = SparkSession.builder
    for key, value in spark_conf(config).items():
        builder = builder.config(key, value)
    if app_name:
        builder = builder.appName(f"{config.spark.app_name}-{app_name}")
    return builder.getOrCreate()
