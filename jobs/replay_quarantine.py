"""Re-feed repaired quarantine records through the ingest validation, once.

    tailor replay-quarantine [--env local] [--set k=v ...] [--include-unfixed] [--dry-run]
    spark-submit jobs/replay_quarantine.py [same options]

Parameters:
  --include-unfixed   also re-try records nobody repaired, as received (after a contract
                      change that makes them valid, e.g. a new schema_version)
  --dry-run           report what would happen; write nothing
Repair a record by setting `fixed_raw` on its bronze.quarantine row. Valid records land in
bronze.events (never twice: an event_id bronze holds is marked already_in_bronze); every
replayed row gets replayed_at and replay_outcome, so a second run replays nothing.
"""

from __future__ import annotations

import argparse
import logging
from collections import Counter

from pyspark.sql import functions as F

from jobs._common import config_from, entry_point, parser_for, setup_logging
from pipelines.ingest.replay import replay_candidates, replay_outcomes, revalidate
from pipelines.ingest.transforms import bronze_rows
from pipelines.ingest.writes import ensure_bronze_tables
from pipelines.runtime.delta_tables import delta_table, read_table
from pipelines.runtime.session import build_spark
from pipelines.runtime.streaming import append_once

APP_ID = "tailor.replay_quarantine"
log = logging.getLogger("tailor.replay")


def build_parser() -> argparse.ArgumentParser:
    parser = parser_for("tailor replay-quarantine", __doc__.split("\n\n")[0])
    parser.add_argument("--include-unfixed", action="store_true")
    parser.add_argument("--dry-run", action="store_true")
    return parser


def replay(spark, config, include_unfixed: bool = False, dry_run: bool = False) -> Counter:
    ensure_bronze_tables(spark, config)
    quarantine_ref, bronze_ref = config.table("bronze.quarantine"), config.table("bronze.events")
    quarantine_table = delta_table(spark, quarantine_ref)
    version = quarantine_table.history(1).select("version").first()["version"]
    at_version = spark.read.format("delta").option("versionAsOf", version)
    snapshot = (at_version.load(quarantine_ref.path) if quarantine_ref.path
                else at_version.table(quarantine_ref.catalog_name))
    candidates = replay_candidates(snapshot, include_unfixed)
    if candidates.isEmpty():
        return Counter()
    validated = revalidate(candidates, config.crm.tables)
    # Pinned before writing: a cached plan that reads bronze would be recomputed after the
    # append below, and every landed record would then look already_in_bronze.
    outcomes = replay_outcomes(validated, read_table(spark, bronze_ref).select("event_id")) \
        .localCheckpoint(eager=True)
    kinds = outcomes.select(F.regexp_extract("replay_outcome", r"^([a-z_]+(:[a-z_]+)?)", 1).alias("kind"))
    summary = Counter({row.kind: row["count"] for row in kinds.groupBy("kind").count().collect()})
    if dry_run or not summary:
        return summary
    # The quarantine version read is the idempotency key: a run that crashed after landing
    # rows but before marking them is re-run against the same version, and lands nothing new.
    append_once(bronze_rows(outcomes.where(F.col("replay_outcome") == "landed")), bronze_ref, APP_ID, version)
    marks = outcomes.select("quarantine_id", "replay_outcome").withColumn("replayed_at", F.current_timestamp())
    (quarantine_table.alias("q")
     .merge(marks.alias("m"), "q.quarantine_id = m.quarantine_id")
     .whenMatchedUpdate(condition="q.replayed_at IS NULL",
                        set={"replayed_at": "m.replayed_at", "replay_outcome": "m.replay_outcome"})
     .execute())
    return summary


@entry_point
def main(argv=None) -> int:
    setup_logging()
    args = build_parser().parse_args(argv)
    config = config_from(args)
    spark = build_spark(config, "replay_quarantine")
    summary = replay(spark, config, args.include_unfixed, args.dry_run)
    verb = "would replay" if args.dry_run else "replayed"
    print(f"{verb} {sum(summary.values())} quarantined records: "
          + (", ".join(f"{kind} {count}" for kind, count in sorted(summary.items())) or "nothing to do"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
