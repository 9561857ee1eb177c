"""Train the recommender on silver.interactions, track it in MLflow and register it.

    tailor train [--as-of TIME]
    spark-submit jobs/train_recommender.py [same options]

History ends at --as-of (default: the latest interaction). Its last
recommend.train.test_days are the test period, the days before it the training period,
and the training period's last recommend.blend.validation_days the validation split.
Every point of recommend.train.grid is fitted on the training period before validation
and blended on the validation split, each point a nested MLflow run; the point with the
best validation ndcg@k wins (ties: the first), is fitted on the whole training period and
scored once on the test period; no tuning reads it. (It is also where the champion's
configuration is scored, and the registered ALS is refitted on all history, test period
included: the test metrics describe the configuration, fitted on the training period.)

The run logs every model's metrics on the test period, the input's Delta version, the
chosen settings and blend weights (recommender.json), and the ALS model refitted on all
history up to the as-of (mlflow.spark, with a signature), registered as
mlflow.registered_model. The alias `champion` moves to the new version only when its
blend ndcg@k beats the champion's configuration, fitted and scored on the same periods,
by more than recommend.train.champion_margin; the version's tag `champion_decision` says
why either way. Config: recommend.*, mlflow.*.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from datetime import UTC, datetime, timedelta

from pydantic import ValidationError

from jobs._common import config_from, entry_point, parser_for, setup_logging
from pipelines.config import Config, RecommendConfig
from pipelines.errors import ConfigError, TailorError

log = logging.getLogger("tailor.train")


def build_parser() -> argparse.ArgumentParser:
    parser = parser_for("tailor train", __doc__.split("\n\n")[0])
    parser.add_argument("--as-of", default=None,
                        help="history ends here (ISO time, UTC unless zoned); default: the latest interaction")
    return parser


def _as_of(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"--as-of: {text!r} is not an ISO date or time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _check(config: Config) -> None:
    if "als" not in config.recommend.models:
        raise ConfigError("recommend.models: tailor train registers the ALS model; include als")


def _table_version(spark, config: Config, name: str) -> int:
    from pipelines.runtime.delta_tables import delta_table

    return delta_table(spark, config.table(name)).history(1).select("version").first().version


def _variant_name(point: dict[str, float]) -> str:
    return ",".join(f"{name}={value:g}" for name, value in point.items()) or "configured"


def train(spark, config: Config, as_of: datetime | None, version: int | None = None) -> dict:
    """The whole training run over silver.interactions at `version` (default: the current
    one); returns what it logged and decided, for the caller to print."""
    import mlflow
    from pyspark.ml import PipelineModel
    from pyspark.sql import functions as F

    from pipelines.recommend.candidates import fit_als
    from pipelines.recommend.evaluation import held_out_metrics, tune
    from pipelines.recommend.interactions import from_interactions
    from pipelines.recommend.splits import time_split
    from pipelines.recommend.tracking import (
        RECOMMENDER_FILE,
        champion,
        champion_decision,
        log_metrics_under,
        log_spark_model,
        metric_key,
        record_decision,
        use_experiment,
    )
    from pipelines.runtime.delta_tables import read_table_at

    settings = config.recommend
    started = time.monotonic()
    if version is None:
        version = _table_version(spark, config, "silver.interactions")
    # Read at the version the gate checked: a commit landing meanwhile waits for the next run.
    history = from_interactions(read_table_at(spark, config.table("silver.interactions"), version),
                                settings.event_weights)
    if as_of is not None:
        history = history.where(F.col("occurred_at") <= F.lit(as_of))
    history = history.cache()
    # As epoch seconds: collect() turns a timestamp into the driver's local wall time.
    latest = history.agg(F.max(F.col("occurred_at").cast("double"))).first()[0]
    end = as_of or (datetime.fromtimestamp(latest, UTC) if latest is not None else None)
    if end is None:
        raise TailorError("silver.interactions holds no product interaction to learn from: run build-features "
                          "first (and check recommend.event_weights)")
    end = end if end.tzinfo else end.replace(tzinfo=UTC)
    test_start = end - timedelta(days=settings.train.test_days)
    validation_start = test_start - timedelta(days=settings.blend.validation_days)
    past, test = time_split(history, test_start)
    past = past.cache()
    fit, validation = time_split(past, validation_start)
    metric = f"ndcg@{settings.k}"
    name = config.mlflow.registered_model

    experiment_id = use_experiment(config)
    with mlflow.start_run(experiment_id=experiment_id, run_name="train") as run:
        mlflow.log_params({"input.silver.interactions.version": version, "as_of": end.isoformat(),
                           "test_start": test_start.isoformat(), "validation_start": validation_start.isoformat(),
                           "k": settings.k, "models": ",".join(settings.models)})
        tried = []
        shared: dict = {}  # a model's list on the fit split, for every point that gives it the same settings
        fit = fit.cache()
        for number, (point, variant) in enumerate(settings.variants()):
            with mlflow.start_run(experiment_id=experiment_id, run_name=_variant_name(point), nested=True):
                weights, scores = tune(fit, validation, variant, exclude_seen=False, shared=shared)
                mlflow.log_params({**{f"grid.{key}": value for key, value in point.items()},
                                   **{f"blend.weight.{model}": weight for model, weight in weights.items()}})
                mlflow.log_metrics({f"validation.{metric_key('blend', key)}": value for key, value in scores.items()})
            tried.append((scores.get(metric, 0.0), -number, point, variant, weights))
            log.info("grid point %s: validation %s %.4f", _variant_name(point), metric, scores.get(metric, 0.0))
        for frame in shared.values():
            frame.unpersist()
        fit.unpersist()
        best_score, _, point, chosen, weights = max(tried, key=lambda entry: (round(entry[0], 12), entry[1]))
        mlflow.log_params({**{f"chosen.{key}": value for key, value in point.items()},
                           **{f"blend.weight.{model}": weight for model, weight in weights.items()}})
        mlflow.log_metric(f"validation.{metric_key('blend', metric)}", best_score)

        tested = held_out_metrics(past, test, chosen, weights, exclude_seen=False)
        log_metrics_under("test", tested["models"])
        mlflow.log_metrics({"test.users": tested["users"], "test.items": tested["items"]})
        new_score = tested["models"]["blend"].get(metric, 0.0)

        champion_score, champion_version, unreadable = None, None, None
        try:
            current = champion(name)
            if current is not None:
                champion_version, champion_file = current
                # Scored at this run's k, on this run's periods: the same test for both.
                # Its own settings, checked as they were saved; only k is this run's (the same metric).
                previous = RecommendConfig.model_validate(champion_file["settings"]).model_copy(
                    update={"k": settings.k})
                theirs = held_out_metrics(past, test, previous, champion_file["weights"], exclude_seen=False)
                champion_score = theirs["models"]["blend"].get(metric, 0.0)
                log_metrics_under("champion.test", theirs["models"])
        except (TailorError, ValidationError, KeyError, TypeError) as error:
            unreadable = str(error).strip().splitlines()[0]
            log.warning("the champion could not be scored: %s", unreadable)

        recommender = {"models": list(chosen.models), "weights": weights, "settings": chosen.model_dump(mode="json"),
                       "grid_point": point, "as_of": end.isoformat(), "test_start": test_start.isoformat(),
                       "interactions_version": version, "test_metrics": tested["models"]}
        mlflow.log_dict(recommender, RECOMMENDER_FILE)
        fitted = fit_als(history, end, chosen.half_life_days, chosen.als)
        info = log_spark_model(PipelineModel(stages=[fitted.users, fitted.items, fitted.model]), name)
        new_version = str(info.registered_model_version)
        moved, decision = champion_decision(new_score, champion_score, champion_version,
                                            settings.train.champion_margin, metric, unreadable)
        record_decision(name, new_version, moved, decision)
        mlflow.set_tag("champion_decision", decision)
        run_id = run.info.run_id
    history.unpersist()
    past.unpersist()
    log.info("trained in %.0f s: %s", time.monotonic() - started, decision)
    return {"run_id": run_id, "model": name, "version": new_version, "champion": moved, "decision": decision,
            "chosen": point, "weights": weights, "validation": {metric: best_score}, "test": tested["models"],
            "users": tested["users"], "items": tested["items"]}


@entry_point
def main(argv=None) -> int:
    from expectations.runner import gate_refusals
    from pipelines.recommend.tracking import tracking_uri
    from pipelines.runtime.delta_tables import table_version
    from pipelines.runtime.session import build_spark

    setup_logging()
    args = build_parser().parse_args(argv)
    config = config_from(args)
    as_of = _as_of(args.as_of)
    _check(config)
    tracking_uri(config)  # an unusable store fails now, not after the training
    spark = build_spark(config, "train_recommender")
    version = table_version(spark, config.table("silver.interactions"))
    refusals = gate_refusals(spark, config, ("silver.interactions",), {"silver.interactions": version})
    if refusals:
        # The champion stays where it is: a model trained on data that failed its checks
        # must not replace it.
        raise TailorError(f"refusing to train: {'; '.join(refusals)} (tailor validate; quality.gate)")
    result = train(spark, config, as_of, version)
    print(json.dumps(result, sort_keys=True), flush=True)
    print(f"mlflow run {result['run_id']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
