"""Score gold.recommendations with the champion model and the business rules.

    tailor score [--full | --incremental]
    spark-submit jobs/score_recommendations.py [same options]

Loads models:/<mlflow.registered_model>@champion and the settings and blend weights it
was trained with, blends every model's candidates for each person (k x
recommend.score.over_fetch of them), then applies the rules: nothing already bought
unless buy_again put it there, only active products in stock, at most
recommend.score.max_per_category of one category. A person without personalization
consent (recommend.score.consent_required) gets their segment's popular items (else their
country's, else everyone's), marked `no_consent`; one without history the same, marked
`cold_start`; a personal list short of k is topped up from the same list.

gold.recommendations (one row per person: ranked items with their reason, model name
and version, scored_at) is written by one MERGE. --incremental (the default once a run
is recorded) rescores only people whose interactions or profile changed since the last
run (Change Data Feed of silver.interactions and silver.profiles) and removes people
erased since; --full rescores everyone, and removes anyone no longer known. A new
champion version, a changed catalogue or gold.user_features, changed rules (recommend.k,
recommend.score), or a table without its change feed, means a full run. A missing or
unreadable model, or a catalogue with nothing to sell, fails in one line before anything
is written.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from datetime import UTC, datetime

from jobs._common import config_from, entry_point, parser_for, setup_logging
from pipelines.config import Config
from pipelines.errors import TailorError

log = logging.getLogger("tailor.score")
STATE_KEY = "tailor_score"


def build_parser() -> argparse.ArgumentParser:
    parser = parser_for("tailor score", __doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--full", dest="mode", action="store_const", const="full", help="rescore everyone")
    mode.add_argument("--incremental", dest="mode", action="store_const", const="incremental",
                      help="rescore only who changed since the last run (the default once there was one)")
    return parser


def _version(spark, config: Config, name: str) -> int | None:
    from pipelines.runtime.delta_tables import table_version

    return table_version(spark, config.table(name))


def last_state(spark, config: Config) -> dict | None:
    """What the last score run recorded in its commit: the versions it read."""
    from pyspark.sql import functions as F

    from pipelines.runtime.delta_tables import delta_table

    history = (delta_table(spark, config.table("gold.recommendations")).history()
               .where(F.col("userMetadata").contains(f'"{STATE_KEY}"')).orderBy(F.desc("version")).first())
    return json.loads(history.userMetadata) if history else None


def _changed_users(spark, config: Config, name: str, after: int | None, upto: int | None):
    """(user_id, deleted) of rows changed in versions after..upto of a table; None when
    its change feed cannot say (not enabled then, or the versions are gone)."""
    from pyspark.errors import AnalysisException
    from pyspark.sql import functions as F

    from pipelines.runtime.delta_tables import read_changes

    first = 0 if after is None else after + 1  # a table created since the last run: all of it
    if upto is None or upto < first:
        return spark.createDataFrame([], "user_id string, deleted boolean")
    try:
        changes = read_changes(spark, config.table(name), first, upto)
        changes.limit(1).collect()
    except AnalysisException as error:
        log.warning("%s has no change feed for versions %d to %d (%s): scoring everyone", name, first, upto,
                    str(error).splitlines()[0][:200])
        return None
    return (changes.groupBy("user_id")
            .agg(F.max(F.col("_change_type") == "delete").alias("deleted")))


def _people(spark, config: Config, users, log_users):
    """(user_id, segment, country, consented, has_history) for `users`."""
    from pyspark.sql import functions as F

    from pipelines.runtime.delta_tables import read_table, table_exists

    profiles_ref, features_ref = config.table("silver.profiles"), config.table("gold.user_features")
    if table_exists(spark, profiles_ref):
        profiles = read_table(spark, profiles_ref).select(
            "user_id", "country", F.col("consent_personalization.status").alias("consent"))
    else:
        profiles = spark.createDataFrame([], "user_id string, country string, consent string")
    if table_exists(spark, features_ref):
        segments = read_table(spark, features_ref).select("user_id", F.col("primary_segment").alias("segment"))
    else:
        segments = spark.createDataFrame([], "user_id string, segment string")
    if config.recommend.score.consent_required:
        consented = F.coalesce(F.col("consent") == "granted", F.lit(False))
    else:
        consented = F.coalesce(F.col("consent") != "revoked", F.lit(True))
    history = log_users.select("user_id").distinct().withColumn("has_history", F.lit(True))
    return (users.select("user_id").distinct()
            .join(profiles, "user_id", "left").join(segments, "user_id", "left").join(history, "user_id", "left")
            .select("user_id", "segment", "country", consented.alias("consented"),
                    F.coalesce("has_history", F.lit(False)).alias("has_history")))


def score(spark, config: Config, mode: str | None, scored_at: datetime) -> dict:
    import mlflow
    from pyspark.sql import functions as F

    from pipelines.config import RecommendConfig
    from pipelines.recommend.blend import blend
    from pipelines.recommend.candidates import FittedAls
    from pipelines.recommend.evaluation import candidates_for
    from pipelines.recommend.interactions import from_interactions
    from pipelines.recommend.scoring import apply_rules, popular_lists, recommendations, sellable
    from pipelines.recommend.tracking import load_champion, tracking_uri
    from pipelines.recommend.writes import ensure_recommendations_table, merge_recommendations
    from pipelines.runtime.delta_tables import read_table, table_exists

    started = time.monotonic()
    mlflow.set_tracking_uri(tracking_uri(config))
    name = config.mlflow.registered_model
    model_version, model, recommender = load_champion(name)
    try:
        trained = RecommendConfig.model_validate(recommender["settings"])
        weights = {model_name: float(weight) for model_name, weight in recommender["weights"].items()}
        users_index, items_index, als_model = model.stages
    except (KeyError, TypeError, ValueError) as error:
        raise TailorError(f"the champion, models:/{name}@champion (version {model_version}), could not be read: "
                          f"{str(error).splitlines()[0][:200]}") from None
    # Rules and over-fetch are this deployment's; models, weights and decay are the model's.
    settings = trained.model_copy(update={"k": config.recommend.k, "score": config.recommend.score})

    for needed in ("silver.interactions", "silver.products"):
        if not table_exists(spark, config.table(needed)):
            raise TailorError(f"{needed} does not exist yet: run "
                              f"{'build-features' if needed == 'silver.interactions' else 'load-catalog'} first")
    ensure_recommendations_table(spark, config)
    # What a person's list depends on besides their own interactions and profile: when any
    # of it changed since the last run, everyone is rescored.
    shared_inputs = {"products_version": _version(spark, config, "silver.products"),
                     "features_version": _version(spark, config, "gold.user_features"),
                     "rules": config.recommend.score.model_dump() | {"k": config.recommend.k},
                     "model_version": model_version}
    versions = {"interactions_version": _version(spark, config, "silver.interactions"),
                "profiles_version": _version(spark, config, "silver.profiles"), **shared_inputs}
    state = last_state(spark, config)
    history = from_interactions(read_table(spark, config.table("silver.interactions")),
                                settings.event_weights).cache()
    profiles_ref = config.table("silver.profiles")
    known = history.select("user_id")
    if table_exists(spark, profiles_ref):
        known = known.unionByName(read_table(spark, profiles_ref).select("user_id"))
    known = known.distinct()

    erased = None
    chosen = mode or ("incremental" if state else "full")
    if chosen == "incremental":
        moved = [key for key, value in shared_inputs.items() if state is None or state.get(key) != value]
        if moved:
            log.info("%s changed since the last run: scoring everyone", ", ".join(moved))
            chosen = "full"
    if chosen == "incremental":
        interactions = _changed_users(spark, config, "silver.interactions", state["interactions_version"],
                                      versions["interactions_version"])
        profiles = _changed_users(spark, config, "silver.profiles", state.get("profiles_version"),
                                  versions["profiles_version"])
        if interactions is None or profiles is None:
            chosen = "full"
        else:
            changed = interactions.unionByName(profiles).groupBy("user_id").agg(F.max("deleted").alias("deleted"))
            targets = changed.join(known, "user_id", "left_semi").select("user_id").localCheckpoint()
            erased = changed.join(known, "user_id", "left_anti").select("user_id").localCheckpoint()
    if chosen == "full":
        targets = known

    latest = history.agg(F.max(F.col("occurred_at").cast("double"))).first()[0]
    as_of = datetime.fromtimestamp(latest, UTC) if latest is not None else scored_at
    everyone = _people(spark, config, known, history)
    people = everyone.join(targets, "user_id", "left_semi").cache()
    products = read_table(spark, config.table("silver.products"))
    if sellable(products).isEmpty():
        raise TailorError("silver.products holds no active product in stock: every list would be empty; "
                          "gold.recommendations was not changed (load the catalogue first)")
    personal_users = people.where(F.col("consented") & F.col("has_history")).select("user_id")
    fitted = FittedAls(model=als_model, users=users_index, items=items_index)
    candidates = candidates_for(history, personal_users, settings, exclude_seen=False, fitted_als=fitted)
    over = settings.k * settings.score.over_fetch
    blended = blend(candidates, weights, settings.blend.rank_constant, over)
    bought = history.where(F.col("kind") == "purchase").select("user_id", "item_id")
    personal = apply_rules(blended, bought, candidates.get("buy_again"), products, settings.k,
                           settings.score.max_per_category)
    lists = popular_lists(history, everyone, products, as_of, settings.half_life_days, settings.k,
                          settings.score.max_per_category)
    rows = recommendations(people, personal, lists, bought, settings.k, name, model_version, scored_at)
    metadata = json.dumps({STATE_KEY: 1, "mode": chosen, **versions})
    counts = merge_recommendations(spark, config.table("gold.recommendations"), rows.localCheckpoint(),
                                   erased, full=chosen == "full", metadata=metadata)
    for frame in (*candidates.values(), people, history):
        frame.unpersist()
    summary = {"mode": chosen, "model": name, "version": model_version, **counts}
    log.info("scored in %.0f s: %s", time.monotonic() - started, json.dumps(summary))
    return summary


@entry_point
def main(argv=None) -> int:
    import mlflow

    from pipelines.recommend.tracking import champion_version, tracking_uri
    from pipelines.runtime.session import build_spark

    setup_logging()
    args = build_parser().parse_args(argv)
    config = config_from(args)
    # Asked before Spark starts: without a champion there is nothing to score, and saying
    # so should not wait for a JVM.
    mlflow.set_tracking_uri(tracking_uri(config))
    champion_version(config.mlflow.registered_model)
    spark = build_spark(config, "score_recommendations")
    print(json.dumps(score(spark, config, args.mode, datetime.now(UTC)), sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
