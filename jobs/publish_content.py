"""Publish what the email tool fetches: content rows, fallback rows and traits, then
export them to the serving store.

    tailor publish [--full-export | --no-export]
    spark-submit jobs/publish_content.py [same options]

Builds gold.email_content (one row per person in silver.profiles, DESIGN.md's content
row), gold.content_defaults (a row per segment and locale, and a global one per locale)
and gold.user_traits (segments and features, no personal data), each by MERGE that
rewrites only rows whose content changed, with the input tables' versions in the
commit. Holds the holdout group in gold.holdout_assignments (holdout.share of people, by
a stable hash of holdout.salt and the user id). Offer rules (publish.offers_file) are
checked before Spark starts; a malformed one stops the job, naming it.

Then checks the gold.email_content it built (the expectations/gold_email_content.py suite:
a failed critical expectation stops here, and the store keeps the last good content), and
exports what changed since the store's last export (serving.type), from the tables'
Change Data Feed; --full-export rebuilds the store under a new generation and swaps it in
at once; --no-export leaves the store alone.
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
from pipelines.pii import Keyring

log = logging.getLogger("tailor.publish")


def build_parser() -> argparse.ArgumentParser:
    parser = parser_for("tailor publish", __doc__.split("\n\n")[0])
    export = parser.add_mutually_exclusive_group()
    export.add_argument("--full-export", action="store_true", help="rebuild the serving store, then swap it in")
    export.add_argument("--no-export", action="store_true", help="build the tables only")
    return parser


def publish(spark, config: Config, keyring: Keyring, offers, segment_names: list[str], default_segment: str,
            generated_at: datetime) -> dict:
    """Build and merge the published tables; returns the counts per table."""
    from pyspark.sql import functions as F

    from expectations.runner import gate_refusals
    from pipelines.profiles.writes import refuse_clear_names
    from pipelines.publish.transforms import (
        PublishRules,
        content_rows,
        default_rows,
        holdout_assignments,
        offers_frame,
        traits_rows,
        with_first_names,
    )
    from pipelines.publish.writes import ensure_publish_tables, merge_holdout, merge_published
    from pipelines.recommend.interactions import from_interactions
    from pipelines.recommend.scoring import popular_lists
    from pipelines.recommend.writes import ensure_recommendations_table
    from pipelines.runtime.delta_tables import read_table_at, retry_on_conflict, table_exists, table_version

    needed = {"silver.profiles": "merge-profiles", "gold.user_features": "build-features",
              "silver.interactions": "build-features", "silver.products": "load-catalog"}
    for name, job in needed.items():
        if not table_exists(spark, config.table(name)):
            raise TailorError(f"{name} does not exist yet: run tailor {job} first")
    ensure_recommendations_table(spark, config)
    inputs = ("silver.profiles", "gold.user_features", "gold.recommendations", "silver.products",
              "silver.interactions")
    # Every input is read at the version the gate passed: a commit landing meanwhile (the
    # streaming jobs write all the time) waits for the next run and its validation.
    versions = {name: table_version(spark, config.table(name)) for name in inputs}
    refusals = gate_refusals(spark, config, inputs, versions)
    if refusals:
        raise TailorError(f"refusing to publish: {'; '.join(refusals)}; the serving store keeps the last good "
                          "content (tailor validate; quality.gate)")
    ensure_publish_tables(spark, config)

    def pinned(name: str):
        return read_table_at(spark, config.table(name), versions[name])

    stored_profiles = pinned("silver.profiles")
    refuse_clear_names(config.table("silver.profiles"), stored_profiles.columns)
    profiles = stored_profiles.select(
        "user_id", "first_name_encrypted", "first_name_key_id", "locale", "language", "country",
        "preferred_send_hour", F.col("consent_email_marketing.status").alias("email_consent"),
        F.col("consent_email_marketing.updated_at").alias("email_consent_at"),
        F.col("consent_personalization.status").alias("personalization_consent"))
    _refuse_unknown_name_keys(profiles, keyring)
    features = pinned("gold.user_features")
    people = with_first_names(keyring)(profiles).join(
        features.select("user_id", "segments", "primary_segment", "best_send_hour", "cart_state", "cart_items"),
        "user_id", "left").cache()
    unreadable_names = people.where("first_name_unreadable").count()
    if unreadable_names:
        log.warning("%d stored first name(s) did not decrypt (tampered, corrupted or without a key id); those "
                    "people are greeted without a name", unreadable_names)
    products = pinned("silver.products").cache()
    recommendations = pinned("gold.recommendations")
    on = generated_at.date()
    salt_id = F.sha2(F.lit(config.holdout.salt), 256)
    salt_digest = spark.range(1).select(F.substring(salt_id, 1, 16)).first()[0]
    holdout = holdout_assignments(people, config.holdout.salt, config.holdout.share, salt_digest).cache()

    rules = PublishRules(
        default_locale=config.publish.default_locale, max_products=config.publish.max_products,
        greetings=config.publish.greetings, default_send_hour=config.features.send_hour.default_hour,
        email_consent_required=config.publish.email_consent_required,
        personalization_consent_required=config.recommend.score.consent_required)
    history = from_interactions(pinned("silver.interactions"),
                                config.recommend.event_weights)
    latest = history.agg(F.max("occurred_at")).first()[0]
    as_of = latest.replace(tzinfo=UTC) if latest is not None else generated_at
    segments_of = people.select("user_id", F.coalesce("primary_segment", F.lit(default_segment)).alias("segment"),
                                "country")
    lists = popular_lists(history, segments_of, products, as_of, config.recommend.half_life_days,
                          config.publish.max_products, config.recommend.score.max_per_category).cache()
    locales = (people.select(F.coalesce("locale", F.lit(rules.default_locale)).alias("locale"))
               .union(spark.createDataFrame([(rules.default_locale,)], "locale string")).distinct())
    offer_rows = offers_frame(spark, offers)
    send_hours = features.select(F.col("primary_segment").alias("segment"), "best_send_hour")
    defaults = default_rows(segment_names, locales, lists, products, offer_rows, send_hours, rules, on).cache()
    content = content_rows(people, recommendations, products, defaults, offer_rows, holdout, rules,
                           default_segment, on)
    traits = traits_rows(features, people, holdout)

    # The version the content MERGE is about to commit: with the time, it names this run.
    next_version = (table_version(spark, config.table("gold.email_content")) or 0) + 1
    content_version = f"{generated_at.strftime('%Y-%m-%dT%H:%M:%SZ')}/{next_version}"
    metadata = json.dumps({"tailor_publish": 1, "content_version": content_version, "inputs": versions})
    counts = {}
    retries = config.profiles.conflict_retries
    # merge-profiles purges erased people from these tables while it runs: a MERGE that
    # loses that commit race is run again.
    for name, rows in (("gold.content_defaults", defaults), ("gold.email_content", content),
                       ("gold.user_traits", traits)):
        checkpointed = rows.localCheckpoint()
        counts[name] = retry_on_conflict(lambda name=name, rows=checkpointed: merge_published(
            spark, config, name, rows, content_version, generated_at, metadata), f"publish {name}", retries)
    counts["gold.holdout_assignments"] = retry_on_conflict(
        lambda: merge_holdout(spark, config, holdout, on), "publish gold.holdout_assignments", retries)
    for frame in (people, products, holdout, lists, defaults):
        frame.unpersist()
    return {"content_version": content_version, "inputs": versions, "tables": counts}


def _refuse_unknown_name_keys(profiles, keyring: Keyring) -> None:
    """A name encrypted under a key the keyring lacks is a configuration problem, not a bad
    row: say so once, rather than greet everyone it touches without a name."""
    from pyspark.sql import functions as F

    known = [key_id for key_id, _ in keyring]
    missing = sorted(row[0] for row in profiles.where(F.col("first_name_encrypted").isNotNull()
                                                      & ~F.col("first_name_key_id").isin(*known))
                     .select("first_name_key_id").distinct().collect())
    if missing:
        raise TailorError(f"silver.profiles holds names encrypted under key id(s) {', '.join(map(repr, missing))}, "
                          "which the PII keyring (secrets.pii_encryption_key) does not hold; add them to it "
                          "(as decrypt-only keys after the active one) and publish again")


@entry_point
def main(argv=None) -> int:
    from pipelines.features.writes import load_feature_rules
    from pipelines.pii import load_keyring
    from pipelines.publish.offers import load_offers
    from pipelines.publish.transforms import GLOBAL_SEGMENT

    setup_logging()
    args = build_parser().parse_args(argv)
    config = config_from(args)
    # Rules are checked before Spark starts: a malformed one costs a second, not a cluster.
    segment_rules = load_feature_rules(config)
    segment_names = [segment.name for segment in segment_rules.segments]
    if segment_rules.default_segment not in segment_names:
        segment_names.append(segment_rules.default_segment)
    if GLOBAL_SEGMENT in segment_names:
        raise TailorError(f"{config.features.segments_file}: a segment may not be called '{GLOBAL_SEGMENT}': "
                          "publish keys the everyone-default rows by that name")
    offers = load_offers(config.conf_file(config.publish.offers_file), segment_names)
    keyring = load_keyring(config)

    from expectations.runner import gate_refusals
    from pipelines.publish.export import export
    from pipelines.runtime.delta_tables import table_version
    from pipelines.runtime.session import build_spark
    from pipelines.serving import StoreUnavailable, open_store

    started = time.monotonic()
    spark = build_spark(config, "publish_content")
    summary = publish(spark, config, keyring, offers, segment_names, segment_rules.default_segment, datetime.now(UTC))
    if not args.no_export:
        # The rows just built are checked before the email tool can fetch them: a failed
        # critical expectation leaves the store serving the last good content.
        content = {"gold.email_content": table_version(spark, config.table("gold.email_content"))}
        refusals = gate_refusals(spark, config, tuple(content), content)
        if refusals:
            raise TailorError(f"refusing to export: {'; '.join(refusals)}; the tables are published, the serving "
                              "store keeps the last good content (quality.gate)")
        try:
            with open_store(config) as store:
                summary["export"] = export(spark, config, store, full=args.full_export, pinned=content)
        except StoreUnavailable as error:
            raise TailorError(f"the serving store ({config.serving.type}) is unavailable: {error}; the tables are "
                              "published, and the next run exports what changed") from None
    log.info("published in %.0f s", time.monotonic() - started)
    print(json.dumps(summary, sort_keys=True, default=str), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
