"""Behaviour features: silver.interactions from bronze.events, and gold.user_features for
the users a batch saw, recomputed from their interactions as of one moment.

A user's row is recomputed from that user's interactions in the lookback window rather
than patched with the batch's events: a late, duplicated or out-of-order event then
changes nothing but which users a batch touches, and windows stay exact. Figures that
compare a user with everyone (RFM quintiles, the segment's send hour) come from the
population as it stands after the batch; users the batch did not touch keep theirs
until the daily refresh (`tailor build-features --refresh-windows`) recomputes everyone.

All weights, windows and thresholds come from `FeaturesConfig`; every function here is
DataFrame -> DataFrame with no I/O.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, StructType

from pipelines.config import FeaturesConfig
from pipelines.contracts.events import INTERACTION_EVENT_TYPES
from pipelines.contracts.spark import union_payload_schema
from pipelines.features.segments import SegmentRules, assign_segments
from pipelines.pii import PiiKeys
from pipelines.profiles.transforms import erased_users
from pipelines.runtime.memo import per_object
from pipelines.schemas import INTERACTION_ITEM, SEGMENT_OUTPUT_COLUMNS, user_features_schema

HOURS = 24
# Things a person did; a delivery or a bounce happens to them and does not make them "seen".
ACTIVITY_TYPES = ("page_view", "product_view", "add_to_cart", "remove_from_cart", "purchase",
                  "email_open", "email_click")
VIEW_TYPES = ("page_view", "product_view")
QUINTILE_BREAKS = [0.2, 0.4, 0.6, 0.8]
CART_STATES = ("empty", "active", "abandoned")
LIFECYCLE_STAGES = ("prospect", "new", "active", "at_risk", "lapsed")
# Columns that take only these values: a rule naming another is a typo, refused at start-up.
COLUMN_CHOICES = {"cart_state": CART_STATES, "lifecycle_stage": LIFECYCLE_STAGES}

# Every field an interaction payload may carry, from the contract; a type that lacks one
# reads it as null.
_PAYLOAD = union_payload_schema(INTERACTION_EVENT_TYPES)


def feature_schema(settings: FeaturesConfig) -> StructType:
    return user_features_schema(settings.windows_days, settings.rate_window_days)


def rule_columns(settings: FeaturesConfig) -> dict[str, str]:
    """Feature columns a segment rule may test (name -> Spark type): the scalar ones
    computed before segments are assigned."""
    return {field.name: field.dataType.simpleString() for field in feature_schema(settings)
            if field.name not in ("user_id", "features_as_of", *SEGMENT_OUTPUT_COLUMNS)
            and not isinstance(field.dataType, (ArrayType, StructType))}


# -- silver.interactions -------------------------------------------------------------------

def _interaction_item(line: Column) -> Column:
    return F.struct(*[line[field.name].cast(field.dataType).alias(field.name) for field in INTERACTION_ITEM])


def interaction_rows(events: DataFrame) -> DataFrame:
    """bronze.events rows -> silver.interactions rows (behaviour types only)."""
    payload = F.from_json("payload", _PAYLOAD)
    is_purchase = F.col("event_type") == "purchase"
    return (events.where(F.col("event_type").isin(*INTERACTION_EVENT_TYPES) & F.col("user_id").isNotNull())
            .withColumn("_p", payload)
            .select(
                "event_id", "user_id", "event_type", "occurred_at", "event_date", "source",
                F.col("_p.session_id").alias("session_id"),
                F.col("_p.product_id").alias("product_id"),
                F.col("_p.quantity").cast("int").alias("quantity"),
                F.coalesce("_p.unit_price", "_p.price").alias("unit_price"),
                F.col("_p.currency").alias("currency"),
                F.col("_p.cart_id").alias("cart_id"),
                F.col("_p.order_id").alias("order_id"),
                F.transform("_p.items", _interaction_item).alias("items"),
                F.col("_p.total").alias("order_total"),
                F.when(is_purchase, F.coalesce("_p.is_cancellation", F.lit(False))).alias("is_cancellation"),
                F.col("_p.campaign_id").alias("campaign_id"),
                F.col("_p.message_id").alias("message_id"),
                "ingested_at"))


def one_row_per_event(interactions: DataFrame) -> DataFrame:
    """One row per event_id: the first ingested copy (then the earliest event time, then
    the user), so a batch run again after a crash keeps the same copy."""
    first = Window.partitionBy("event_id").orderBy("ingested_at", "occurred_at", "user_id")
    return interactions.withColumn("_copy", F.row_number().over(first)).where("_copy = 1").drop("_copy")


def without_erased(tombstones: DataFrame, keys: PiiKeys) -> Callable[[DataFrame], DataFrame]:
    """Drop events of erased people that occurred up to their erasure: a straggler that
    reaches bronze after merge_profiles purged the person must not bring them back. Events
    after the erasure belong to a new life of the id and stay."""

    def transform(events: DataFrame) -> DataFrame:
        erased = erased_users(tombstones, keys.hmac_key)(events)
        return (events.join(F.broadcast(erased), "user_id", "left")
                .where(F.col("erased_through").isNull() | (F.col("occurred_at") > F.col("erased_through")))
                .select(*events.columns))

    return transform


# -- gold.user_features: per user ------------------------------------------------------------

# The batch's as-of time, as a column of the rows being aggregated: the aggregates are then
# the same for every batch, and are built once per process (see pipelines.runtime.memo).
_AS_OF = "_as_of"


def _since(as_of: datetime, days: float) -> Column:
    return F.lit(as_of - timedelta(days=days))


def _within(at: Column, days: float) -> Column:
    """`at` is later than `days` before the row's as-of time (_AS_OF), to the microsecond."""
    return F.unix_micros(at) > F.unix_micros(F.col(_AS_OF)) - F.lit(timedelta(days=days) // timedelta(microseconds=1))


def _days_between(as_of: datetime, moment: Column) -> Column:
    """Whole days from `moment` to as_of (0 for anything in the last 24 hours)."""
    return F.floor((F.lit(as_of).cast("double") - moment.cast("double")) / 86400).cast("int")


def _weights(weights: dict[str, float]) -> Column:
    return F.create_map(*[item for name, weight in sorted(weights.items())
                          for item in (F.lit(name), F.lit(float(weight)))])


def _rate(hits: Column, delivered: Column) -> Column:
    return F.when(F.size(delivered) > 0, F.round(F.size(F.array_intersect(delivered, hits)) / F.size(delivered), 4))


@per_object
def _behaviour(settings: FeaturesConfig) -> tuple[Column, ...]:
    """One aggregate per feature over a user's interactions, each as of the rows' _AS_OF."""
    kind, at = F.col("event_type"), F.col("occurred_at")
    order = (kind == "purchase") & ~F.col("is_cancellation")
    purchase = kind == "purchase"
    columns = [
        F.min(F.when(kind.isin(*ACTIVITY_TYPES), at)).alias("first_seen_at"),
        F.max(F.when(kind.isin(*ACTIVITY_TYPES), at)).alias("last_seen_at"),
        F.min(F.when(order, at)).alias("first_purchase_at"),
        F.max(F.when(order, at)).alias("last_purchase_at"),
        F.count_distinct(F.when(order, F.col("order_id"))).alias("frequency"),
        F.coalesce(F.round(F.sum(F.when(purchase, F.col("order_total"))), 2), F.lit(0.0)).alias("monetary"),
    ]
    for days in settings.windows_days:
        inside = _within(at, days)
        columns += [
            F.count(F.when(inside & kind.isin(*VIEW_TYPES), True)).alias(f"views_{days}d"),
            F.count(F.when(inside & (kind == "add_to_cart"), True)).alias(f"carts_{days}d"),
            F.count_distinct(F.when(inside & order, F.col("order_id"))).alias(f"purchases_{days}d"),
            F.coalesce(F.round(F.sum(F.when(inside & purchase, F.col("order_total"))), 2),
                       F.lit(0.0)).alias(f"revenue_{days}d"),
        ]
    rate_days = settings.rate_window_days
    delivered = F.collect_set(F.when((kind == "email_delivered") & _within(at, rate_days),
                                     F.col("message_id")))
    # A click is an open too: image blocking hides many opens, never a click.
    opened = F.collect_set(F.when(kind.isin("email_open", "email_click"), F.col("message_id")))
    clicked = F.collect_set(F.when(kind == "email_click", F.col("message_id")))
    columns += [
        F.size(delivered).cast("long").alias(f"emails_delivered_{rate_days}d"),
        _rate(opened, delivered).alias(f"open_rate_{rate_days}d"),
        _rate(clicked, delivered).alias(f"click_rate_{rate_days}d"),
    ]
    engagement = settings.engagement
    age_days = F.greatest(F.lit(0.0), (F.col(_AS_OF).cast("double") - at.cast("double")) / 86400)
    points = (F.coalesce(F.element_at(_weights(engagement.weights), kind), F.lit(0.0))
              * F.pow(F.lit(0.5), age_days / engagement.half_life_days))
    columns.append(F.coalesce(F.round(F.sum(F.when(_within(at, engagement.window_days), points)), 4),
                              F.lit(0.0)).alias("engagement_score"))
    opens = F.collect_list(F.when((kind == "email_open") & _within(at, settings.send_hour.window_days),
                                  F.hour(at)))
    columns.append(opens.alias("_open_hours"))
    return tuple(columns)


def _top_categories(settings: FeaturesConfig, as_of: datetime, interactions: DataFrame,
                    products: DataFrame) -> DataFrame:
    """user_id -> the categories a user weighs most (weight per event from config), ties by name."""
    kind = F.col("event_type")
    recent = interactions.where(kind.isin(*settings.category_weights)
                                & (F.col("occurred_at") > _since(as_of, settings.category_window_days)))
    single = recent.where(kind != "purchase").select("user_id", "event_type", "product_id")
    bought = (recent.where((kind == "purchase") & ~F.col("is_cancellation"))
              .select("user_id", "event_type", F.explode("items").alias("item"))
              .select("user_id", "event_type", F.col("item.product_id").alias("product_id")))
    weighted = (single.unionByName(bought)
                .join(products.select("product_id", "category").where(F.col("category").isNotNull()), "product_id")
                .withColumn("weight", F.element_at(_weights(settings.category_weights), kind)))
    per_category = weighted.groupBy("user_id", "category").agg(F.sum("weight").alias("weight"))
    ranked = F.array_sort(F.collect_list(F.struct((-F.col("weight")).alias("w"), F.col("category").alias("c"))))
    return per_category.groupBy("user_id").agg(
        F.transform(F.slice(ranked, 1, settings.top_categories), lambda entry: entry["c"]).alias("top_categories"))


def _carts(settings: FeaturesConfig, as_of: datetime, interactions: DataFrame, last_purchases: DataFrame) -> DataFrame:
    """user_id -> what is in the cart now: items added (less those removed) since the
    user's last purchase, any purchase emptying the cart."""
    kind = F.col("event_type")
    lines = (interactions.where(kind.isin("add_to_cart", "remove_from_cart"))
             .join(last_purchases, "user_id", "left")
             .where(F.col("last_purchase_at").isNull() | (F.col("occurred_at") > F.col("last_purchase_at"))))
    added = kind == "add_to_cart"
    latest_add = F.max(F.when(added, F.struct("occurred_at", "unit_price", "currency")))
    per_item = (lines.groupBy("user_id", "product_id")
                .agg(F.sum(F.when(added, F.col("quantity")).otherwise(-F.col("quantity")))
                     .cast("long").alias("quantity"),
                     latest_add.alias("_add"), F.max("occurred_at").alias("_touched_at")))
    item = F.struct(F.col("product_id"), F.col("quantity"), F.col("_add.unit_price").alias("unit_price"),
                    F.col("_add.currency").alias("currency"), F.col("_add.occurred_at").alias("added_at"))
    in_cart = (F.col("quantity") > 0) & F.col("_add").isNotNull()
    carts = per_item.groupBy("user_id").agg(
        F.array_sort(F.collect_list(F.when(in_cart, item))).alias("cart_items"),
        F.coalesce(F.round(F.sum(F.when(in_cart, F.col("quantity") * F.col("_add.unit_price"))), 2),
                   F.lit(0.0)).alias("cart_value"),
        F.max("_touched_at").alias("cart_updated_at"))
    idle_since = F.lit(as_of - timedelta(hours=settings.abandoned_cart_hours))
    return carts.withColumn("cart_state", F.when(F.size("cart_items") == 0, "empty")
                            .when(F.col("cart_updated_at") <= idle_since, "abandoned").otherwise("active"))


@functools.cache
def _hour_counts(hours: str) -> Column:
    return F.transform(F.sequence(F.lit(0), F.lit(HOURS - 1)),
                       lambda hour: F.size(F.filter(F.col(hours), lambda opened: opened == hour)))


def _lifecycle(settings: FeaturesConfig) -> Column:
    stages = settings.lifecycle
    return (F.when(F.col("first_purchase_at").isNull(), "prospect")
            .when(F.col("_days_since_first_purchase") <= stages.new_days, "new")
            .when(F.col("recency_days") <= stages.active_days, "active")
            .when(F.col("recency_days") <= stages.at_risk_days, "at_risk")
            .otherwise("lapsed"))


def user_behaviour(settings: FeaturesConfig, as_of: datetime) -> Callable[..., DataFrame]:
    """(users, interactions, products, stored) -> one row per user in `users` with every
    feature that needs only that user's history.

    `interactions` may hold other users and older rows; `stored` is gold.user_features
    (first and last timestamps survive interactions that left the lookback window)."""

    def transform(users: DataFrame, interactions: DataFrame, products: DataFrame, stored: DataFrame) -> DataFrame:
        mine = (interactions.join(users, "user_id", "left_semi")
                .where(F.col("occurred_at") > _since(as_of, settings.lookback_days)))
        behaviour = mine.withColumn(_AS_OF, F.lit(as_of)).groupBy("user_id").agg(*_behaviour(settings))
        kept = stored.select("user_id", *[F.col(name).alias(f"_stored_{name}") for name in
                                          ("first_seen_at", "last_seen_at", "first_purchase_at", "last_purchase_at")])
        rows = users.join(behaviour, "user_id", "left").join(kept, "user_id", "left")
        for name, pick in (("first_seen_at", F.least), ("last_seen_at", F.greatest),
                           ("first_purchase_at", F.least), ("last_purchase_at", F.greatest)):
            rows = rows.withColumn(name, pick(F.col(name), F.col(f"_stored_{name}")))
        carts = _carts(settings, as_of, mine, rows.select("user_id", "last_purchase_at"))
        rows = (rows.join(_top_categories(settings, as_of, mine, products), "user_id", "left")
                .join(carts, "user_id", "left"))
        # A user with nothing in a window (or no cart) has zero there, not null.
        counts = ["frequency", f"emails_delivered_{settings.rate_window_days}d",
                  *[f"{name}_{days}d" for days in settings.windows_days for name in ("views", "carts", "purchases")]]
        amounts = ["monetary", "engagement_score", "cart_value",
                   *[f"revenue_{days}d" for days in settings.windows_days]]
        zero_when_missing = {"_open_hours": F.coalesce("_open_hours", F.array().cast("array<int>")),
                             **{column: F.coalesce(column, F.lit(0).cast("long")) for column in counts},
                             **{column: F.coalesce(column, F.lit(0.0)) for column in amounts}}
        return (rows.withColumns(zero_when_missing)
                .withColumns({
                    "features_as_of": F.lit(as_of),
                    "days_since_first_seen": _days_between(as_of, F.col("first_seen_at")),
                    "days_since_last_seen": _days_between(as_of, F.col("last_seen_at")),
                    "recency_days": _days_between(as_of, F.col("last_purchase_at")),
                    "_days_since_first_purchase": _days_between(as_of, F.col("first_purchase_at")),
                    "top_categories": F.coalesce("top_categories", F.array().cast("array<string>")),
                    "cart_items": F.coalesce("cart_items",
                                             F.array().cast(feature_schema(settings)["cart_items"].dataType)),
                    "cart_state": F.coalesce("cart_state", F.lit("empty")),
                    "open_hour_counts": _hour_counts("_open_hours"),
                })
                .withColumn("lifecycle_stage", _lifecycle(settings)))

    return transform


# -- gold.user_features: against everyone ----------------------------------------------------

def _quintile(value: Column, breaks: Column, higher_is_better: bool) -> Column:
    above = F.size(F.filter(breaks, lambda cut: value > cut))
    return (F.lit(1) + above if higher_is_better else F.lit(5) - above).cast("int")


@functools.cache
def _rfm_scores() -> dict[str, Column]:
    """r, f and m scores of a buyer against the population's quintile breaks."""
    buyer = F.col("frequency") > 0
    return {"r_score": F.when(buyer, _quintile(F.col("recency_days"), F.col("_r_breaks"), False)),
            "f_score": F.when(buyer, _quintile(F.col("frequency"), F.col("_f_breaks"), True)),
            "m_score": F.when(buyer, _quintile(F.col("monetary"), F.col("_m_breaks"), True))}


@functools.cache
def _smoothed_peak(counts_column: str, neighbour_weight: float) -> Column:
    """The hour whose opens, plus `neighbour_weight` of each adjacent hour's, are most
    (the earliest such hour on a tie); hours wrap around midnight."""
    counts = F.col(counts_column)
    smoothed = F.transform(F.sequence(F.lit(0), F.lit(HOURS - 1)), lambda hour: (
        F.get(counts, hour) + neighbour_weight * (F.get(counts, (hour + HOURS - 1) % HOURS)
                                                  + F.get(counts, (hour + 1) % HOURS))).cast("double"))
    return (F.array_position(smoothed, F.array_max(smoothed)) - 1).cast("int")


@functools.cache
def _total(counts_column: str) -> Column:
    return F.aggregate(F.col(counts_column), F.lit(0).cast("long"), lambda total, n: total + n)


@functools.cache
def _hour_sums() -> Column:
    return F.array(*[F.sum(F.get(F.col("open_hour_counts"), hour)).cast("long") for hour in range(HOURS)])


def _summed_counts(frame: DataFrame, *keys: str) -> DataFrame:
    return frame.groupBy(*keys).agg(_hour_sums().alias("counts"))


@per_object
def _send_hour_choice(send: Any) -> Column:
    """struct(h: the best send hour, s: whose opens chose it): the user's own, else the
    segment's, else everyone's, else the configured default."""
    own_opens = _total("open_hour_counts")
    return (F.when(own_opens >= send.min_opens,
                   F.struct(_smoothed_peak("open_hour_counts", send.neighbour_weight).alias("h"),
                            F.lit("personal").alias("s")))
            .when(F.col("_segment_opens") >= send.min_opens,
                  F.struct(F.col("_segment_hour").alias("h"), F.lit("segment").alias("s")))
            .when(F.col("_all_opens") >= send.min_opens,
                  F.struct(F.col("_all_hour").alias("h"), F.lit("everyone").alias("s")))
            .otherwise(F.struct(F.lit(send.default_hour).alias("h"), F.lit("default").alias("s"))))


def score_against_population(settings: FeaturesConfig, rules: SegmentRules,
                             as_of: datetime) -> Callable[..., DataFrame]:
    """(touched, stored) -> the touched users' rows (from `user_behaviour`) with RFM
    quintile scores, segments and best send hour, in the gold.user_features layout.

    `stored` is gold.user_features before this batch; with the touched rows in place of
    their old ones it is the population. Quintile breaks are taken over users with at
    least one order in the lookback window (recency as of `as_of` for everyone); users
    without one get no RFM scores."""
    send = settings.send_hour

    def transform(touched: DataFrame, stored: DataFrame) -> DataFrame:
        untouched = stored.join(touched.select("user_id"), "user_id", "left_anti")
        population = (untouched.select("user_id", _days_between(as_of, F.col("last_purchase_at")).alias("recency_days"),
                                       "frequency", "monetary")
                      .unionByName(touched.select("user_id", "recency_days", "frequency", "monetary")))
        breaks = population.where(F.col("frequency") > 0).agg(
            F.percentile_approx("recency_days", QUINTILE_BREAKS).alias("_r_breaks"),
            F.percentile_approx("frequency", QUINTILE_BREAKS).alias("_f_breaks"),
            F.percentile_approx("monetary", QUINTILE_BREAKS).alias("_m_breaks"))
        scored = (touched.crossJoin(breaks)
                  .withColumns(_rfm_scores())
                  .withColumn("rfm_cell", F.concat(F.col("r_score").cast("string"), F.col("f_score").cast("string"),
                                                   F.col("m_score").cast("string")))
                  .transform(assign_segments(rules)))
        # The segment's hour uses everyone's current segment: the touched users' new one.
        segment_of = (untouched.select("primary_segment", "open_hour_counts")
                      .unionByName(scored.select("primary_segment", "open_hour_counts")))
        by_segment = (_summed_counts(segment_of, "primary_segment")
                      .select("primary_segment", _total("counts").alias("_segment_opens"),
                              _smoothed_peak("counts", send.neighbour_weight).alias("_segment_hour")))
        everyone = (_summed_counts(segment_of.withColumn("_all", F.lit(1)), "_all")
                    .select(_total("counts").alias("_all_opens"),
                            _smoothed_peak("counts", send.neighbour_weight).alias("_all_hour")))
        chosen = (scored.join(F.broadcast(by_segment), "primary_segment", "left")
                  .crossJoin(F.broadcast(everyone))
                  .withColumn("_send", _send_hour_choice(send))
                  .withColumns({"best_send_hour": F.col("_send.h").cast("int"), "send_hour_source": F.col("_send.s")}))
        return chosen.select(*[field.name for field in feature_schema(settings)])

    return transform
