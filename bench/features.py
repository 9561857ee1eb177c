"""Benchmark: a build_features batch recomputes only the users it saw.

    .venv/bin/python bench/features.py [--users 2000] [--touched 20] [--repeat 3]

Generates a world, lands its behaviour events in a silver.interactions table under
var/bench, and times, in the same Spark session:
  - all:      recomputing gold.user_features for every user (what the daily refresh does,
              and what a job without incremental updates would do every batch);
  - touched:  recomputing it for --touched users (a micro-batch that saw them);
  - touched on double history: the same users after the table holds a second copy of
              every other user's history (new ids), to show how a batch's cost grows
              with history it does not touch.
Reported as ratios: all / touched (higher: incremental batches are that much cheaper),
and touched-on-double / touched (1.0 would mean no cost from untouched history). Rows are
computed and discarded (noop sink); timings are medians of --repeat runs after a warm-up.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime, timedelta
from datetime import time as clock
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pyspark.sql import functions as F  # noqa: E402

from bench.timing import timed  # noqa: E402
from pipelines.config import load_config  # noqa: E402
from pipelines.features.transforms import interaction_rows  # noqa: E402
from pipelines.features.writes import ensure_feature_tables, load_feature_rules, recompute_users  # noqa: E402
from pipelines.ingest.transforms import bronze_rows  # noqa: E402
from pipelines.ingest.validation import add_ingest_columns, validate_events  # noqa: E402
from pipelines.runtime.delta_tables import ensure_table, read_table, save  # noqa: E402
from pipelines.runtime.session import build_spark  # noqa: E402
from pipelines.schemas import INTERACTIONS  # noqa: E402
from pipelines.synthetic.generator import WorldSpec, generate_world  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--touched", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--set", action="append", default=[], help="config override, as for tailor")
    args = parser.parse_args()
    spec = WorldSpec(seed=9, users=args.users, products=200, days=14)
    as_of = (datetime.combine(spec.start, clock.min, tzinfo=UTC) + timedelta(days=spec.days))
    root = Path("var/bench/features").resolve()
    config = load_config("local", [f"storage.root={root}", *args.set])
    spark = build_spark(config, "bench-features")
    spark.sparkContext.setLogLevel("ERROR")
    rules = load_feature_rules(config)

    lines = generate_world(spec).events
    raw = spark.createDataFrame([(line.encode(), "bench", "s", "p", str(n), None) for n, line in enumerate(lines)],
                                "raw binary, source_kind string, source_stream string, source_partition string, "
                                "source_offset string, source_timestamp timestamp")
    validated = validate_events(raw).transform(add_ingest_columns).persist()
    interactions = interaction_rows(bronze_rows(validated.where(F.col("error_code").isNull())))
    table = config.table("silver.interactions")
    ensure_table(spark, table, INTERACTIONS, partition_by=("event_date",))
    save(interactions.write.format("delta").mode("overwrite"), table)
    ensure_feature_tables(spark, config)

    stored = read_table(spark, table)
    everyone = stored.select("user_id").distinct().cache()
    touched = everyone.orderBy("user_id").limit(args.touched).cache()
    rows, users = stored.count(), everyone.count()

    def recompute(users) -> None:
        recompute_users(spark, config, rules, users, as_of).write.format("noop").mode("overwrite").save()

    all_seconds = timed(lambda: recompute(everyone), args.repeat)
    touched_seconds = timed(lambda: recompute(touched), args.repeat)
    copy = stored.withColumn("user_id", F.concat(F.lit("copy-"), "user_id")).withColumn(
        "event_id", F.concat(F.lit("copy-"), "event_id"))
    save(copy.write.format("delta").mode("append"), table)
    doubled_seconds = timed(lambda: recompute(touched), args.repeat)

    print(f"users: {users}, interactions: {rows} (then {rows * 2}), touched: {args.touched}")
    print(f"all users: {all_seconds:.2f}s   touched: {touched_seconds:.2f}s   "
          f"touched on double history: {doubled_seconds:.2f}s")
    print(f"ratio all/touched: {all_seconds / touched_seconds:.2f}x   "
          f"touched on double/touched: {doubled_seconds / touched_seconds:.2f}x")


if __name__ == "__main__":
    main()
