"""Land every event in bronze.events or bronze.quarantine, exactly once.

    tailor ingest [--env local] [--set k=v ...] [--once] [--trigger-interval "30 seconds"]
    spark-submit jobs/ingest_events.py [same options]

Parameters:
  --once               process what is available now, then stop (availableNow trigger);
                       for scheduled runs and the demo. Default: run continuously with a
                       processing-time trigger of ingest.trigger_interval.
  --trigger-interval   override ingest.trigger_interval, e.g. "10 seconds"
Config: source.type (files | kafka | kinesis) and source.*, ingest.dedup_window,
  ingest.metrics_flush_seconds; tables bronze.events, bronze.quarantine,
  bronze.ingest_metrics; checkpoint <checkpoints>/ingest_events.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from jobs._common import config_from, entry_point, setup_logging, streaming_parser
from pipelines.config import CHECKPOINTS, Config
from pipelines.ingest.transforms import drop_retried_duplicates, observe_outcome, validate_streams
from pipelines.ingest.writes import ensure_bronze_tables, ingest_batch_writer
from pipelines.pii import dedup_salt, load_hmac_key
from pipelines.runtime.progress import run_collecting
from pipelines.runtime.session import build_spark
from pipelines.runtime.streaming import checkpoint_app_id, start_foreach_batch
from pipelines.sources.raw import SOURCES, read_raw

QUERY_NAME = "ingest_events"


def build_parser() -> argparse.ArgumentParser:
    return streaming_parser("tailor ingest", __doc__.split("\n\n")[0])


def _ensure_landing_folders(config: Config) -> None:
    if config.source.type != "files":
        return
    for folder in (config.source.files.path, config.source.files.crm_path):
        location = config.under_root(folder)
        if "://" not in location:
            Path(location).mkdir(parents=True, exist_ok=True)


def start_query(spark, config: Config, once: bool, trigger_interval: str | None = None):
    checkpoint = config.checkpoint(CHECKPOINTS[QUERY_NAME])
    flow = (validate_streams(config.crm.tables)(read_raw(spark, config, checkpoint, once))
            .transform(drop_retried_duplicates(config.ingest.dedup_window, dedup_salt(load_hmac_key(config))))
            .transform(observe_outcome))
    writer = ingest_batch_writer(spark, QUERY_NAME, config.table("bronze.events"),
                                 config.table("bronze.quarantine"), config.table("bronze.ingest_metrics"),
                                 checkpoint_app_id(spark, checkpoint, QUERY_NAME))
    return start_foreach_batch(flow, QUERY_NAME, checkpoint, writer, once,
                               trigger_interval or config.ingest.trigger_interval,
                               native_available_now=SOURCES[config.source.type].native_available_now)


def run(config: Config, once: bool, trigger_interval: str | None = None) -> int:
    spark = build_spark(config, QUERY_NAME)
    ensure_bronze_tables(spark, config)
    _ensure_landing_folders(config)
    run_collecting(spark, config, QUERY_NAME, lambda: start_query(spark, config, once, trigger_interval))
    return 0


@entry_point
def main(argv=None) -> int:
    setup_logging()
    args = build_parser().parse_args(argv)
    return run(config_from(args), args.once, args.trigger_interval)


if __name__ == "__main__":
    raise SystemExit(main())
