"""Keep behaviour features and segments current, from the events in bronze.events.

    tailor build-features [--env local] [--set k=v ...] [--once] [--trigger-interval "1 minute"]
    tailor build-features --refresh-windows [--as-of 2026-11-27T00:00:00Z]
    spark-submit jobs/build_features.py [same options]

Streaming: reads bronze.events as a Delta stream, keeps page and product views, carts,
purchases and email engagement in silver.interactions (once per event_id, however late an
event arrives), and per micro-batch
recomputes gold.user_features for the users the batch saw: RFM and quintile scores, last
seen, 7/30/90-day counts, top categories, open and click rates, engagement score, cart
state, best send hour, lifecycle stage, and segments from features.segments_file.

--refresh-windows (daily): recomputes every user's row as of now, so windows age for users
who did nothing, and quintiles and segment hours follow the whole population.

Parameters:
  --once               process what is available now, then stop (availableNow trigger)
  --trigger-interval   override features.trigger_interval
  --refresh-windows    run the daily refresh instead of the stream
  --as-of              the moment windows end (default features.as_of, else now)
Config: features.*; the PII HMAC key (secrets.pii_hmac_key) to recognise erased people;
  checkpoint <checkpoints>/build_features_v2.
"""

from __future__ import annotations

import argparse
import logging
from datetime import datetime

from jobs._common import config_from, entry_point, setup_logging, streaming_parser
from pipelines.config import CHECKPOINTS, Config
from pipelines.errors import ConfigError

log = logging.getLogger("tailor.features")
QUERY_NAME = "build_features"
# "build_features_v2" since the stream lost its stateful (watermark) deduplication: Spark
# refuses to restart a checkpoint whose stateful operators changed. A deployment upgraded
# from the first version starts this new checkpoint and reads bronze.events once more from
# the start; the insert's MERGE on event_id keeps that idempotent, and every user's
# features are recomputed. `tailor maintain --remove-orphaned-checkpoints` then deletes
# the old folder, <checkpoints>/build_features.
CHECKPOINT_NAME = CHECKPOINTS[QUERY_NAME]


def build_parser() -> argparse.ArgumentParser:
    parser = streaming_parser("tailor build-features", __doc__.split("\n\n")[0])
    parser.add_argument("--refresh-windows", action="store_true",
                        help="recompute every user's row as of now (daily), instead of running the stream")
    parser.add_argument("--as-of", default=None, help="ISO-8601 moment with a zone; windows end here")
    return parser


def _as_of_override(text: str | None) -> list[str]:
    if text is None:
        return []
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"--as-of {text!r} is not an ISO-8601 timestamp") from None
    if moment.tzinfo is None:
        raise ConfigError(f"--as-of {text!r} needs a zone, e.g. {moment.isoformat()}Z")
    return [f"features.as_of={moment.isoformat()}"]


def start_query(spark, config: Config, keys, rules, once: bool, trigger_interval: str | None = None):
    from pipelines.features.transforms import interaction_rows
    from pipelines.features.writes import FeaturesBatchWriter
    from pipelines.runtime.streaming import checkpoint_app_id, start_foreach_batch
    from pipelines.sources.bronze import read_bronze_events

    checkpoint = config.checkpoint(CHECKPOINT_NAME)
    interactions = (read_bronze_events(spark, config, config.features.max_files_per_trigger)
                    .transform(interaction_rows))
    writer = FeaturesBatchWriter(config, keys, rules, checkpoint_app_id(spark, checkpoint, QUERY_NAME))
    return start_foreach_batch(interactions, QUERY_NAME, checkpoint, writer, once,
                               trigger_interval or config.features.trigger_interval)


def run(config: Config, once: bool, trigger_interval: str | None = None, refresh: bool = False) -> int:
    from pipelines.features.writes import as_of_for, ensure_feature_tables, load_feature_rules, refresh_windows
    from pipelines.ingest.writes import ensure_bronze_tables
    from pipelines.pii import load_keys
    from pipelines.runtime.progress import run_collecting
    from pipelines.runtime.session import build_spark

    rules = load_feature_rules(config)  # before Spark starts: a bad rule is a one-line error
    keys = load_keys(config)
    spark = build_spark(config, QUERY_NAME)
    ensure_bronze_tables(spark, config)
    ensure_feature_tables(spark, config)
    if refresh:
        as_of = as_of_for(config)
        written = refresh_windows(spark, config, rules, keys, as_of)
        log.info("refreshed %d users' features as of %s", written, as_of.isoformat())
        return 0
    run_collecting(spark, config, QUERY_NAME,
                   lambda: start_query(spark, config, keys, rules, once, trigger_interval))
    return 0


@entry_point
def main(argv=None) -> int:
    setup_logging()
    args = build_parser().parse_args(argv)
    args.overrides = [*args.overrides, *_as_of_override(args.as_of)]
    return run(config_from(args), args.once, args.trigger_interval, args.refresh_windows)


if __name__ == "__main__":
    raise SystemExit(main())
