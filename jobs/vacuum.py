"""Make deletes final: rewrite files with deletion vectors, then VACUUM every table.

    tailor vacuum [--env local] [--set k=v ...] [--retention-hours N]
    spark-submit jobs/vacuum.py [same options]

After this, data an erasure removed is gone from old table versions too, and so are
quarantined records that name an erased person. Schedule it
daily; retention (maintenance.vacuum_retention_hours, default 168) is how far back time
travel keeps working. Below 168 hours, maintenance.allow_short_retention must be set,
and no job may be running.
"""

from __future__ import annotations

import argparse

from jobs._common import config_from, entry_point, parser_for, setup_logging
from pipelines.pii import load_hmac_key
from pipelines.profiles.writes import sweep_quarantine_of_erased
from pipelines.runtime.maintenance import vacuum_all, vacuum_retention
from pipelines.runtime.session import build_spark


def build_parser() -> argparse.ArgumentParser:
    parser = parser_for("tailor vacuum", __doc__.split("\n\n")[0])
    parser.add_argument("--retention-hours", type=float, default=None,
                        help="override maintenance.vacuum_retention_hours for this run")
    return parser


@entry_point
def main(argv=None) -> int:
    setup_logging()
    args = build_parser().parse_args(argv)
    config = config_from(args)
    vacuum_retention(config, args.retention_hours)  # a bad retention fails before Spark starts
    hmac_key = load_hmac_key(config)  # before Spark starts: a missing key is a one-line error
    spark = build_spark(config, "vacuum")
    sweep_quarantine_of_erased(spark, config, hmac_key)
    done = vacuum_all(spark, config, args.retention_hours)
    print(f"vacuumed {len(done)} table(s): {', '.join(done) or 'none yet'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
