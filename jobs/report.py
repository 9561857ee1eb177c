"""Write the data quality audit report: duplicate profiles (a shared email hash),
completeness per profile attribute, freshness, stale profiles, quarantine reasons over
time, the segment mix, the latest validation's failures, and the trend since the last
report.

    tailor report quality [--env local] [--set k=v ...] [--output PATH] [--as-of T] [--no-record]
    spark-submit jobs/report.py quality [same options]

One self-contained HTML file (plots as inline SVG) for a person to read; counts and
shares only, no user id or personal data. Each report's headline numbers are appended to
audit.quality_report, which the next report compares with (not with --no-record, for a
one-off look). Default path:
quality.report_path under storage.root. --as-of is the moment event-time freshness and
idle days are counted back from (default: now).
"""

from __future__ import annotations

import argparse

from jobs._common import config_from, entry_point, parser_for, utc_time


def build_parser() -> argparse.ArgumentParser:
    parser = parser_for("tailor report", __doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=("quality",), help="the report to write")
    parser.add_argument("--output", default=None, help="where to write the page (default: quality.report_path)")
    parser.add_argument("--as-of", type=utc_time, default=None,
                        help="ISO-8601 time freshness and idle days are measured against (default: now)")
    parser.add_argument("--no-record", action="store_true",
                        help="a one-off look: keep nothing in audit.quality_report, so the next report does "
                             "not compare with this one")
    return parser


@entry_point
def main(argv=None) -> int:
    from pipelines.monitoring.quality_report import gather, headline_metrics, record_report, render_quality_report
    from pipelines.runtime.filesystems import write_text
    from pipelines.runtime.session import build_spark

    args = build_parser().parse_args(argv)
    config = config_from(args)
    path = args.output or config.under_root(config.quality.report_path)
    spark = build_spark(config, "report")
    data = gather(spark, config, args.as_of)
    metrics = headline_metrics(data)
    write_text(path, render_quality_report(data, metrics))
    if not args.no_record:
        # Recorded once the page exists, so the next report never compares with one nobody could read.
        record_report(spark, config, data, metrics)
    print(f"quality report: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
