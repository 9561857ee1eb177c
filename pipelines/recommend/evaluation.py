"""Offline evaluation: every candidate model and their blend, fitted on a training log and
scored against what the same users did next. The blend's weights are tuned on a
validation split carved from the training log; the test split is read once, at the end.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from pipelines.config import RecommendConfig
from pipelines.errors import TailorError
from pipelines.recommend.blend import blend, tune_weights
from pipelines.recommend.candidates import FittedAls, als, buy_again, co_occurrence, fit_als, popular
from pipelines.recommend.metrics import metrics_by_group, top_k
from pipelines.recommend.splits import truth_for

log = logging.getLogger("tailor.recommend")
Split = Callable[[DataFrame], tuple[DataFrame, DataFrame]]


def _as_of(log: DataFrame):
    return log.agg(F.max("occurred_at")).first()[0]


def _model_settings(name: str, settings: RecommendConfig) -> tuple:
    """The settings one model's list depends on: two grid points that agree on them share
    the list, so a grid over ALS's alpha fits the other models once."""
    own = {"als": settings.als, "co_occurrence": settings.co_occurrence}.get(name)
    return (name, settings.half_life_days, settings.candidates_per_model, own.model_dump_json() if own else None)


def candidates_for(train: DataFrame, users: DataFrame, settings: RecommendConfig, exclude_seen: bool,
                   fitted_als: FittedAls | None = None, shared: dict[tuple, DataFrame] | None = None
                   ) -> dict[str, DataFrame]:
    """Each enabled model's list for `users`, cached (the blend reads them again). ALS is
    fitted on `train` unless `fitted_als` (the registered model) is given. With `shared`
    (the same train, users and exclude_seen), a list built for other settings that this
    model does not read is taken from it, and new lists are put in it."""
    as_of = _as_of(train)
    n, half_life = settings.candidates_per_model, settings.half_life_days
    seen = train.select("user_id", "item_id").distinct() if exclude_seen else None
    built: dict[str, DataFrame] = {}
    for name in settings.models:
        key = _model_settings(name, settings)
        if shared is not None and key in shared:
            built[name] = shared[key]
            continue
        if name == "popular":
            frame = popular(train, users, as_of, half_life, n, seen=seen, pool=n + 200)
        elif name == "buy_again":
            frame = buy_again(train, users, as_of, half_life, n)
            if seen is not None:
                frame = frame.join(seen, ["user_id", "item_id"], "left_anti")
        elif name == "als":
            fitted = fitted_als or fit_als(train, as_of, half_life, settings.als)
            frame = als(fitted, train, users, n, seen=seen, over_fetch=200 if exclude_seen else 0)
        elif name == "co_occurrence":
            frame = co_occurrence(train, users, as_of, half_life, n, settings.co_occurrence.max_basket_items,
                                  settings.co_occurrence.neighbours, seen=seen)
        else:
            raise ValueError(f"unknown model {name!r}")
        built[name] = frame.cache()
        if shared is not None:
            shared[key] = built[name]
    return built


def tune(fit: DataFrame, validation: DataFrame, settings: RecommendConfig, exclude_seen: bool,
         shared: dict[tuple, DataFrame] | None = None) -> tuple[dict[str, float], dict[str, float]]:
    """(blend weights, the blend's metrics on `validation`): the models fitted on `fit`,
    the weights chosen on what the same users did in `validation`. Too little history to
    validate on leaves the weights equal, with no metrics. `shared` lists (see
    candidates_for) stay cached for the caller to unpersist."""
    fit = fit.cache()
    validation_truth = truth_for(fit, validation, exclude_seen).cache()
    try:
        if fit.isEmpty() or validation_truth.isEmpty():
            log.warning("no user of the validation split was in its fitting part: blend weights left equal")
            return {name: 1 / len(settings.models) for name in settings.models}, {}
        tuning = candidates_for(fit, validation_truth.select("user_id").distinct(), settings, exclude_seen,
                                shared=shared)
        try:
            return tune_weights(tuning, validation_truth, settings.k, settings.blend.rank_constant,
                                settings.blend.grid_step)
        finally:
            if shared is None:
                for frame in tuning.values():
                    frame.unpersist()
    finally:
        validation_truth.unpersist()
        fit.unpersist()


def held_out_metrics(train: DataFrame, test: DataFrame, settings: RecommendConfig, weights: dict[str, float],
                 exclude_seen: bool) -> dict:
    """{"models": {name: metrics} for every model and the blend (with `weights`), "users",
    "items"}: the models fitted on `train`, scored on what its users did in `test`."""
    truth = truth_for(train, test, exclude_seen).cache()
    if truth.isEmpty():
        raise TailorError("no user of the training split has anything in the test split"
                          + (" that is new to them" if exclude_seen else "") + ": nothing to evaluate")
    users = truth.select("user_id").distinct()
    candidates = candidates_for(train, users, settings, exclude_seen)
    lists = [top_k(frame, settings.k).withColumn("group", F.lit(name)) for name, frame in candidates.items()]
    lists.append(top_k(blend(candidates, weights, settings.blend.rank_constant, settings.k), settings.k)
                 .withColumn("group", F.lit("blend")))
    recommendations = lists[0]
    for part in lists[1:]:
        recommendations = recommendations.unionByName(part)
    items = train.select("item_id").distinct().count()
    result = {
        "models": metrics_by_group(recommendations, truth, settings.k, items, groups=[*candidates, "blend"]),
        "users": users.count(),
        "items": items,
    }
    for frame in (*candidates.values(), truth):
        frame.unpersist()
    return result


def evaluate(train: DataFrame, test: DataFrame, carve_validation: Split, settings: RecommendConfig,
             exclude_seen: bool) -> dict:
    """{"models": {name: metrics}, "users": ..., "items": ..., "blend_weights": {...}}."""
    started = time.monotonic()
    train = train.cache()
    if train.isEmpty():
        raise TailorError("the training split is empty: nothing to learn from (check --at, --where, --columns)")
    fit, validation = carve_validation(train)
    weights, _ = tune(fit, validation, settings, exclude_seen)
    log.info("blend weights %s, tuned on the validation split in %.0f s", weights, time.monotonic() - started)
    result = held_out_metrics(train, test, settings, weights, exclude_seen) | {"blend_weights": weights}
    train.unpersist()
    log.info("evaluated %d users in %.0f s", result["users"], time.monotonic() - started)
    return result
