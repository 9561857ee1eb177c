"""Evaluate every recommender on any interactions file: one JSON object on stdout.

    tailor evaluate-recs --interactions FILE [--format csv|tsv|parquet|jsonl]
        [--columns user=COL,item=COL[,weight=COL][,time=COL][,basket=COL]] [--where SQL]
        (--split time --at 2011-10-01 | --split random [--test-fraction 0.25] [--seed 42])
        [--exclude-seen] [--k 10] [--models popular,buy_again,als,co_occurrence]

Each model is fitted on the training split and asked for the top k of every user who
also appears in the test split; the blend's weights are tuned on a validation split
carved from training (the last recommend.blend.validation_days of it, or a random share
per user), never on the test split. `--exclude-seen` scores only items a user had not
touched in training (repeat purchases then count for nothing). `--where` keeps the rows
a Spark SQL condition holds for, over the file's own columns, e.g. to drop cancellations.
The same numbers are logged to MLflow (mlflow.tracking_uri, experiment mlflow.experiment).
Config: recommend.* (decay, candidates per model, ALS, co-occurrence, blend).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pydantic import ValidationError

from jobs._common import config_from, entry_point, parser_for, setup_logging
from jobs._files import format_of, read_file
from jobs._files import parse_columns as parse_file_columns
from pipelines.config import Config, RecommendConfig
from pipelines.errors import ConfigError
from pipelines.recommend.interactions import FILE_ROLES

log = logging.getLogger("tailor.evaluate")
FORMATS = ("csv", "tsv", "parquet", "jsonl")
DEFAULT_COLUMNS = {"user": "user_id", "item": "item_id"}


def build_parser() -> argparse.ArgumentParser:
    parser = parser_for("tailor evaluate-recs", __doc__.split("\n\n")[0])
    parser.add_argument("--interactions", required=True, help="file or folder of interactions")
    parser.add_argument("--format", choices=FORMATS, default=None, help="default: from the file name")
    parser.add_argument("--columns", default="", help="role=column, comma-separated; roles: " + ", ".join(FILE_ROLES))
    parser.add_argument("--where", default=None, help="a Spark SQL condition rows must meet")
    parser.add_argument("--split", choices=("time", "random"), required=True)
    parser.add_argument("--at", default=None,
                        help="time split: the test period starts here (ISO date or time; UTC unless a zone is given)")
    parser.add_argument("--test-fraction", type=float, default=0.25, help="random split: share of each user's baskets")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--exclude-seen", action="store_true", help="score only items new to each user")
    parser.add_argument("--k", type=int, default=None, help="default: recommend.k")
    parser.add_argument("--models", default=None, help="comma-separated; default: recommend.models")
    parser.add_argument("--no-mlflow", action="store_true", help="print only; log nothing to MLflow")
    return parser


def parse_columns(text: str) -> dict[str, str]:
    return parse_file_columns(text, FILE_ROLES, DEFAULT_COLUMNS)


def _check_columns(rows, columns: dict[str, str]) -> None:
    for role, column in columns.items():
        if column not in rows.columns:
            raise ConfigError(f"--columns: {role} column {column!r} is not in the file "
                              f"(it has: {', '.join(rows.columns)})")


def evaluate_file(spark, config: Config, args: argparse.Namespace) -> dict:
    from pipelines.recommend.evaluation import evaluate
    from pipelines.recommend.interactions import from_table
    from pipelines.recommend.splits import random_split, time_split

    columns = parse_columns(args.columns)
    rows = read_file(spark, args.interactions, format_of(args.interactions, args.format, FORMATS))
    _check_columns(rows, columns)
    if args.where:
        from pyspark.errors import AnalysisException

        try:
            rows = rows.where(args.where)
        except AnalysisException as error:
            raise ConfigError(f"--where: {str(error).strip().splitlines()[0]}") from None
    interactions = from_table(rows, columns)
    blend = config.recommend.blend
    if args.split == "time":
        at = _utc(args.at)
        train, test = time_split(interactions, at)
        carve = lambda log: time_split(log, at - timedelta(days=blend.validation_days))  # noqa: E731
    else:
        train, test = random_split(interactions, args.test_fraction, args.seed)
        carve = lambda log: random_split(log, blend.validation_fraction, args.seed + 1)  # noqa: E731
    return evaluate(train, test, carve, config.recommend, args.exclude_seen)


def _utc(text: str) -> datetime:
    """An ISO date or time; without a zone, UTC (as the session reads the file's times)."""
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _settings(config: Config, args: argparse.Namespace) -> Config:
    """recommend.* with --k and --models applied, checked by the config's own rules (one
    line naming the option when they refuse)."""
    update: dict = {}
    if args.k is not None:
        update["k"] = args.k
    if args.models is not None:
        update["models"] = tuple(name.strip() for name in args.models.split(",") if name.strip())
    try:
        recommend = RecommendConfig.model_validate({**config.recommend.model_dump(), **update})
    except ValidationError as error:
        first = error.errors()[0]
        option = "--models" if first["loc"][:1] == ("models",) else "--k"
        raise ConfigError(f"{option}: {first['msg'].removeprefix('Value error, ')}") from None
    return config.model_copy(update={"recommend": recommend})


def _validate(args: argparse.Namespace) -> None:
    """Everything that can be checked before Spark starts."""
    if "://" not in args.interactions and not Path(args.interactions).exists():
        raise ConfigError(f"--interactions: {args.interactions} does not exist")
    format_of(args.interactions, args.format, FORMATS)
    columns = parse_columns(args.columns)
    if args.split == "time" and "time" not in columns:
        raise ConfigError("--split time: name the time column, e.g. --columns user=...,item=...,time=occurred_at")
    if args.split == "time":
        if not args.at:
            raise ConfigError("--split time needs --at (the first moment of the test period)")
        try:
            _utc(args.at)
        except ValueError:
            raise ConfigError(f"--at: {args.at!r} is not an ISO date or time") from None
    if not 0 < args.test_fraction < 1:
        raise ConfigError("--test-fraction: must be between 0 and 1")


@entry_point
def main(argv=None) -> int:
    from pipelines.recommend.tracking import log_evaluation, tracking_uri
    from pipelines.runtime.session import build_spark

    setup_logging()
    args = build_parser().parse_args(argv)
    _validate(args)
    config = _settings(config_from(args), args)
    if not args.no_mlflow:
        tracking_uri(config)  # an unusable store fails now, not after the evaluation
    spark = build_spark(config, "evaluate_recs")
    result = evaluate_file(spark, config, args)
    print(json.dumps(result, sort_keys=True), flush=True)
    if not args.no_mlflow:
        params = {"interactions": args.interactions, "split": args.split, "at": args.at,
                  "test_fraction": args.test_fraction if args.split == "random" else None, "seed": args.seed,
                  "exclude_seen": args.exclude_seen, "k": config.recommend.k, "where": args.where,
                  "models": ",".join(config.recommend.models), "half_life_days": config.recommend.half_life_days}
        run_id = log_evaluation(config, result, params, run_name="evaluate-recs")
        print(f"mlflow run {run_id}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
