"""Benchmark: a build_features batch recomputes only the users it saw.

    .venv/bin/python bench/features.py [--users 10000 100000] [--touched-share 0.01] [--repeat 1]

A generated world of 1,000 users (about 55 events each, through the ingest validation) is
copied under new user ids up to each --users size, into silver.interactions. For each
size, in the same Spark session, it times what a build_features batch does for its users
(recompute their gold.user_features rows, then MERGE them):
  - all:     every user (what a job without incremental updates would do every batch);
  - touched: --touched-share of the users (a micro-batch that saw them).
The first `all` run fills gold.user_features and is the untimed warm-up; timings are
medians of --repeat runs. Reported per size as all / touched (the batch's saving), and
the saving at the largest size against the smallest: the goal is that it grows with the
population (a batch's cost follows the users it saw, not everyone). Results in
bench/results/features.json.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from datetime import UTC, datetime, timedelta
from datetime import time as clock
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pyspark.sql import DataFrame  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402

from bench.report import raw_records, result, workspace, write  # noqa: E402
from bench.timing import timed  # noqa: E402
from pipelines.config import load_config  # noqa: E402
from pipelines.features.transforms import interaction_rows  # noqa: E402
from pipelines.features.writes import ensure_feature_tables, load_feature_rules, merge_features, recompute_users  # noqa: E402
from pipelines.ingest.transforms import bronze_rows  # noqa: E402
from pipelines.ingest.validation import add_ingest_columns, validate_events  # noqa: E402
from pipelines.runtime.delta_tables import ensure_table, read_table, save  # noqa: E402
from pipelines.runtime.session import build_spark  # noqa: E402
from pipelines.schemas import INTERACTIONS  # noqa: E402
from pipelines.synthetic.generator import WorldSpec, generate_world  # noqa: E402

TEMPLATE_USERS = 1000
ID_COLUMNS = ("event_id", "user_id", "session_id", "cart_id", "order_id")


def template_interactions(spark, spec: WorldSpec) -> DataFrame:
    lines = generate_world(spec).events
    raw = raw_records(spark, lines)
    validated = validate_events(raw).transform(add_ingest_columns).persist()
    return interaction_rows(bronze_rows(validated.where(F.col("error_code").isNull()))).localCheckpoint()


def copied(template: DataFrame, copies: int) -> DataFrame:
    """`copies` copies of the template, each under its own ids (copy 0 keeps the originals')."""
    spark = template.sparkSession
    frame = template.crossJoin(spark.range(copies).withColumnRenamed("id", "copy"))
    for column in ID_COLUMNS:
        frame = frame.withColumn(column, F.when(F.col("copy") == 0, F.col(column))
                                 .otherwise(F.concat(F.col(column), F.lit("~"), F.col("copy"))))
    return frame.drop("copy")


def measure(spark, args, template: DataFrame, template_users: int, users: int, as_of: datetime) -> dict[str, float]:
    root = workspace("features") / f"users-{users}"
    shutil.rmtree(root, ignore_errors=True)
    config = load_config("local", [f"storage.root={root}", *args.set])
    rules = load_feature_rules(config)
    table = config.table("silver.interactions")
    ensure_table(spark, table, INTERACTIONS, partition_by=("event_date",))
    copies = max(1, round(users / template_users))
    save(copied(template, copies).write.format("delta").mode("overwrite"), table)
    ensure_feature_tables(spark, config)
    stored = read_table(spark, table)
    everyone = stored.select("user_id").distinct().localCheckpoint()
    population = everyone.count()
    touched_count = max(1, round(population * args.touched_share))
    touched = everyone.orderBy(F.xxhash64("user_id")).limit(touched_count).localCheckpoint()

    def batch(users_seen: DataFrame) -> None:
        merge_features(spark, config, recompute_users(spark, config, rules, users_seen, as_of))

    all_seconds = timed(lambda: batch(everyone), args.repeat)  # the warm-up fills gold.user_features
    touched_seconds = timed(lambda: batch(touched), args.repeat)
    print(f"{population} users, {stored.count()} interactions: all {all_seconds:.1f} s, "
          f"{touched_count} touched {touched_seconds:.1f} s ({all_seconds / touched_seconds:.1f}x)")
    return {"users": population, "touched": touched_count, "all": all_seconds, "touched_s": touched_seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--touched-share", type=float, default=0.01)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--set", action="append", default=[], help="config override, as for tailor")
    args = parser.parse_args()
    spec = WorldSpec(seed=9, users=min(TEMPLATE_USERS, min(args.users)), products=200, days=14)
    as_of = datetime.combine(spec.start, clock.min, tzinfo=UTC) + timedelta(days=spec.days)
    config = load_config("local", [f"storage.root={workspace('features')}", *args.set])
    spark = build_spark(config, "bench-features")
    spark.sparkContext.setLogLevel("ERROR")
    template = template_interactions(spark, spec)

    results, sizes = [], []
    for users in sorted(args.users):
        size = measure(spark, args, template, spec.users, users, as_of)
        sizes.append(size)
        results.append(result(f"features.touched_vs_all.{size['users']}_users", size["touched_s"], size["all"],
                              "seconds", f"for information: a batch of {args.touched_share:.0%} of the users "
                              "against recomputing everyone", higher_is_better=False,
                              users=size["users"], touched=size["touched"]))
    if len(sizes) > 1:
        small, large = sizes[0], sizes[-1]
        results.append(result("features.saving_grows_with_population", large["all"] / large["touched_s"],
                              small["all"] / small["touched_s"], "x",
                              f"> 1.0: the saving at {large['users']} users above that at {small['users']}",
                              met=large["all"] / large["touched_s"] > small["all"] / small["touched_s"]))
    path = write("features", results, touched_share=args.touched_share, template_users=spec.users)
    print(f"results: {path}")


if __name__ == "__main__":
    main()
