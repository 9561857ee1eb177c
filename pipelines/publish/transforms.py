"""From profiles, features, recommendations and the catalogue to what the email tool
fetches: one content row per person (DESIGN.md, "The content row"), the fallback rows
per segment and locale, a traits row per person, and the holdout group.

Every function is DataFrame -> DataFrame (or builds a Column); the job reads the tables.
Inputs, as the job selects them:

- `people`: user_id, first_name (`with_first_names` decrypts it), locale, language (the
  preference centre's), country,
  preferred_send_hour, email_consent, personalization_consent (granted | revoked |
  null), email_consent_at (when the email consent status was set), and from
  gold.user_features (null for someone it does not hold yet) segments,
  primary_segment, best_send_hour, cart_state, cart_items;
- `recommendations`: gold.recommendations;
- `products`: silver.products;
- `offers`: `offers_frame` of the offer rules;
- `lists`: `pipelines.recommend.scoring.popular_lists` (list_key, item_id, score, rank).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date

import pandas as pd
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import StringType

from pipelines.config import GreetingConfig
from pipelines.pii import Keyring, lenient_decryptor
from pipelines.publish.offers import Offer
from pipelines.recommend.scoring import EVERYONE, POPULAR_REASON

PUBLISHED, SUPPRESSED = "published", "suppressed"
GLOBAL_SEGMENT = "global"

PRICE = "struct<amount:double,currency:string>"
PRODUCT = f"struct<product_id:string,title:string,price:{PRICE},image_url:string,url:string,reason:string>"
CART_LINE = f"struct<product_id:string,title:string,quantity:bigint,price:{PRICE},image_url:string,url:string>"
HERO = "struct<offer_id:string,headline:string,url:string>"
GREETING = "struct<first_name:string,text:string>"
MODEL = "struct<name:string,version:string>"

# The row the API serves, in DESIGN.md's order; content_version and generated_at are set
# when a row's content changes (`content_hash`), so an unchanged row keeps its version.
CONTENT_FIELDS = ("model", "fallback", "locale", "greeting", "segment", "send_hour_utc", "hero", "products", "cart")


@dataclass(frozen=True)
class PublishRules:
    """What the row builders need from config (`publish.*`, `features.send_hour`)."""

    default_locale: str
    max_products: int
    greetings: Mapping[str, GreetingConfig]
    default_send_hour: int
    email_consent_required: bool
    personalization_consent_required: bool


def language(locale: Column) -> Column:
    return F.lower(F.substring(locale, 1, 2))


def holdout_bucket(user_id: Column, salt: str) -> Column:
    """A number in [0, 1) from SHA-256 of `salt:user_id`: the same for a person as long
    as the salt stays, on any engine (the first 8 hex digits, over 16^8)."""
    digest = F.sha2(F.concat(F.lit(f"{salt}:"), user_id), 256)
    return F.conv(F.substring(digest, 1, 8), 16, 10).cast("double") / F.lit(float(16 ** 8))


def holdout_assignments(users: DataFrame, salt: str, share: float, salt_id: str) -> DataFrame:
    """(user_id, salt_id, share, bucket, in_holdout) for every user: in the holdout when
    the bucket is below the share."""
    bucket = holdout_bucket(F.col("user_id"), salt)
    return (users.select("user_id").distinct()
            .select("user_id", F.lit(salt_id).alias("salt_id"), F.lit(share).alias("share"),
                    bucket.alias("bucket"), (bucket < F.lit(share)).alias("in_holdout")))


def with_first_names(keyring: Keyring) -> Callable[[DataFrame], DataFrame]:
    """first_name_encrypted, first_name_key_id -> first_name, in clear, and
    first_name_unreadable: whether a stored name did not decrypt (tampered, without a key
    id, or under a key the keyring does not hold), which then greets as no name.
    Publishing is the one place a name is decrypted (an Arrow UDF: a key in a Spark
    expression would show in the plan)."""

    @F.pandas_udf(StringType())
    def reveal(blobs: pd.Series, key_ids: pd.Series) -> pd.Series:
        decrypted = lenient_decryptor(keyring)
        return pd.Series([decrypted(blob, key_id) for blob, key_id in zip(blobs, key_ids, strict=True)],
                         dtype=object)

    def transform(profiles: DataFrame) -> DataFrame:
        stored = F.col("first_name_encrypted")
        return (profiles.withColumn("first_name", F.when(stored.isNotNull(), reveal(stored, "first_name_key_id")))
                .withColumn("first_name_unreadable", stored.isNotNull() & F.col("first_name").isNull())
                .drop("first_name_encrypted", "first_name_key_id"))

    return transform


def greeting_text(first_name: Column, lang: Column, greetings: Mapping[str, GreetingConfig]) -> Column:
    """The language's greeting (else English), with the first name when there is one."""
    def by_language(text_of) -> Column:
        chosen = F.lit(text_of(greetings["en"]))
        for code, greeting in greetings.items():
            if code != "en":
                chosen = F.when(lang == code, F.lit(text_of(greeting))).otherwise(chosen)
        return chosen

    named = by_language(lambda greeting: greeting.named)
    # replace() takes the name as data: a name holding `$1` or `{first_name}` stays as it is.
    with_name = F.concat(F.substring_index(named, "{first_name}", 1), first_name,
                         F.substring_index(named, "{first_name}", -1))
    has_name = first_name.isNotNull() & (F.trim(first_name) != "")
    return F.when(has_name, with_name).otherwise(by_language(lambda greeting: greeting.anonymous))


def offers_frame(spark: SparkSession, offers: Iterable[Offer]) -> DataFrame:
    rows = [(offer.id, offer.headline, offer.url, offer.priority, list(offer.segments) if offer.segments else None,
             list(offer.locales) if offer.locales else None, offer.starts, offer.ends) for offer in offers]
    return spark.createDataFrame(rows, "offer_id string, headline string, url string, priority int, "
                                       "segments array<string>, locales array<string>, starts date, ends date")


def hero_offers(audience: DataFrame, offers: DataFrame, on: date) -> DataFrame:
    """(key, hero) for every `audience` row (key, segments, locale): the offer with the
    lowest priority among those for any of its segments, its locale or language, and
    `on`. A row no offer applies to is absent."""
    applies = ((F.col("o.segments").isNull() | F.arrays_overlap(F.col("o.segments"), F.col("a.segments")))
               & (F.col("o.locales").isNull() | F.array_contains(F.col("o.locales"), F.col("a.locale"))
                  | F.array_contains(F.col("o.locales"), language(F.col("a.locale"))))
               & (F.col("o.starts").isNull() | (F.col("o.starts") <= F.lit(on)))
               & (F.col("o.ends").isNull() | (F.col("o.ends") >= F.lit(on))))
    matched = audience.alias("a").join(F.broadcast(offers.alias("o")), applies)
    best = Window.partitionBy("a.key").orderBy("o.priority")
    return (matched.withColumn("_n", F.row_number().over(best)).where(F.col("_n") == 1)
            .select(F.col("a.key").alias("key"),
                    F.struct(F.col("o.offer_id").alias("offer_id"), F.col("o.headline").alias("headline"),
                             F.col("o.url").alias("url")).alias("hero")))


def sellable_details(products: DataFrame) -> DataFrame:
    """(product_id, title, price, image_url, url) of products an email may show: active
    and not out of stock (unknown stock counts as in stock), with a price."""
    return (products.where(F.col("active") & F.coalesce(F.col("in_stock"), F.lit(True)) & F.col("price").isNotNull())
            .select("product_id", "title",
                    F.struct(F.col("price").alias("amount"), F.col("currency").alias("currency")).alias("price"),
                    "image_url", "url"))


def _product_lists(ranked: DataFrame, products: DataFrame, max_products: int) -> DataFrame:
    """(key, products): each key's (key, product_id, rank, reason) rows that are still
    sellable, as the content row's product structs, best first, at most `max_products`."""
    kept = ranked.join(F.broadcast(sellable_details(products)), "product_id")
    order = Window.partitionBy("key").orderBy("rank", "product_id")
    top = kept.withColumn("_n", F.row_number().over(order)).where(F.col("_n") <= max_products)
    structs = (top.groupBy("key")
               .agg(F.sort_array(F.collect_list(F.struct(
                   "_n", "product_id", "title", "price", "image_url", "url", "reason"))).alias("_ranked")))
    return structs.select("key", F.transform("_ranked", lambda item: item.dropFields("_n")).cast(f"array<{PRODUCT}>")
                          .alias("products"))


def audience(people: DataFrame, rules: PublishRules) -> DataFrame:
    """`people` with what decides their row: locale, segment, status (published, or
    suppressed without email consent) and a fallback reason from consent."""
    if rules.email_consent_required:
        may_email = F.coalesce(F.col("email_consent") == "granted", F.lit(False))
    else:
        may_email = F.coalesce(F.col("email_consent") != "revoked", F.lit(True))
    if rules.personalization_consent_required:
        may_personalize = F.coalesce(F.col("personalization_consent") == "granted", F.lit(False))
    else:
        may_personalize = F.coalesce(F.col("personalization_consent") != "revoked", F.lit(True))
    locale = F.coalesce(F.col("locale"), F.lit(rules.default_locale))
    return people.select(
        "*",
        locale.alias("_locale"),
        F.coalesce("primary_segment", F.lit(None).cast("string")).alias("_segment"),
        F.when(may_email, F.lit(PUBLISHED)).otherwise(F.lit(SUPPRESSED)).alias("status"),
        F.when(~may_personalize, F.lit("no_consent")).alias("_consent_fallback"),
    )


def default_rows(segments: list[str], locales: DataFrame, lists: DataFrame, products: DataFrame,
                 offers: DataFrame, send_hours: DataFrame, rules: PublishRules, on: date) -> DataFrame:
    """gold.content_defaults: a row per segment and locale (`segment:<name>:<locale>`) and
    a global one per locale (`global:<locale>`), for people whose own row cannot be
    personal and for callers the store does not know. Products are the segment's popular
    items (the global row: everyone's); the greeting names no one; the send hour is the
    segment's most common best hour (`send_hours`: segment, best_send_hour)."""
    spark = locales.sparkSession
    names = spark.createDataFrame([(name,) for name in [*segments, GLOBAL_SEGMENT]], "segment string")
    grid = names.crossJoin(locales.select(F.col("locale")).distinct())
    keyed = grid.select(
        F.concat_ws(":", F.when(F.col("segment") == GLOBAL_SEGMENT, F.lit(GLOBAL_SEGMENT))
                    .otherwise(F.concat(F.lit("segment:"), F.col("segment"))), F.col("locale")).alias("key"),
        "segment", "locale",
        F.when(F.col("segment") == GLOBAL_SEGMENT, F.lit(EVERYONE))
        .otherwise(F.concat(F.lit("segment:"), F.col("segment"))).alias("list_key"))
    available = lists.select("list_key").distinct().withColumn("_has", F.lit(True))
    # A segment nobody is in yet has no popular list of its own: everyone's stands in.
    chosen = (keyed.join(F.broadcast(available), "list_key", "left")
              .withColumn("list_key", F.when(F.col("_has"), F.col("list_key")).otherwise(F.lit(EVERYONE))))
    ranked = (chosen.join(lists, "list_key")
              .select("key", F.col("item_id").alias("product_id"), "rank", F.lit(POPULAR_REASON).alias("reason")))
    heroes = hero_offers(keyed.select("key", F.array("segment").alias("segments"), "locale"), offers, on)
    hour_counts = send_hours.groupBy("segment", "best_send_hour").count()
    commonest = Window.partitionBy("segment").orderBy(F.desc("count"), "best_send_hour")
    hours = (hour_counts.withColumn("_n", F.row_number().over(commonest)).where(F.col("_n") == 1)
             .select("segment", F.col("best_send_hour").alias("_hour")))
    return (keyed.join(_product_lists(ranked, products, rules.max_products), "key", "left")
            .join(heroes, "key", "left").join(hours, "segment", "left")
            .select("key", F.lit(None).cast(MODEL).alias("model"), F.lit(None).cast("string").alias("fallback"),
                    "locale",
                    F.struct(F.lit(None).cast("string").alias("first_name"),
                             greeting_text(F.lit(None).cast("string"), language(F.col("locale")), rules.greetings)
                             .alias("text")).alias("greeting"),
                    "segment",
                    F.coalesce("_hour", F.lit(rules.default_send_hour)).cast("int").alias("send_hour_utc"),
                    F.col("hero").cast(HERO).alias("hero"),
                    F.coalesce("products", F.array().cast(f"array<{PRODUCT}>")).alias("products"),
                    F.array().cast(f"array<{CART_LINE}>").alias("cart")))


def _cart_lines(people: DataFrame, products: DataFrame) -> DataFrame:
    """(user_id, cart): an abandoner's cart lines with the catalogue's title, image and
    link, in the order they were added; a product the catalogue no longer sells is left out."""
    lines = (people.where(F.col("cart_state") == "abandoned")
             .select("user_id", F.posexplode("cart_items").alias("_position", "line"))
             .select("user_id", "_position", F.col("line.product_id").alias("product_id"),
                     F.col("line.quantity").alias("quantity"),
                     F.struct(F.col("line.unit_price").alias("amount"),
                              F.col("line.currency").alias("currency")).alias("line_price")))
    catalogue = sellable_details(products).select("product_id", "title", "image_url", "url", "price")
    joined = lines.join(F.broadcast(catalogue), "product_id")
    return (joined.groupBy("user_id").agg(F.sort_array(F.collect_list(F.struct(
        "_position", "product_id", "title", "quantity",
        F.coalesce(F.when(F.col("line_price.amount").isNotNull(), F.col("line_price")), F.col("price")).alias("price"),
        "image_url", "url"))).alias("_lines"))
        .select("user_id", F.transform("_lines", lambda line: line.dropFields("_position"))
                .cast(f"array<{CART_LINE}>").alias("cart")))


def _default_keys(people: DataFrame, defaults: DataFrame, default_segment: str, default_locale: str) -> DataFrame:
    """(user_id, _default_key): the default row that stands in for each person: their
    segment's in their locale, else the default segment's, else the global one in their
    locale, else in the default locale (a segment renamed since their features were
    computed, or a locale with no rows yet, still gets real content)."""
    candidates = F.array(
        F.concat_ws(":", F.lit("segment"), F.col("segment"), F.col("_locale")),
        F.concat_ws(":", F.lit("segment"), F.lit(default_segment), F.col("_locale")),
        F.concat_ws(":", F.lit("global"), F.col("_locale")),
        F.lit(f"global:{default_locale}"))
    known = defaults.select(F.col("key").alias("_default_key"))
    choices = (people.select("user_id", F.posexplode(candidates).alias("_preference", "_default_key"))
               .join(known, "_default_key"))
    first = Window.partitionBy("user_id").orderBy("_preference")
    return (choices.withColumn("_n", F.row_number().over(first)).where(F.col("_n") == 1)
            .select("user_id", "_default_key"))


def content_rows(people: DataFrame, recommendations: DataFrame, products: DataFrame, defaults: DataFrame,
                 offers: DataFrame, holdout: DataFrame, rules: PublishRules, default_segment: str,
                 on: date) -> DataFrame:
    """gold.email_content's rows (user_id, status, email_consent_at, CONTENT_FIELDS) for everyone in
    `people`. Without email consent: status `suppressed` and no content. Without
    personalization consent, then in the holdout (`holdout`: user_id, in_holdout): the
    segment default for their locale, with `fallback` no_consent or holdout. Everyone
    else: a personal row (a greeting by name, the hero offer for their segments, their
    recommendations with catalogue details, their abandoned cart, their send hour), with
    `fallback` cold_start when their recommendations are a popular list or missing."""
    people = audience(people, rules).join(holdout.select("user_id", "in_holdout"), "user_id", "left")
    segment = F.coalesce(F.col("_segment"), F.lit(default_segment))
    fallback = (F.when(F.col("status") == SUPPRESSED, F.lit(None).cast("string"))
                .when(F.col("_consent_fallback").isNotNull(), F.col("_consent_fallback"))
                .when(F.coalesce("in_holdout", F.lit(False)), F.lit("holdout")))
    decided = people.select("*", segment.alias("segment"), fallback.alias("_default_reason"))

    suppressed = decided.where(F.col("status") == SUPPRESSED).select(
        "user_id", "status", "email_consent_at", *[F.lit(None).alias(name) for name in CONTENT_FIELDS])

    published = decided.where(F.col("status") == PUBLISHED)
    default_of = _default_keys(published, defaults, default_segment, rules.default_locale)
    as_default = published.where(F.col("_default_reason").isNotNull())
    from_default = (as_default.select("user_id", "_default_reason", "email_consent_at")
                    .join(default_of, "user_id")
                    .join(defaults.drop("fallback").withColumnRenamed("key", "_default_key"), "_default_key")
                    .select("user_id", F.lit(PUBLISHED).alias("status"), "email_consent_at", "model",
                            F.col("_default_reason").alias("fallback"), *CONTENT_FIELDS[2:]))

    personal = decided.where((F.col("status") == PUBLISHED) & F.col("_default_reason").isNull())
    recommended = (recommendations.join(personal.select("user_id"), "user_id", "left_semi")
                   .select("user_id", F.col("fallback").alias("_recs_fallback"),
                           F.struct(F.col("model_name").alias("name"), F.col("model_version").alias("version"))
                           .alias("model"), F.explode("items").alias("item"))
                   .select("user_id", "_recs_fallback", "model", F.col("user_id").alias("key"),
                           F.col("item.product_id").alias("product_id"), F.col("item.rank").alias("rank"),
                           F.col("item.reason").alias("reason")))
    their_products = _product_lists(recommended.select("key", "product_id", "rank", "reason"), products,
                                    rules.max_products).withColumnRenamed("key", "user_id")
    their_model = recommended.select("user_id", "_recs_fallback", "model").dropDuplicates(["user_id"])
    heroes = hero_offers(personal.select(F.col("user_id").alias("key"),
                                         F.array_union(F.coalesce("segments", F.array().cast("array<string>")),
                                                       F.array("segment")).alias("segments"),
                                         F.col("_locale").alias("locale")), offers, on)
    segment_products = defaults.select(F.col("key").alias("_default_key"),
                                       F.col("products").alias("_default_products"))
    send_hour = F.coalesce("preferred_send_hour", "best_send_hour", "_default_hour")
    personal_rows = (personal
                     .join(their_products, "user_id", "left").join(their_model, "user_id", "left")
                     .join(heroes.withColumnRenamed("key", "user_id"), "user_id", "left")
                     .join(_cart_lines(personal, products), "user_id", "left")
                     .join(default_of, "user_id", "left")
                     .join(segment_products, "_default_key", "left")
                     .join(defaults.select(F.col("key").alias("_default_key"),
                                           F.col("send_hour_utc").alias("_default_hour")), "_default_key", "left")
                     .select("user_id", F.lit(PUBLISHED).alias("status"), "email_consent_at",
                             F.col("model").cast(MODEL).alias("model"),
                             # No list, or none of it still sellable: the segment's popular items.
                             F.when(F.col("products").isNull() | (F.size("products") == 0)
                                    | (F.col("_recs_fallback") == "cold_start"), F.lit("cold_start"))
                             # Scored as without consent, which they have given since: the
                             # list is a popular one until the next score run.
                             .when(F.col("_recs_fallback").isNotNull(), F.lit("stale"))
                             .alias("fallback"),
                             F.col("_locale").alias("locale"),
                             F.struct(F.when(F.trim("first_name") != "", F.col("first_name")).alias("first_name"),
                                      greeting_text(F.col("first_name"), F.coalesce(
                                          F.lower("language"), language(F.col("_locale"))), rules.greetings)
                                      .alias("text")).alias("greeting"),
                             "segment",
                             F.coalesce(send_hour, F.lit(rules.default_send_hour)).cast("int").alias("send_hour_utc"),
                             F.col("hero").cast(HERO).alias("hero"),
                             F.when(F.size(F.coalesce("products", F.array())) > 0, F.col("products"))
                             .otherwise(F.coalesce("_default_products", F.array().cast(f"array<{PRODUCT}>")))
                             .alias("products"),
                             F.coalesce("cart", F.array().cast(f"array<{CART_LINE}>")).alias("cart")))
    return personal_rows.unionByName(from_default).unionByName(suppressed)


def traits_rows(features: DataFrame, people: DataFrame, holdout: DataFrame) -> DataFrame:
    """gold.user_traits: what internal callers may know of a person without any personal
    data: segments, lifecycle, RFM, engagement, send hour, cart state, top categories
    and whether they are in the holdout. One row per person in `people` that
    gold.user_features holds."""
    return (features.join(people.select("user_id"), "user_id", "left_semi")
            .join(holdout.select("user_id", "in_holdout"), "user_id", "left")
            .select("user_id", "segments", "primary_segment", "lifecycle_stage", "rfm_cell", "engagement_score",
                    "best_send_hour", "cart_state", "cart_value", "top_categories",
                    F.coalesce("in_holdout", F.lit(False)).alias("in_holdout"), "features_as_of"))

