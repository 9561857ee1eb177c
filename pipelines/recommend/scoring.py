"""From blended candidates to what a person may be shown: the business rules, the
fallback lists for people without consent or history, and gold.recommendations rows.

Every function is DataFrame -> DataFrame; the job reads the tables and the model.
`products` is silver.products; `people` is (user_id, segment, country, consented,
has_history) for everyone being scored.
"""

from __future__ import annotations

from datetime import datetime

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from pipelines.recommend.interactions import decayed
from pipelines.recommend.metrics import top_k

POPULAR_REASON = "popular_in_segment"
EVERYONE = "everyone"


def sellable(products: DataFrame) -> DataFrame:
    """(item_id, category) of the products an email may show: active and not out of stock
    (unknown stock counts as in stock). A product the catalogue does not hold has no
    title, price or image to render, so it is not sellable either."""
    return (products.where(F.col("active") & F.coalesce(F.col("in_stock"), F.lit(True)))
            .select(F.col("product_id").alias("item_id"), "category"))


def apply_rules(candidates: DataFrame, bought: DataFrame, repeatable: DataFrame | None, products: DataFrame,
                k: int, max_per_category: int) -> DataFrame:
    """(user_id, item_id, score, reason) -> the k best per user, ranked from 1, that pass
    the rules: nothing already bought unless buy_again proposed it (`repeatable`, its
    (user_id, item_id) list; then the reason shown is buy_again, whichever model
    contributed most), only sellable products, at most `max_per_category` of one category."""
    owned = bought.select("user_id", "item_id").distinct().withColumn("_bought", F.lit(True))
    if repeatable is None:
        repeatable = owned.limit(0).select("user_id", "item_id")
    again = repeatable.select("user_id", "item_id").distinct().withColumn("_again", F.lit(True))
    allowed = (candidates.join(owned, ["user_id", "item_id"], "left").join(again, ["user_id", "item_id"], "left")
               .where(F.col("_bought").isNull() | F.col("_again").isNotNull())
               .withColumn("reason", F.when(F.col("_bought"), F.lit("buy_again")).otherwise(F.col("reason")))
               .join(F.broadcast(sellable(products)), "item_id"))
    in_category = Window.partitionBy("user_id", "category").orderBy(F.col("score").desc(), F.col("item_id"))
    capped = (allowed.withColumn("_in_category", F.row_number().over(in_category))
              .where(F.col("_in_category") <= max_per_category))
    return top_k(capped, k).select("user_id", "item_id", "score", "reason", "rank")


def popular_lists(log: DataFrame, people: DataFrame, products: DataFrame, as_of: datetime,
                  half_life_days: float, k: int, max_per_category: int) -> DataFrame:
    """(list_key, item_id, score, rank): the k most-interacted sellable items, time-decayed,
    of each segment (`segment:<name>`), each country (`country:<code>`) and everyone,
    under the category cap. Segments and countries are those of `people`."""
    strength = decayed(F.col("weight"), F.col("occurred_at"), as_of, half_life_days)
    keyed = log.join(people.select("user_id", "segment", "country"), "user_id", "left")
    groups = [F.lit(EVERYONE),
              F.when(F.col("segment").isNotNull(), F.concat(F.lit("segment:"), F.col("segment"))),
              F.when(F.col("country").isNotNull(), F.concat(F.lit("country:"), F.col("country")))]
    scored = (keyed.select(F.explode(F.array(*groups)).alias("list_key"), "item_id", strength.alias("strength"))
              .where(F.col("list_key").isNotNull())
              .groupBy("list_key", "item_id").agg(F.sum("strength").alias("score"))
              .join(F.broadcast(sellable(products)), "item_id"))
    in_category = Window.partitionBy("list_key", "category").orderBy(F.col("score").desc(), F.col("item_id"))
    capped = (scored.withColumn("_in_category", F.row_number().over(in_category))
              .where(F.col("_in_category") <= max_per_category))
    return top_k(capped, k, partition=("list_key",)).select("list_key", "item_id", "score", "rank")


def fallback_items(people: DataFrame, lists: DataFrame) -> DataFrame:
    """(user_id, item_id, score, reason, rank): each person's segment list, else their
    country's, else everyone's."""
    known = lists.select("list_key").distinct().withColumn("_has", F.lit(True))
    choices = (people.select("user_id", F.posexplode(F.array(
        F.concat(F.lit("segment:"), F.col("segment")), F.concat(F.lit("country:"), F.col("country")),
        F.lit(EVERYONE))).alias("_preference", "list_key"))
        .join(F.broadcast(known), "list_key"))
    first = Window.partitionBy("user_id").orderBy("_preference")
    chosen = choices.withColumn("_n", F.row_number().over(first)).where(F.col("_n") == 1).select("user_id", "list_key")
    return (chosen.join(F.broadcast(lists), "list_key")
            .select("user_id", "item_id", "score", F.lit(POPULAR_REASON).alias("reason"), "rank"))


def recommendations(people: DataFrame, personal: DataFrame, lists: DataFrame, bought: DataFrame, k: int,
                    model_name: str, model_version: str, scored_at: datetime) -> DataFrame:
    """gold.recommendations rows for everyone in `people`. A person with consent and
    history gets their `personal` items, topped up to k from their fallback list (never
    with what they bought, never twice); without consent, `no_consent` and the fallback
    list; with consent and no history, `cold_start` and the fallback list."""
    fallback_reason = (F.when(~F.col("consented"), F.lit("no_consent"))
                       .when(~F.col("has_history"), F.lit("cold_start")))
    who = people.select("user_id", fallback_reason.alias("fallback"))
    personal_users = who.where(F.col("fallback").isNull()).select("user_id")
    personal_people = people.join(personal_users, "user_id", "left_semi")
    fallback_people = people.join(personal_users, "user_id", "left_anti")
    owned = bought.select("user_id", "item_id").distinct()
    top_up = fallback_items(personal_people, lists).join(owned, ["user_id", "item_id"], "left_anti")
    merged = (personal.join(personal_users, "user_id", "left_semi").withColumn("_source", F.lit(0))
              .unionByName(top_up.withColumn("_source", F.lit(1)))
              .unionByName(fallback_items(fallback_people, lists).withColumn("_source", F.lit(1))))
    once = Window.partitionBy("user_id", "item_id").orderBy("_source", "rank")
    order = Window.partitionBy("user_id").orderBy("_source", "rank", "item_id")
    ranked = (merged.withColumn("_once", F.row_number().over(once)).where(F.col("_once") == 1)
              .withColumn("rank", F.row_number().over(order)).where(F.col("rank") <= k))
    items = (ranked.groupBy("user_id")
             .agg(F.sort_array(F.collect_list(F.struct(
                 F.col("rank").cast("int").alias("rank"), F.col("item_id").alias("product_id"),
                 F.col("score").alias("score"), F.col("reason").alias("reason")))).alias("_items")))
    ordered = F.transform("_items", lambda item: F.struct(item["product_id"].alias("product_id"),
                                                          item["rank"].alias("rank"), item["score"].alias("score"),
                                                          item["reason"].alias("reason")))
    return (who.join(items, "user_id", "left")
            .select("user_id", F.coalesce(ordered, F.array().cast("array<struct<product_id:string,rank:int,"
                                                                   "score:double,reason:string>>")).alias("items"),
                    "fallback", F.lit(model_name).alias("model_name"), F.lit(model_version).alias("model_version"),
                    F.lit(scored_at).alias("scored_at")))
