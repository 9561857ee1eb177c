"""`tailor <command> [--env local|databricks|emr] [--set dotted.key=value ...]`

Each command calls the same `main(argv)` that `spark-submit jobs/<job>.py` calls. Job
modules are imported only when their command runs, so `tailor config show` and
`tailor contract export` never import Spark.
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Sequence

import yaml

from jobs._common import config_from, entry_point, parser_for

# command -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("jobs.run", "the demo: generate a world, then run every job once"),
    "generate": ("jobs.generate", "write a deterministic synthetic world of events"),
    "ingest": ("jobs.ingest_events", "land events in bronze.events / bronze.quarantine, exactly once"),
    "merge-profiles": ("jobs.merge_profiles", "apply profile changes to silver.profiles, history, audit.log; erase"),
    "build-features": ("jobs.build_features", "keep silver.interactions and gold.user_features (segments) current"),
    "load-catalog": ("jobs.load_catalog", "upsert a product feed (CSV, JSON lines, Parquet, Delta) in silver.products"),
    "validate": ("jobs.validate", "run the Great Expectations suites; results to audit.quality_results, Data Docs"),
    "train": ("jobs.train_recommender", "train the recommender on silver.interactions; MLflow run, registry, champion"),
    "score": ("jobs.score_recommendations", "write gold.recommendations: the champion model, business rules, consent"),
    "publish": ("jobs.publish_content", "build gold.email_content, defaults and traits; export to the serving store"),
    "evaluate-recs": ("jobs.evaluate_recs", "score every recommender on an interactions file (time or random split)"),
    "serve": ("jobs.serve", "run the content API under gunicorn (settings: api.* in config)"),
    "status": ("jobs.status", "where every job and table stands: batches, lag, versions, validation, model, store"),
    "check-freshness": ("jobs.check_freshness", "exit 1 with one line when a query, the publish or quarantine is off"),
    "report": ("jobs.report", "report quality: the data quality audit report (HTML): duplicates, completeness, trend"),
    "dashboard": ("jobs.dashboard", "write the static HTML dashboard: throughput, freshness, quality, model, API"),
    "maintain": ("jobs.maintain", "daily: load the API's audit lines, compact and cluster tables, bound their "
                                  "history, purge and VACUUM"),
    "vacuum": ("jobs.vacuum", "purge deleted rows and old files (erasure made final), retention from config"),
    "replay-quarantine": ("jobs.replay_quarantine", "re-feed repaired quarantine records through validation, once"),
    "kafka": ("jobs.local_services", "start, stop or check the local Kafka broker"),
    "config": ("jobs.cli", "config show: the resolved configuration, secrets masked; config reference: every key"),
    "contract": ("jobs.cli", "contract export DIR: write the event contract as JSON Schema files"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: tailor <command> [--env ENV] [--set KEY=VALUE ...] [options]", "", "commands:"]
    lines += [f"  {name.ljust(width)}  {text}" for name, (_, text) in COMMANDS.items()]
    lines += ["", "`tailor <command> --help` shows a command's options."]
    return "\n".join(lines)


@entry_point
def config_main(argv: Sequence[str] | None = None) -> int:
    parser = parser_for("tailor config", "print the resolved configuration, or the reference of every key")
    parser.add_argument("action", choices=("show", "reference"))
    parser.add_argument("--format", choices=("yaml", "json"), default="yaml")
    args = parser.parse_args(argv)
    if args.action == "reference":
        from pathlib import Path

        from pipelines.config_reference import configuration_reference

        print(configuration_reference(Path(args.conf_dir) if args.conf_dir else None), end="")
        return 0
    shown = config_from(args).masked()
    if args.format == "json":
        print(json.dumps(shown, indent=2, sort_keys=True))
    else:
        print(yaml.safe_dump(shown, sort_keys=False), end="")
    return 0


@entry_point
def contract_main(argv: Sequence[str] | None = None) -> int:
    from pathlib import Path

    from pipelines.contracts.events import CONTRACT_VERSION, all_schemas

    parser = parser_for("tailor contract", "export the event contract as JSON Schema files")
    parser.add_argument("action", choices=("export",))
    parser.add_argument("directory")
    args = parser.parse_args(argv)
    folder = Path(args.directory)
    folder.mkdir(parents=True, exist_ok=True)
    for name, schema in all_schemas().items():
        (folder / name).write_text(json.dumps(schema, indent=2) + "\n", encoding="utf-8")
    print(f"contract {CONTRACT_VERSION}: {len(all_schemas())} schemas in {folder}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"tailor: unknown command '{command}'\n\n{_usage()}", file=sys.stderr)
        return 2
    if command == "config":
        return config_main(rest)
    if command == "contract":
        return contract_main(rest)
    module = importlib.import_module(COMMANDS[command][0])
    return module.main(rest)


def task_main() -> None:
    """`tailor`, for a platform that calls the entry point's function and ignores what it
    returns (a Databricks python_wheel_task): a command's non-zero code fails the task."""
    raise SystemExit(main())


if __name__ == "__main__":
    raise SystemExit(main())
