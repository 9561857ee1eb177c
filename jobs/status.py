"""Where every job and table stands, read-only: streaming queries (last batch, lag), tables
(version, last write, rows), the last validation, the champion model, the serving store.

    tailor status [--env local] [--set k=v ...] [--format text|json]
    spark-submit jobs/status.py [same options]

Nothing is written, not even an empty MLflow or SQLite store where there is none yet.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import Any

from jobs._common import config_from, entry_point, parser_for
from pipelines.monitoring.status import pipeline_status
from pipelines.runtime.session import build_spark


def build_parser() -> argparse.ArgumentParser:
    parser = parser_for("tailor status", __doc__.split("\n\n")[0])
    parser.add_argument("--format", choices=("text", "json"), default="text")
    return parser


def _ago(at: str | None, now: datetime) -> str:
    if at is None:
        return "never"
    seconds = int((now - datetime.fromisoformat(at.replace("Z", "+00:00"))).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{at} ({seconds // size}{unit} ago)"
    return f"{at} ({seconds}s ago)"


def _query_line(query: dict[str, Any], now: datetime) -> str:
    if not query["started"]:
        return f"  {query['query']:<16} not started (no committed batch in {query['checkpoint']})"
    line = f"  {query['query']:<16} batch {query['batch']} at {_ago(query['batch_at'], now)}"
    lag = query.get("lag")
    if lag and "versions_behind" in lag:
        line += f"; {lag['source']} read through version {lag['read_through_version']}, " \
                f"{lag['versions_behind']} version(s) behind"
    elif lag:
        line += f"; {lag['note']}"
    batch = query.get("last_batch")
    if batch:
        event_lag = batch["event_time_lag_s"]
        line += (f"; last batch {batch['input_rows']} rows in, {batch['valid_rows']} valid, "
                 f"{batch['quarantined_rows']} quarantined, {batch['duplicate_rows']} duplicates, "
                 f"{batch['batch_duration_ms'] / 1000:.1f} s, event-time lag "
                 + (f"{event_lag:.1f} s" if event_lag is not None else "-"))
    return line


def render(status: dict[str, Any]) -> str:
    now = datetime.fromisoformat(status["at"].replace("Z", "+00:00")).astimezone(UTC)
    lines = [f"tailor status: env {status['env']}, storage {status['storage_root']}, at {status['at']}",
             "", "streaming queries"]
    lines += [_query_line(query, now) for query in status["queries"]]
    lines += ["", "tables"]
    width = max(len(table["table"]) for table in status["tables"])
    for table in status["tables"]:
        if not table["exists"]:
            lines.append(f"  {table['table']:<{width}}  not created yet")
            continue
        lines.append(f"  {table['table']:<{width}}  version {table['version']:<5} {table['operation']:<18} "
                     f"{table['rows']:>10} rows  {table['files']:>5} files  {_ago(table['updated_at'], now)}")
    validation = status["validation"]
    lines += ["", "validation"]
    if validation is None:
        lines.append("  never run")
    else:
        verdict = "passed" if validation["passed"] else "FAILED (critical expectations failed)"
        lines.append(f"  run {validation['run_id']} at {_ago(validation['run_at'], now)}, mode {validation['mode']}: "
                     f"{verdict}")
        for dataset, entry in validation["datasets"].items():
            failed = f"; critical failed: {', '.join(entry['critical_failed'])}" if entry["critical_failed"] else ""
            lines.append(f"  {dataset:<{width}}  version {entry['table_version']}: {entry['passed']} passed, "
                         f"{entry['failed']} failed{failed}")
    model = status["model"]
    lines += ["", "model"]
    if model is None:
        lines.append("  no champion registered")
    else:
        metrics = ", ".join(f"{key} {value:.3f}" for key, value in model["test_metrics"].items() if "ndcg" in key)
        lines.append(f"  {model['name']} version {model['version']} (champion), registered "
                     f"{_ago(model['registered_at'], now)}; test {metrics or 'metrics: none logged'}")
    serving = status["serving"]
    lines += ["", f"serving store ({serving['type']})"]
    if "error" in serving:
        lines.append(f"  {serving['error']}")
    else:
        lines.append(f"  live generation {serving['live_generation'] or 'initial'}; records: "
                     + ", ".join(f"{kind} {count}" for kind, count in serving["records"].items()))
        for name, export in serving["exports"].items():
            if export["exported_version"] is None:
                state = "never exported"
            elif not export["same_table"]:
                state = f"exported from another copy of the table (version {export['exported_version']})"
            else:
                behind = (export["table_version"] or 0) - export["exported_version"]
                state = (f"exported at version {export['exported_version']} of {export['table_version']}"
                         + (" (up to date)" if behind == 0 else f" ({behind} version(s) behind)"))
            lines.append(f"  {name:<{width}}  {state}")
    return "\n".join(lines)


@entry_point(record=False)
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    config = config_from(args)
    spark = build_spark(config, "status")
    status = pipeline_status(spark, config)
    print(json.dumps(status, indent=2) if args.format == "json" else render(status))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
