"""Run the pipeline end to end once, on the embedded default (the demo).

    tailor run [--env local] [--set k=v ...] [--faults kind=fraction,...]
    spark-submit jobs/run.py ...

Generates a synthetic world into the landing folder, then runs every job that exists
so far in flow order, each as an availableNow (`--once`) run, and prints what landed.
"""

from __future__ import annotations

import argparse
import logging
from datetime import UTC, datetime, time, timedelta

from jobs import build_features, generate, ingest_events, load_catalog, merge_profiles, publish_content, validate
from jobs._common import config_from, entry_point, parser_for, setup_logging

log = logging.getLogger("tailor.run")


def build_parser() -> argparse.ArgumentParser:
    parser = parser_for("tailor run", __doc__.split("\n\n")[0])
    parser.add_argument("--faults", default="malformed_json=0.005,missing_field=0.005,duplicate=0.01,"
                                            "late=0.01,out_of_order=0.01,unknown_schema_version=0.002")
    return parser


def _passthrough(args: argparse.Namespace) -> list[str]:
    common = ["--env", args.env]
    for override in args.overrides:
        common += ["--set", override]
    if args.conf_dir:
        common += ["--conf-dir", args.conf_dir]
    return common


@entry_point
def main(argv=None) -> int:
    setup_logging()
    args = build_parser().parse_args(argv)
    config = config_from(args)  # fail fast, before any step, on a bad config
    common = _passthrough(args)
    steps = [
        ("generate", generate.main, [*common, "--faults", args.faults]),
        # The generator's catalogue (catalog.path): build_features names each person's top categories from it.
        ("load-catalog", load_catalog.main, common),
        ("ingest", ingest_events.main, [*common, "--once"]),
        ("merge-profiles", merge_profiles.main, [*common, "--once"]),
        # Features as of the end of the generated weeks, so the 7/30/90-day windows hold them.
        ("build-features", build_features.main, [*common, "--once", "--as-of", _world_end(config)]),
        # Freshness is measured against the end of the generated weeks, as the features are.
        ("validate", validate.main, [*common, "--as-of", _world_end(config)]),
        # No model is trained in the demo yet: everyone's row carries popular items, marked cold_start.
        ("publish", publish_content.main, common),
    ]
    for name, step, step_args in steps:
        log.info("step %s", name)
        code = step(step_args)
        if code:
            log.error("step %s failed with exit code %s", name, code)
            return code
    print(landed_summary(config))
    return 0


def _world_end(config) -> str:
    generator = config.generator
    end = datetime.combine(generator.start, time.min, tzinfo=UTC) + timedelta(days=generator.days)
    return end.isoformat()


def landed_summary(config) -> str:
    """What the run left in bronze, in a few lines a person can check against the manifest."""
    from pyspark.sql import functions as F

    from pipelines.runtime.delta_tables import read_table, sql_name
    from pipelines.runtime.session import build_spark

    spark = build_spark(config, "run")
    bronze = read_table(spark, config.table("bronze.events"))
    quarantine = read_table(spark, config.table("bronze.quarantine"))
    metrics = read_table(spark, config.table("bronze.ingest_metrics"))
    totals = metrics.agg(F.sum("input_rows").alias("input"), F.sum("duplicate_rows").alias("duplicates"),
                         F.sum("tombstones").alias("tombstones")).first()
    by_type = bronze.groupBy("event_type").count().orderBy("event_type").collect()
    by_code = quarantine.groupBy("stream", "error_code").count().orderBy("stream", "error_code").collect()
    codes_by_stream: dict[str, list[str]] = {}
    for row in by_code:
        codes_by_stream.setdefault(row.stream, []).append(f"{row.error_code} {row[2]}")
    profiles = read_table(spark, config.table("silver.profiles"))
    history = read_table(spark, config.table("silver.profiles_history"))
    audit = read_table(spark, config.table("audit.log"))
    erased = read_table(spark, config.table("silver.profile_tombstones")).count()
    # Erasure MERGEs are the only deletes from bronze: what the reconciliation must add back.
    purges = spark.sql(f"DESCRIBE HISTORY {sql_name(config.table('bronze.events'))}").where("operation = 'MERGE'")
    erased_events = sum(int(row.operationMetrics.get("numTargetRowsDeleted", 0)) for row in purges.collect())
    features = read_table(spark, config.table("gold.user_features"))
    segments = features.groupBy("primary_segment").count().orderBy(F.desc("count"), "primary_segment").collect()
    interactions = read_table(spark, config.table("silver.interactions")).count()
    products = read_table(spark, config.table("silver.products"))
    catalogue = products.agg(F.count(F.lit(1)).alias("all"), F.count_if("active").alias("active"),
                             F.count_if(~F.col("in_stock")).alias("out_of_stock")).first()
    content = read_table(spark, config.table("gold.email_content"))
    kind = F.when(F.col("status") == "suppressed", F.lit("suppressed")).otherwise(
        F.coalesce("fallback", F.lit("personal")))
    by_kind = content.groupBy(kind.alias("kind")).count().orderBy("kind").collect()
    lines = [
        f"records read: {totals.input or 0}",
        f"bronze.events: {bronze.count()} ({', '.join(f'{r.event_type} {r[1]}' for r in by_type)}); "
        f"{erased_events} more were landed, then erased with their people",
        f"bronze.quarantine: {quarantine.count()} "
        f"({'; '.join(f'{stream}: ' + ', '.join(codes) for stream, codes in codes_by_stream.items())})",
        f"dropped duplicates: {totals.duplicates or 0}, tombstones: {totals.tombstones or 0}",
        f"silver.profiles: {profiles.count()} (history versions {history.count()}, erased {erased}), "
        f"audit.log: {audit.count()}",
        f"silver.products: {catalogue.all} ({catalogue.active} active, {catalogue.out_of_stock} out of stock)",
        f"silver.interactions: {interactions}; gold.user_features: {features.count()} users "
        f"(primary segments: {', '.join(f'{r.primary_segment} {r[1]}' for r in segments)})",
        f"gold.email_content: {content.count()} ({', '.join(f'{r.kind} {r[1]}' for r in by_kind)}); "
        f"serving store: {config.serving.type}",
        f"tables under {config.under_root('')}",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
