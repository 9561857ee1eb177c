"""Run the Great Expectations suites over the tables (expectations/).

    tailor validate [--dataset NAME ...] [--mode enabled|dry_run|disabled] [--as-of T]
    spark-submit jobs/validate.py [same options]

Every result goes to audit.quality_results with the table version it checked, and into
the Great Expectations Data Docs under <storage.root>/quality (the path is printed).
Warnings are logged. A failed critical expectation makes the exit code 1, with one line
per failure naming it; train and publish then refuse that table version
(quality.gate). --mode dry_run reports and never fails (its results do not count for
the gates); disabled runs nothing. --as-of is the moment freshness is measured against
(default: now). A table that does not exist yet is listed under `missing` and skipped; one
named by --dataset is an error (exit 2), as nothing it asked for could be checked.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import UTC, datetime

from jobs._common import config_from, entry_point, parser_for, setup_logging, utc_time
from pipelines.errors import TailorError

log = logging.getLogger("tailor.validate")
# The job that first writes each dataset's table.
BUILT_BY = {"bronze.events": "ingest", "silver.profiles": "merge-profiles", "silver.products": "load-catalog",
            "silver.interactions": "build-features", "gold.user_features": "build-features",
            "gold.recommendations": "score", "gold.email_content": "publish"}


def build_parser() -> argparse.ArgumentParser:
    from expectations import DATASETS

    parser = parser_for("tailor validate", __doc__.split("\n\n")[0])
    parser.add_argument("--dataset", action="append", choices=DATASETS, default=None,
                        help="a dataset to check (repeatable; default: all)")
    parser.add_argument("--mode", choices=("enabled", "dry_run", "disabled"), default=None,
                        help="default: quality.mode")
    parser.add_argument("--as-of", type=utc_time, default=None,
                        help="ISO-8601 time freshness is measured against (default: now)")
    return parser


@entry_point
def main(argv=None) -> int:
    from expectations import DATASETS

    setup_logging()
    args = build_parser().parse_args(argv)
    config = config_from(args)
    mode = args.mode or config.quality.mode
    if mode == "disabled":
        print(json.dumps({"mode": mode, "results": 0}), flush=True)
        return 0
    from expectations.runner import docs_index, validate
    from pipelines.runtime.delta_tables import table_exists
    from pipelines.runtime.session import build_spark

    now = datetime.now(UTC)
    as_of = args.as_of or now
    for noisy in ("great_expectations", "py.warnings"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    spark = build_spark(config, "validate")
    datasets = tuple(args.dataset or DATASETS)
    missing = [name for name in datasets if not table_exists(spark, config.table(name))]
    if missing and args.dataset:
        absent = "; ".join(f"{name} does not exist yet (tailor {BUILT_BY[name]} builds it)" for name in missing)
        raise TailorError(f"{absent}: nothing to validate")
    for name in missing:
        log.info("%s does not exist yet: its suite is skipped", name)
    run_id, results = validate(spark, config, tuple(name for name in datasets if name not in missing), mode, as_of,
                               now)
    failed = [result for result in results if not result.success]
    for result in failed:
        if result.severity == "warning":
            log.warning("%s (version %s): %s failed, observed %s", result.dataset, result.table_version,
                        result.expectation, result.observed_value)
    critical = [result for result in failed if result.severity == "critical"]
    print(json.dumps({"run_id": run_id, "mode": mode, "results": len(results), "failed": len(failed),
                      "missing": missing,
                      "critical_failed": [result.expectation for result in critical], "data_docs": docs_index(config)},
                     sort_keys=True), flush=True)
    if critical and mode == "enabled":
        for result in critical:
            print(f"tailor: critical expectation failed: {result.expectation} on {result.dataset} version "
                  f"{result.table_version} (observed {result.observed_value})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
