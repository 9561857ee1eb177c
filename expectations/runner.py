"""Running the suites: a file-backed Great Expectations context under
`<storage.root>/quality` (its Data Docs site included), one checkpoint per dataset,
every result appended to audit.quality_results with the table version it checked; and
the gate that train and publish ask before they read a table.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import reduce
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from expectations import DATASETS, Batch, module_for
from pipelines.config import Config
from pipelines.runtime.delta_tables import (
    add_missing_columns,
    ensure_table,
    read_table,
    save,
    table_exists,
    table_version,
)
from pipelines.runtime.filesystems import copy_tree, is_remote
from pipelines.schemas import QUALITY_RESULTS

log = logging.getLogger("tailor.quality")


@dataclass(frozen=True)
class Result:
    dataset: str
    table_version: int | None
    expectation: str
    expectation_type: str
    severity: str
    success: bool
    observed_value: str | None
    input_versions: dict[str, int | None] | None = None


def _version(spark: SparkSession, config: Config, name: str) -> int | None:
    return table_version(spark, config.table(name))


def _reader(spark: SparkSession, config: Config, versions: dict[str, int | None]):
    """Reads each table at the version recorded for it, so the results name what was checked."""
    def read(name: str) -> DataFrame | None:
        if name not in versions:
            versions[name] = _version(spark, config, name)
        version = versions[name]
        if version is None:
            return None
        table = config.table(name)
        if table.catalog_name:
            return spark.read.option("versionAsOf", version).table(table.catalog_name)
        return spark.read.format("delta").option("versionAsOf", version).load(table.path)
    return read


def _noting(read):
    """`read`, and the set of table names it is asked for (filled as a suite builds)."""
    names: set[str] = set()

    def noted(name: str) -> DataFrame | None:
        names.add(name)
        return read(name)
    return noted, names


def _previous(spark: SparkSession, config: Config, versions: dict[str, int | None]):
    """check name -> its observed value in the latest passing enabled run over an earlier
    version of its table (None without one): a failed run, or another run over the same
    version, is never the baseline, so running validate again cannot clear a failure."""
    ref = config.table("audit.quality_results")
    passed: dict[str, list[Any]] = {}
    if table_exists(spark, ref):
        rows = (read_table(spark, ref).where((F.col("mode") == "enabled") & F.col("success"))
                .select("expectation", "table_version", "run_at", "observed_value").collect())
        for row in rows:
            passed.setdefault(row.expectation, []).append(row)

    def previous(name: str) -> Any | None:
        current = versions.get(".".join(name.split(".")[:2]))
        earlier = [row for row in passed.get(name, ())
                   if current is None or (row.table_version is not None and row.table_version < current)]
        if not earlier:
            return None
        latest = max(earlier, key=lambda row: (row.table_version, row.run_at))
        return json.loads(latest.observed_value) if latest.observed_value else None
    return previous


@contextmanager
def _project(config: Config, keep: bool) -> Iterator[str]:
    """The folder the Great Expectations project lives in: <storage.root>/quality. Its file
    context writes through this machine's file system only, so on an object store
    (storage.root s3://...) it works in a local copy: the project's gx/ folder is brought
    down first and, when `keep`, sent back after, Data Docs site and the results it is
    built from included."""
    folder = config.under_root("quality")
    if not is_remote(folder):
        yield folder
        return
    local = tempfile.mkdtemp(prefix="tailor-gx-")
    try:
        copy_tree(f"{folder}/gx", f"{local}/gx")
        yield local
        if keep:
            copy_tree(f"{local}/gx", f"{folder}/gx")
    finally:
        shutil.rmtree(local, ignore_errors=True)


def _context(project_root: str) -> Any:
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="file", project_root_dir=project_root)
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


def _run_batch(context: Any, batch: Batch, build_docs: bool) -> list[tuple[Any, Any]]:
    """(check, GE result) for each check of the batch, in order."""
    import great_expectations as gx

    source = context.data_sources.add_or_update_spark(name="tailor")
    try:
        asset = source.get_asset(batch.name)
    except LookupError:
        asset = source.add_dataframe_asset(name=batch.name)
    try:
        definition = asset.get_batch_definition("whole")
    except KeyError:
        definition = asset.add_batch_definition_whole_dataframe("whole")
    expectations = []
    for check in batch.checks:
        check.expectation.meta = {"tailor_name": check.name, "severity": check.severity}
        expectations.append(check.expectation)
    suite = context.suites.add_or_update(gx.ExpectationSuite(name=batch.name, expectations=expectations))
    validation = context.validation_definitions.add_or_update(
        gx.ValidationDefinition(name=batch.name, data=definition, suite=suite))
    actions = [gx.checkpoint.UpdateDataDocsAction(name="data_docs")] if build_docs else []
    # No sample of the failing values: they are user ids, event ids, email hashes, and the
    # results go to logs, audit.quality_results and the Data Docs, which erasure does not reach.
    checkpoint = context.checkpoints.add_or_update(
        gx.Checkpoint(name=batch.name, validation_definitions=[validation], actions=actions,
                      result_format={"result_format": "SUMMARY", "exclude_unexpected_values": True}))
    outcome = checkpoint.run(batch_parameters={"dataframe": batch.frame})
    by_name = {}
    for validation_result in outcome.run_results.values():
        for result in validation_result.results:
            by_name[result.expectation_config.meta["tailor_name"]] = result
    return [(check, by_name[check.name]) for check in batch.checks]


def _observed(result: Any) -> str | None:
    details = result.result or {}
    kept = {key: details[key] for key in ("observed_value", "element_count", "unexpected_count",
                                         "unexpected_percent") if key in details}
    return json.dumps(kept, default=str, sort_keys=True) if kept else None


def validate(spark: SparkSession, config: Config, datasets: tuple[str, ...], mode: str, as_of: datetime,
             run_at: datetime, build_docs: bool = True,
             pinned: dict[str, int | None] | None = None) -> tuple[str, list[Result]]:
    """Run the suites of `datasets` over each table at its `pinned` version (default: the
    current one); append every result to audit.quality_results."""
    run_id = uuid.uuid4().hex
    versions: dict[str, int | None] = dict(pinned or {})
    read, previous = _reader(spark, config, versions), _previous(spark, config, versions)
    results: list[Result] = []
    # Only a run that builds the Data Docs has anything to keep on a remote root; the
    # results are recorded before the project is copied back, so a failed copy loses none.
    with _project(config, keep=build_docs) as project_root:
        context = _context(project_root)
        for dataset in datasets:
            noted, read_by_suite = _noting(read)
            batches = module_for(dataset).batches(noted, config, previous, as_of)
            inputs = {name: versions.get(name) for name in sorted(read_by_suite - {dataset})} or None
            for batch in batches:
                for check, result in _run_batch(context, batch, build_docs):
                    results.append(Result(dataset, versions.get(dataset), check.name,
                                          result.expectation_config.type, check.severity, bool(result.success),
                                          _observed(result), inputs))
        if results:
            table = config.table("audit.quality_results")
            ensure_table(spark, table, QUALITY_RESULTS)
            add_missing_columns(spark, table, QUALITY_RESULTS)
            rows = [(run_id, run_at, mode, r.dataset, r.table_version, r.expectation, r.expectation_type,
                     r.severity, r.success, r.observed_value, r.input_versions) for r in results]
            save(spark.createDataFrame(rows, QUALITY_RESULTS).write.format("delta").mode("append"), table)
    return run_id, results


def docs_index(config: Config) -> str:
    return config.under_root("quality/gx/uncommitted/data_docs/local_site/index.html")


def gate_refusals(spark: SparkSession, config: Config, datasets: tuple[str, ...],
                  versions: dict[str, int | None] | None = None) -> list[str]:
    """Why the job must not read these tables: each critical expectation that failed over
    the version it is about to read (`versions`, which the job then reads with versionAsOf;
    default: the current one). The streams commit all the time and score writes after the
    daily validate, so the version a job reads has often never been checked: such a
    version is validated on the spot (quality.mode), its results recorded like any run's.
    So is one whose recorded results miss a check the suite holds now, one whose suite
    reads another table that has moved since (a result records the versions of the other
    tables it read: recommendations pass against one version of the catalogue), and one
    whose suite measures against the time of the run (freshness).
    A dry_run check never refuses, but with quality.require_validation the version counts
    as never validated. Empty: go ahead."""
    if config.quality.gate == "off":
        return []
    ref = config.table("audit.quality_results")
    recorded = read_table(spark, ref).where(F.col("mode") == "enabled") if table_exists(spark, ref) else None
    if recorded is not None and "input_versions" not in recorded.columns:
        recorded = recorded.withColumn("input_versions", F.lit(None).cast("map<string,bigint>"))
    pinned = {dataset: versions[dataset] if versions is not None and dataset in versions
              else _version(spark, config, dataset) for dataset in datasets if dataset in DATASETS}
    # A pass of a suite that measures against the time of the run holds at that time only.
    unchecked = [dataset for dataset, version in pinned.items()
                 if version is not None and getattr(module_for(dataset), "RESULTS_DEPEND_ON_TIME", False)]
    refusals: list[str] = []
    shapes = {dataset: _suite_shape(spark, config, dataset, {**(versions or {}), **pinned})
              for dataset, version in pinned.items() if version is not None and dataset not in unchecked}
    # One read of the recorded results for every pinned version (each query of the table
    # costs a Spark job, and publish pins five tables). A result counts only if the other
    # tables its suite read (the catalogue, for recommendations) were at the versions the
    # suite reads now.
    wanted = []
    for dataset, (_, others) in shapes.items():
        condition = (F.col("dataset") == dataset) & (F.col("table_version") == pinned[dataset])
        if others:
            # The same other tables, each at the version read now. A result recorded before
            # the column existed has no map: it never counts for such a suite.
            condition &= (F.array_sort(F.map_keys("input_versions"))
                          == F.array(*[F.lit(other) for other in sorted(others)]))
            for other, other_version in others.items():
                condition &= F.col("input_versions")[other].eqNullSafe(F.lit(other_version))
        else:
            condition &= F.col("input_versions").isNull()
        wanted.append(condition)
    latest: dict[str, list[Any]] = {dataset: [] for dataset in shapes}
    if recorded is not None and wanted:
        for row in (recorded.where(reduce(lambda left, right: left | right, wanted))
                    .groupBy("dataset", "expectation", "severity")
                    .agg(F.max_by("success", "run_at").alias("success")).collect()):
            latest[row.dataset].append(row)
    for dataset, (checks, _) in shapes.items():
        version, rows = pinned[dataset], latest[dataset]
        if not checks <= {row.expectation for row in rows}:
            unchecked.append(dataset)  # never checked, or not by every check the suite holds now
        refusals += [f"{dataset} version {version}: {row.expectation} failed" for row in rows
                     if row.severity == "critical" and not row.success]
    mode = config.quality.mode
    if unchecked and mode != "disabled":
        now = datetime.now(UTC)
        # Every pinned version, so a suite that looks into another table (recommendations
        # into the catalogue) sees what the job will read.
        _, results = validate(spark, config, tuple(unchecked), mode, now, now, build_docs=False,
                              pinned={**(versions or {}), **pinned})
        if mode == "enabled":
            refusals += [f"{result.dataset} version {result.table_version}: {result.expectation} failed"
                         for result in results if result.severity == "critical" and not result.success]
            unchecked = []
    if config.quality.require_validation:
        refusals += [f"{dataset} version {pinned[dataset]} was never validated (tailor validate)"
                     for dataset in unchecked]
    return sorted(set(refusals))


def _suite_shape(spark: SparkSession, config: Config, dataset: str,
                 versions: dict[str, int | None]) -> tuple[set[str], dict[str, int | None]]:
    """(the names of the checks the dataset's suite holds now, the other tables it reads
    with the versions it would read), from its batches as built lazily, without running
    them."""
    read_versions = dict(versions)
    read, read_names = _noting(_reader(spark, config, read_versions))
    batches = module_for(dataset).batches(read, config, lambda _: None, datetime.now(UTC))
    return ({check.name for batch in batches for check in batch.checks},
            {name: read_versions.get(name) for name in sorted(read_names - {dataset})})
