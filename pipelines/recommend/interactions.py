"""The interaction log every model reads: one row per thing a user did to an item.

    user_id string, item_id string, weight double, occurred_at timestamp,
    basket_id string, kind string

`weight` is the event's strength before time decay (config gives one per event kind);
`basket_id` groups what was bought together (an order, or a user's purchases at one
moment); `kind` is `purchase` or `view` and picks the reason a recommendation gives.
"""

from __future__ import annotations

from collections.abc import Mapping

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

# What a file's columns can stand for, in `from_table`'s mapping.
FILE_ROLES = ("user", "item", "weight", "time", "basket")


def decayed(weight: Column, occurred_at: Column, as_of, half_life_days: float) -> Column:
    """weight x 0.5^(age / half-life), age in days before `as_of` (no decay after it)."""
    age_days = F.greatest(F.lit(0.0), (F.lit(as_of).cast("timestamp").cast("double")
                                      - occurred_at.cast("double")) / 86400.0)
    return weight * F.pow(F.lit(0.5), age_days / F.lit(half_life_days))


def from_table(rows: DataFrame, columns: dict[str, str]) -> DataFrame:
    """A file's rows -> the interaction log, by role -> column name (`user`, `item`
    required; `weight` defaults to 1, `time` to none, `basket` to the user and the moment).
    Rows without a user or an item, with a weight that is not a positive number, or with a
    time that is not a timestamp Spark can read, are left out (`count_left_out` says how
    many)."""
    def column(role: str) -> Column | None:
        return F.col(f"`{columns[role]}`") if role in columns else None

    user, item = column("user"), column("item")
    weight, time, basket = column("weight"), column("time"), column("basket")
    occurred_at = time.try_cast("timestamp") if time is not None else F.lit(None).cast("timestamp")
    log = rows.select(
        user.cast("string").alias("user_id"),
        item.cast("string").alias("item_id"),
        (weight.try_cast("double") if weight is not None else F.lit(1.0)).alias("weight"),
        occurred_at.alias("occurred_at"),
        (basket.cast("string") if basket is not None
         else F.concat_ws("|", user.cast("string"), occurred_at.cast("string"))).alias("basket_id"),
        F.lit("purchase").alias("kind"),
    )
    readable_time = F.lit(True) if time is None else (time.isNull() | F.col("occurred_at").isNotNull())
    return log.where(F.col("user_id").isNotNull() & F.col("item_id").isNotNull() & (F.col("weight") > 0)
                     & readable_time)


def from_interactions(interactions: DataFrame, event_weights: Mapping[str, float]) -> DataFrame:
    """silver.interactions -> the log: a product viewed or carted is one row, a purchase one
    row per line, each with its event type's weight (an order of 200 mugs says no more
    about taste than one). Cancellations and event types without a weight are left out;
    an order is its own basket, anything else the cart, session or event it came from."""
    weight = F.lit(None).cast("double")
    for event_type, value in event_weights.items():
        weight = F.when(F.col("event_type") == event_type, F.lit(float(value))).otherwise(weight)
    weighed = interactions.where(F.col("event_type").isin(*event_weights)
                                 & ~F.coalesce(F.col("is_cancellation"), F.lit(False)))
    is_purchase = F.col("event_type") == "purchase"
    products = F.when(is_purchase, F.transform("items", lambda line: line["product_id"])).otherwise(
        F.array("product_id"))
    return (weighed
            .select("user_id", "occurred_at", "event_type", "order_id", "cart_id", "session_id", "event_id",
                    weight.alias("weight"), F.explode(products).alias("item_id"))
            .where(F.col("item_id").isNotNull())
            .dropDuplicates(["event_id", "item_id"])
            .select("user_id", "item_id", "weight", "occurred_at",
                    F.coalesce("order_id", "cart_id", "session_id", "event_id").alias("basket_id"),
                    F.when(is_purchase, F.lit("purchase")).otherwise(F.lit("view")).alias("kind")))


def user_items(log: DataFrame, as_of, half_life_days: float) -> DataFrame:
    """(user_id, item_id, strength, events, bought): one row per pair, strength decayed."""
    return (log.groupBy("user_id", "item_id")
            .agg(F.sum(decayed(F.col("weight"), F.col("occurred_at"), as_of, half_life_days)).alias("strength"),
                 F.count("*").alias("events"),
                 F.max(F.col("kind") == "purchase").alias("bought")))
