"""Benchmark: what the scoring rules cost on top of the model's own recommend-for-all.

    .venv/bin/python bench/scoring.py [--users 100000] [--items 10000] [--per-user 20] [--repeat 1]

Builds a synthetic interaction log in Spark (each user's items drawn from a skewed
popularity, a third of them bought), a catalogue with a tenth of it out of stock or
inactive and 50 categories, fits implicit ALS once (the config's rank, alpha, 5
iterations), and times, in the same Spark session:
  - baseline: the model's bare recommendForAllUsers(k), exploded to rows;
  - rules:    what tailor score does with the same model: k x over_fetch items per user
              (recommend.score.over_fetch, scored by candidates.top_items), mapped back
              to product ids, then the rules (nothing bought unless buy-again proposed
              it, only sellable products, the category cap) and the top k;
  - for information, the fetch alone: top_items' k x over_fetch items per user, against
    the baseline and as a share of the rules' time.
All are computed and discarded (noop sink). Reported as rules / baseline (goal: at most
1.3); results in bench/results/scoring.json.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pyspark.sql import functions as F  # noqa: E402

from bench.report import result, workspace, write  # noqa: E402
from bench.timing import timed  # noqa: E402
from pipelines.config import load_config  # noqa: E402
from pipelines.recommend.candidates import als, buy_again, fit_als, top_items  # noqa: E402
from pipelines.recommend.scoring import apply_rules  # noqa: E402
from pipelines.runtime.session import build_spark  # noqa: E402

AS_OF = datetime(2026, 11, 1, tzinfo=UTC)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--per-user", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--set", action="append", default=[], help="config override, as for tailor")
    args = parser.parse_args()
    root = workspace("scoring")
    config = load_config("local", [f"storage.root={root}", "recommend.als.max_iter=5", *args.set])
    settings = config.recommend
    spark = build_spark(config, "bench-scoring")
    spark.sparkContext.setLogLevel("ERROR")

    # item = floor(items x u^3): item 0 the most popular, a long tail behind it.
    events = (spark.range(args.users * args.per_user)
              .select((F.col("id") % args.users).alias("u"), F.rand(7).alias("r"), F.rand(11).alias("b"),
                      (F.rand(13) * 90).cast("int").alias("age_days"))
              .select(F.concat(F.lit("u"), F.col("u")).alias("user_id"),
                      F.concat(F.lit("p"), F.floor(F.pow("r", 3) * args.items)).alias("item_id"),
                      F.lit(1.0).alias("weight"),
                      (F.lit(AS_OF).cast("timestamp") - F.make_interval(days=F.col("age_days"))).alias("occurred_at"),
                      F.concat(F.col("u"), F.lit("-"), F.col("age_days")).alias("basket_id"),
                      F.when(F.col("b") < 1 / 3, "purchase").otherwise("view").alias("kind"))
              .localCheckpoint())
    products = (spark.range(args.items)
                .select(F.concat(F.lit("p"), F.col("id")).alias("product_id"),
                        F.concat(F.lit("c"), F.col("id") % 50).alias("category"),
                        (F.col("id") % 20 != 7).alias("active"), (F.col("id") % 20 != 13).alias("in_stock"))
                .localCheckpoint())
    fitted = fit_als(events, AS_OF, settings.half_life_days, settings.als)
    users = events.select("user_id").distinct().localCheckpoint()
    bought = events.where(F.col("kind") == "purchase").select("user_id", "item_id").localCheckpoint()
    again = buy_again(events, users, AS_OF, settings.half_life_days, settings.candidates_per_model).localCheckpoint()
    k, over = settings.k, settings.k * settings.score.over_fetch

    def bare() -> None:
        (fitted.model.recommendForAllUsers(k).select("user_index", F.explode("recommendations"))
         .write.format("noop").mode("overwrite").save())

    def with_rules() -> None:
        candidates = als(fitted, events, users, over)
        (apply_rules(candidates, bought, again, products, k, settings.score.max_per_category)
         .write.format("noop").mode("overwrite").save())

    def fetch() -> None:
        every = fitted.model.userFactors.select(F.col("id").alias("user_index"))
        top_items(fitted.model, every, over).write.format("noop").mode("overwrite").save()

    baseline = timed(bare, args.repeat)
    rules = timed(with_rules, args.repeat)
    fetched = timed(fetch, args.repeat)
    measured = [result("scoring.rules_over_recommend_for_all_users", rules, baseline, "seconds",
                       "at most 1.3x the bare call",
                       higher_is_better=False, goal_ratio=round(1 / 1.3, 3), slowdown=round(rules / baseline, 3)),
                result("scoring.top_items_over_recommend_for_all_users", fetched, baseline, "seconds",
                       f"for information: top_items' {over} items per user (NumPy over Arrow batches) against the "
                       f"bare call's {k}", higher_is_better=False, slowdown=round(fetched / baseline, 3),
                       share_of_rules=round(fetched / rules, 3))]
    path = write("scoring", measured, users=args.users, items=args.items, interactions=args.users * args.per_user,
                 k=k, over_fetch=settings.score.over_fetch, als_rank=settings.als.rank)
    print(f"bare recommendForAllUsers({k}): {baseline:.1f} s; with the rules ({over} fetched): {rules:.1f} s; "
          f"{rules / baseline:.2f}x (goal <= 1.3x); top_items({over}) alone: {fetched:.1f} s; {path}")


if __name__ == "__main__":
    main()
