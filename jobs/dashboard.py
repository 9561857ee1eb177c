"""Write the static HTML dashboard: freshness checks, throughput, batch duration and
event-time lag, quarantine rate, validation results, model metrics across versions, the
content API's latency and fallbacks, and recent job runs.

    tailor dashboard [--env local] [--set k=v ...] [--output PATH] [--api-metrics URL]
    spark-submit jobs/dashboard.py [same options]

One self-contained file (plots as inline SVG): open it, or publish it where people look.
Default path: monitoring.dashboard_path under storage.root.
"""

from __future__ import annotations

import argparse

from jobs._common import config_from, entry_point, parser_for
from pipelines.monitoring.dashboard import gather, render_dashboard
from pipelines.runtime.filesystems import write_text
from pipelines.runtime.session import build_spark


def build_parser() -> argparse.ArgumentParser:
    parser = parser_for("tailor dashboard", __doc__.split("\n\n")[0])
    parser.add_argument("--output", default=None, help="where to write the page (default: monitoring.dashboard_path)")
    parser.add_argument("--api-metrics", default=None,
                        help="the API's /metrics URL (default: monitoring.api_metrics_url)")
    return parser


@entry_point(record=False)
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    config = config_from(args)
    path = args.output or config.under_root(config.monitoring.dashboard_path)
    spark = build_spark(config, "dashboard")
    page = render_dashboard(gather(spark, config, args.api_metrics), config.recommend.k)
    write_text(path, page)
    print(f"dashboard: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
