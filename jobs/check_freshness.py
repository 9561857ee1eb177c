"""Exit 1 with one line when a streaming query, the publish or the quarantine rate crosses
its monitoring.* threshold; 0 with one line when all hold. For a scheduler or an alert.

    tailor check-freshness [--env local] [--set k=v ...]
    spark-submit jobs/check_freshness.py [same options]

Thresholds: monitoring.max_batch_age_minutes (per streaming query), max_publish_age_hours
(gold.email_content), max_quarantine_rate over window_hours (bronze.ingest_metrics).
A quiet source trips the batch age too: no batch is committed when nothing arrives.
"""

from __future__ import annotations

import argparse

from jobs._common import config_from, entry_point, parser_for
from pipelines.monitoring.freshness import freshness_checks
from pipelines.runtime.session import build_spark


def build_parser() -> argparse.ArgumentParser:
    return parser_for("tailor check-freshness", __doc__.split("\n\n")[0])


@entry_point(record=False)
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    config = config_from(args)
    spark = build_spark(config, "check_freshness")
    checks = freshness_checks(spark, config)
    failed = [check for check in checks if not check.ok]
    if failed:
        print("tailor check-freshness: STALE: " + "; ".join(check.text for check in failed))
        return 1
    print("tailor check-freshness: ok: " + "; ".join(check.text for check in checks))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
