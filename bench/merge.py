"""Benchmark: a merge_profiles batch of changes costs the same on a large table as on a small one.

    .venv/bin/python bench/merge.py [--rows 100000 1000000] [--changes 10000]

silver.profiles is filled with --rows people (Debezium creates of crm.public.customers,
through the ingest validation and merge_profiles' own batch writer), then a batch of
--changes updates (each to a different existing person, spread over the whole table) goes
through the same writer, as the streaming job runs it: audit, profiles MERGE, history
MERGE, duplicates. At each size, after the table is grown to it, one untimed batch warms
up (unless --no-warm-up) and the median of --repeat timed batches is taken. Reported: the batch's time at the
largest size against the smallest (goal: at most 1.3x), and, from the table history, the rows
silver.profiles' MERGE copied (`numTargetRowsCopied`: rows rewritten only because they
shared a file with a changed row; goal near 0 with deletion vectors). Results in
bench/results/merge.json.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pyspark.sql import DataFrame, SparkSession  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402

from bench.report import result, workspace, write  # noqa: E402
from pipelines.config import Config, load_config  # noqa: E402
from pipelines.ingest.transforms import bronze_rows  # noqa: E402
from pipelines.ingest.validation import add_ingest_columns, validate_crm_changes  # noqa: E402
from pipelines.pii import load_keys  # noqa: E402
from pipelines.profiles.writes import ProfilesBatchWriter, ensure_profile_tables  # noqa: E402
from pipelines.runtime.delta_tables import delta_table, read_table  # noqa: E402
from pipelines.runtime.session import build_spark  # noqa: E402

COUNTRIES = ("GB", "FR", "DE", "IE", "US", "NL", "ES", "IT")
BASE_MILLIS = 1_790_000_000_000  # 2026-09-21


def _person(country_index: str):
    return F.struct(
        F.concat(F.lit("u"), F.col("u")).alias("user_id"),
        F.concat(F.lit("person"), F.col("u"), F.lit("@example.com")).alias("email"),
        F.concat(F.lit("First"), F.col("u") % 997).alias("first_name"),
        F.concat(F.lit("Last"), F.col("u") % 991).alias("last_name"),
        F.lit(None).cast("string").alias("phone"),
        F.element_at(F.array(*[F.lit(c) for c in COUNTRIES]),
                     (F.col(country_index) % len(COUNTRIES) + 1).cast("int")).alias("country"),
        F.lit("en-GB").alias("locale"),
        F.lit(None).cast("string").alias("updated_at"))


def crm_changes(spark: SparkSession, users: DataFrame, op: str, lsn_base: int, country_shift: int) -> DataFrame:
    """bronze.events rows of one Debezium change per user (`users`: column u, a number),
    through the ingest job's own validation."""
    at = F.lit(BASE_MILLIS) + F.col("u")
    before = F.when(F.lit(op != "c"), _person("u"))  # null for a create
    change = F.struct(
        before.alias("before"),
        _person("country_index").alias("after"),
        F.lit(op).alias("op"), (at + 40).alias("ts_ms"),
        F.struct((F.lit(lsn_base) + F.col("u")).alias("lsn"), at.alias("ts_ms"), F.lit("crm").alias("db"),
                 F.lit("public").alias("schema"), F.lit("customers").alias("table"),
                 F.lit("postgresql").alias("connector"), F.lit("crm").alias("name")).alias("source"),
        F.lit(None).cast("string").alias("transaction"))
    raw = (users.withColumn("country_index", F.col("u") + country_shift)
           .select(F.to_json(change, {"ignoreNullFields": "false"}).cast("binary").alias("raw"),
                   F.lit("files").alias("source_kind"), F.lit("landing/crm").alias("source_stream"),
                   F.lit("bench.jsonl").alias("source_partition"), F.col("u").cast("string").alias("source_offset"),
                   F.lit(None).cast("timestamp").alias("source_timestamp"))
           .localCheckpoint())  # the raw text first, as a source hands it over
    # Checkpointed before the filter, as the ingest job caches its batch: a filter over the
    # bare plan would copy the validation's expressions into itself.
    validated = validate_crm_changes(raw).transform(add_ingest_columns).localCheckpoint()
    return bronze_rows(validated.where(F.col("error_code").isNull())).localCheckpoint()


class Batches:
    def __init__(self, spark: SparkSession, config: Config):
        self.spark, self.config = spark, config
        self.writer = ProfilesBatchWriter(config, load_keys(config), "tailor.bench.merge")
        self.batch_id = 0

    def run(self, frame: DataFrame) -> float:
        started = time.perf_counter()
        self.writer(frame, self.batch_id)
        self.batch_id += 1
        return time.perf_counter() - started

    def last_profiles_merge(self) -> dict[str, int]:
        history = delta_table(self.spark, self.config.table("silver.profiles")).history(5)
        row = history.where(F.col("operation") == "MERGE").orderBy(F.col("version").desc()).first()
        return {key: int(value) for key, value in row.operationMetrics.items()
                if key in ("numTargetRowsCopied", "numTargetRowsUpdated", "numTargetRowsInserted",
                           "numTargetFilesAdded", "numTargetFilesRemoved", "numTargetDeletionVectorsAdded",
                           "executionTimeMs")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--changes", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3, help="timed batches per size (the median is reported)")
    parser.add_argument("--no-warm-up", dest="warm_up", action="store_false",
                        help="time every batch, with no untimed one first (smoke runs)")
    parser.add_argument("--set", action="append", default=[], help="config override, as for tailor")
    args = parser.parse_args()
    sizes = sorted(set(args.rows))
    if len(sizes) < 2:
        parser.error("--rows needs two sizes or more: the goal compares the largest with the smallest")
    warm_up = 1 if args.warm_up else 0
    if (args.repeat + warm_up) * len(sizes) > sizes[0] // args.changes:
        parser.error("each batch must change people no earlier batch changed: give fewer --repeat or --changes, "
                     "or a larger smallest --rows")
    root = workspace("merge")
    shutil.rmtree(root, ignore_errors=True)
    config = load_config("local", [f"storage.root={root}", *args.set])
    spark = build_spark(config, "bench-merge")
    spark.sparkContext.setLogLevel("ERROR")
    ensure_profile_tables(spark, config)
    batches = Batches(spark, config)

    def updates(round_number: int, population: int) -> DataFrame:
        # Every population/changes-th person, from a different start each round: spread
        # over the whole table, as real changes are.
        step = max(1, population // args.changes)
        users = spark.range(args.changes).select(((F.col("id") * step + round_number) % population).alias("u"))
        # The country moves 1 to 7 places along the 8: never back to the one stored.
        return crm_changes(spark, users, "u", 10_000_000 * (round_number + 1), round_number % 7 + 1)

    measured, filled, round_number = [], 0, 0
    for size in sizes:
        started = time.perf_counter()
        batches.run(crm_changes(spark, spark.range(filled, size).withColumnRenamed("id", "u"), "c", 0, 0))
        filled = size
        print(f"filled silver.profiles to {read_table(spark, config.table('silver.profiles')).count()} rows "
              f"in {time.perf_counter() - started:.0f} s")
        samples = []
        for batch_number in range(args.repeat + warm_up):  # with a warm-up, the first
            seconds = batches.run(updates(round_number, size))
            round_number += 1
            metrics = batches.last_profiles_merge()
            missing = {"numTargetRowsCopied", "numTargetRowsUpdated"} - set(metrics)
            if missing:
                raise SystemExit(f"the profiles MERGE's history lacks {sorted(missing)}: cannot tell rows rewritten")
            if metrics["numTargetRowsUpdated"] != args.changes:
                raise SystemExit(f"a batch updated {metrics['numTargetRowsUpdated']} profiles, not {args.changes}")
            if batch_number >= warm_up:
                samples.append(seconds)
        seconds = statistics.median(samples)
        measured.append({"rows": size, "seconds": seconds, "samples": [round(x, 2) for x in samples], **metrics})
        print(f"{args.changes} changes into {size} rows: {seconds:.1f} s (median of {samples}); "
              f"profiles MERGE {metrics}")

    small, large = measured[0], measured[-1]
    results = [result(f"merge.profiles_batch.{large['rows']}_vs_{small['rows']}_rows", large["seconds"],
                      small["seconds"], "seconds",
                      f"at most 1.3x: {args.changes} changes into {large['rows']} rows against {small['rows']}",
                      higher_is_better=False, goal_ratio=round(1 / 1.3, 3), changes=args.changes)]
    for size in measured:
        copied = size["numTargetRowsCopied"]
        results.append({"name": f"merge.rows_copied.{size['rows']}_rows", "value": copied, "baseline": None,
                        "unit": "rows", "ratio": None,
                        "goal": "near 0 (at most 1% of the changes): deletion vectors mark rows, no rewrite",
                        "met": copied <= args.changes // 100, "seconds": round(size["seconds"], 2),
                        "samples": size["samples"],
                        "profiles_merge_metrics": {k: v for k, v in size.items()
                                                   if k not in ("rows", "seconds", "samples")}})
    path = write("merge", results, sizes=sizes, changes=args.changes)
    print(f"results: {path}")


if __name__ == "__main__":
    main()
