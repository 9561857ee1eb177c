"""Keep silver.profiles right under any arrival order, from the changes in bronze.events.

    tailor merge-profiles [--env local] [--set k=v ...] [--once] [--trigger-interval "30 seconds"]
    spark-submit jobs/merge_profiles.py [same options]

Reads bronze.events as a Delta stream (CRM changes, profile_upsert, preference, consent,
unsubscribe, complaint and erasure events) and, per micro-batch, writes silver.profiles
(Change Data Feed on: a delete there is the downstream tombstone), silver.profiles_history
(SCD type 2), audit.log, silver.profile_tombstones and silver.duplicate_profiles, and
purges erased people from every table.

Parameters:
  --once               process what is available now, then stop (availableNow trigger)
  --trigger-interval   override profiles.trigger_interval, e.g. "10 seconds"
Config: profiles.*; the PII keys from the variables secrets.pii_encryption_key and
  secrets.pii_hmac_key; checkpoint <checkpoints>/merge_profiles.
"""

from __future__ import annotations

import argparse

from jobs._common import config_from, entry_point, setup_logging, streaming_parser
from pipelines.config import CHECKPOINTS, Config
from pipelines.ingest.writes import ensure_bronze_tables
from pipelines.pii import PiiKeys, load_keys
from pipelines.profiles.writes import ProfilesBatchWriter, ensure_profile_tables
from pipelines.runtime.progress import run_collecting
from pipelines.runtime.session import build_spark
from pipelines.runtime.streaming import checkpoint_app_id, start_foreach_batch
from pipelines.sources.bronze import read_bronze_events

QUERY_NAME = "merge_profiles"


def build_parser() -> argparse.ArgumentParser:
    return streaming_parser("tailor merge-profiles", __doc__.split("\n\n")[0])


def start_query(spark, config: Config, keys: PiiKeys, once: bool, trigger_interval: str | None = None):

    checkpoint = config.checkpoint(CHECKPOINTS[QUERY_NAME])
    # Every event, not only profile changes: the writer purges any event of an erased
    # person that reaches bronze after the erasure (it applies only the profile changes).
    changes = read_bronze_events(spark, config, config.profiles.max_files_per_trigger)
    writer = ProfilesBatchWriter(config, keys, checkpoint_app_id(spark, checkpoint, QUERY_NAME))
    return start_foreach_batch(changes, QUERY_NAME, checkpoint, writer, once,
                               trigger_interval or config.profiles.trigger_interval)

def run(config: Config, once: bool, trigger_interval: str | None = None) -> int:
    keys = load_keys(config)  # before Spark starts: a missing key is a one-line error
    spark = build_spark(config, QUERY_NAME)
    ensure_bronze_tables(spark, config)
    ensure_profile_tables(spark, config)
    run_collecting(spark, config, QUERY_NAME, lambda: start_query(spark, config, keys, once, trigger_interval))
    return 0


@entry_point
def main(argv=None) -> int:
    setup_logging()
    args = build_parser().parse_args(argv)
    return run(config_from(args), args.once, args.trigger_interval)


if __name__ == "__main__":
    raise SystemExit(main())
