"""A product feed as pure functions: any feed's rows to one map of text fields each, those
fields checked and typed into silver.products rows, the bad ones into quarantine rows.

A feed is CSV, JSON lines or a table. JSON lines may be bare products or `product_upsert`
events (the generator's and the Online Retail replay's catalogue files), whose payload is
the product and whose occurred_at stands in for a missing updated_at. Every value is read
as text first, so a CSV feed, a JSON feed and a typed table are checked by the same rules:
those of the `product_upsert` contract, plus URLs that must be http(s).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from pipelines.contracts.events import CONTRACT_VERSION
from pipelines.schemas import PRODUCTS, QUARANTINE_COLUMNS

PRODUCT_FIELDS = tuple(field.name for field in PRODUCTS)
REQUIRED_FIELDS = ("product_id", "title", "category", "price", "currency")
# A row that leaves one of these out keeps the stored value (an incremental feed of prices
# must not clear images or reactivate a product); the required fields are always there.
KEPT_WHEN_ABSENT = ("image_url", "url", "in_stock", "active")
CATALOG_STREAM = "catalog"
MAX_TEXT = 512
MAX_URL = 2048
# Feeds say yes and no in many ways; Google's product feeds say "in stock".
_TRUE = ("true", "t", "yes", "y", "1", "in stock", "in_stock", "instock")
_FALSE = ("false", "f", "no", "n", "0", "out of stock", "out_of_stock", "outofstock")
# "12.50", "1.25E1" (a JSON number as a spreadsheet writes it) or, as Google's feeds
# write it, "12.50 GBP".
_PRICE = r"^\s*(-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?)\s*([A-Za-z]{3})?\s*$"
_PRICE_CURRENCY_GROUP = 4
_TEXT_MAP = "map<string,string>"
# Clocks drift and time zones get lost, but a product changed more than a day from now
# would win against every correct row after it.
MAX_FUTURE = timedelta(hours=24)
_UNREADABLE = "not a JSON object, or not the header's columns"
_BLANK_IS_ABSENT = ("active", "updated_at")


def _has_duplicate_key(json_text: Column) -> Column:
    keys = F.json_object_keys(json_text)
    return F.coalesce(F.size(keys) != F.size(F.array_distinct(keys)), F.lit(False))


def from_json_lines(lines: DataFrame) -> DataFrame:
    """(raw, source_partition) lines -> (raw, source_partition, fields, unreadable): a line
    that is not a JSON object, or names a key twice (which value would be meant?), has no
    fields and says why in `unreadable`."""
    parsed = F.from_json(F.col("raw"), _TEXT_MAP)
    is_event = parsed["event_type"] == F.lit("product_upsert")
    payload = F.from_json(parsed["payload"], _TEXT_MAP)
    updated_at = F.coalesce(payload["updated_at"], parsed["occurred_at"])
    event_fields = F.map_concat(F.map_filter(payload, lambda key, _: key != "updated_at"),
                                F.create_map(F.lit("updated_at"), updated_at))
    duplicated = _has_duplicate_key(F.col("raw")) | (is_event & _has_duplicate_key(parsed["payload"]))
    # CASE keeps map_concat away from a duplicated key, which it would fail the whole load on.
    fields = F.when(duplicated, None).when(is_event, event_fields).otherwise(parsed)
    unreadable = (F.when(duplicated, F.lit("a key appears twice in the JSON object"))
                  .when(parsed.isNull(), F.lit(_UNREADABLE)))
    return lines.select("raw", "source_partition", fields.alias("fields"), unreadable.alias("unreadable"))


def renamed_fields(columns: dict[str, str]):
    """JSON fields named differently in the feed (`columns`: field -> the feed's key) under
    their product names; a key already holding a mapped field's name is dropped."""

    def rename(key: Column) -> Column:
        renamed = key
        for field, name in columns.items():
            renamed = F.when(key == name, F.lit(field)).otherwise(renamed)
        return renamed

    def transform(candidates: DataFrame) -> DataFrame:
        if not columns:
            return candidates
        # A key named like a mapped field is dropped, unless it is itself mapped (a swap).
        shadowed = [field for field, name in columns.items() if field != name and field not in columns.values()]
        kept = F.filter(F.map_entries("fields"), lambda entry: ~entry["key"].isin(*shadowed))
        entries = F.transform(kept, lambda entry: F.struct(rename(entry["key"]).alias("key"),
                                                           entry["value"].alias("value")))
        return candidates.withColumn("fields", F.map_from_entries(entries))

    return transform


def from_columns(rows: DataFrame, columns: dict[str, str], source_partition: str,
                 corrupt_column: str | None = None) -> DataFrame:
    """A tabular feed (CSV, Parquet, Delta) -> (raw, source_partition, fields, unreadable).

    `columns` maps product fields to the feed's own column names; a field the feed lacks is
    absent, while an empty cell is present and null. `raw` is the row as the feed had it,
    in JSON. A CSV row that could not be split into the header's columns has its text in
    `corrupt_column` and no fields."""
    feed_columns = [name for name in rows.columns if name != corrupt_column]
    pairs = []
    for field, column in columns.items():
        pairs += [F.lit(field), F.col(f"`{column}`").cast("string")]
    fields = F.create_map(*pairs)
    raw = F.to_json(F.struct(*[F.col(f"`{name}`") for name in feed_columns]))
    unreadable = F.lit(None).cast("string")
    if corrupt_column:
        broken = F.col(corrupt_column).isNotNull()
        raw = F.when(broken, F.col(corrupt_column)).otherwise(raw)
        fields = F.when(~broken, fields)
        unreadable = F.when(broken, F.lit(_UNREADABLE))
    return rows.select(raw.alias("raw"), F.lit(source_partition).alias("source_partition"),
                       fields.alias("fields"), unreadable.alias("unreadable"))


def _text(field: str) -> Column:
    value = F.trim(F.col("fields")[field])
    return F.when(value != "", value)


def _flag(field: str) -> tuple[Column, Column]:
    """(the value as a boolean, whether the text said neither yes nor no)."""
    text = F.lower(_text(field))
    value = F.when(text.isin(*_TRUE), True).when(text.isin(*_FALSE), False)
    return value, text.isNotNull() & value.isNull()


def _shown(field: str) -> Column:
    """The offending value for an error message, cut short (a catalogue holds no PII)."""
    return F.concat(F.lit(f"{field}: '"), F.substring(F.col("fields")[field], 1, 40), F.lit("'"))


def validate_products(candidates: DataFrame, loaded_at: datetime) -> DataFrame:
    """(raw, source_partition, fields, unreadable) -> the PRODUCTS columns and `supplied`
    (the fields the row gave, even as null), with error_code and error_message null on a
    good row and naming the first failing field on a bad one."""
    price_text = _text("price")
    price = F.regexp_extract(price_text, _PRICE, 1).try_cast("double")
    price_currency = F.upper(F.regexp_extract(price_text, _PRICE, _PRICE_CURRENCY_GROUP))
    currency = F.upper(F.coalesce(_text("currency"), F.when(price_currency != "", price_currency)))
    in_stock, in_stock_unreadable = _flag("in_stock")
    active, active_unreadable = _flag("active")
    updated_text = _text("updated_at")
    updated_at = updated_text.try_cast("timestamp")

    typed = candidates.select(
        "raw", "source_partition", "fields", "unreadable",
        _text("product_id").alias("product_id"),
        _text("title").alias("title"),
        _text("category").alias("category"),
        F.when(price_text.rlike(_PRICE), price).alias("price"),
        currency.alias("currency"),
        _text("image_url").alias("image_url"),
        _text("url").alias("url"),
        in_stock.alias("in_stock"),
        F.coalesce(active, F.lit(True)).alias("active"),
        F.coalesce(updated_at, F.lit(loaded_at)).alias("updated_at"),
        # A blank `active` says nothing (it must not switch a product back on), and a blank
        # updated_at is the load time, not the feed's own.
        F.coalesce(F.map_keys(F.map_filter("fields", lambda key, value: ~key.isin(*_BLANK_IS_ABSENT) | (
            F.trim(value) != ""))), F.array().cast("array<string>")).alias("supplied"),
        in_stock_unreadable.alias("_in_stock_unreadable"),
        active_unreadable.alias("_active_unreadable"),
        (updated_text.isNotNull() & updated_at.isNull()).alias("_updated_at_unreadable"),
    )
    checks: list[tuple[Column, str, Column]] = [
        (F.col("fields").isNull(), "malformed_json", F.coalesce(F.col("unreadable"), F.lit(_UNREADABLE))),
    ]
    for field in REQUIRED_FIELDS:
        # The feed's text, not the typed value: a price that is not a number is wrong, not missing.
        present = F.col("currency") if field == "currency" else _text(field)
        checks.append((present.isNull(), "missing_field", F.lit(f"{field} is missing")))
    checks += [
        (price_text.isNotNull() & ~price_text.rlike(_PRICE), "wrong_type",
         F.concat(_shown("price"), F.lit(" is not a number"))),
        (F.col("_in_stock_unreadable"), "wrong_type", F.concat(_shown("in_stock"), F.lit(" is not yes or no"))),
        (F.col("_active_unreadable"), "wrong_type", F.concat(_shown("active"), F.lit(" is not yes or no"))),
        (F.col("_updated_at_unreadable"), "wrong_type",
         F.concat(_shown("updated_at"), F.lit(" is not a timestamp"))),
        (F.col("price") < 0, "invalid_value", F.concat(_shown("price"), F.lit(" is negative"))),
        (F.col("updated_at") > F.lit(loaded_at + MAX_FUTURE), "invalid_value",
         F.concat(_shown("updated_at"), F.lit(" is more than a day after the load"))),
        (~F.col("currency").rlike("^[A-Z]{3}$"), "invalid_value",
         F.concat(_shown("currency"), F.lit(" is not an ISO 4217 code"))),
    ]
    for field in ("product_id", "title", "category"):
        checks.append((F.length(field) > MAX_TEXT, "invalid_value",
                       F.lit(f"{field} is longer than {MAX_TEXT} characters")))
    for field in ("url", "image_url"):
        checks.append((~F.col(field).rlike("^https?://[^\\s]+$"), "invalid_value",
                       F.concat(_shown(field), F.lit(" is not an http(s) URL"))))
        checks.append((F.length(field) > MAX_URL, "invalid_value",
                       F.lit(f"{field} is longer than {MAX_URL} characters")))
    code = message = None
    for failed, error_code, error_message in reversed(checks):
        code = F.when(failed, F.lit(error_code)) if code is None else F.when(failed, F.lit(error_code)).otherwise(code)
        message = F.when(failed, error_message) if message is None else F.when(failed, error_message).otherwise(message)
    # A null check (a comparison with a missing value) is not a failure.
    return (typed.withColumn("error_code", code).withColumn("error_message", message)
            .drop("unreadable", "_in_stock_unreadable", "_active_unreadable", "_updated_at_unreadable"))


def latest_per_product(valid: DataFrame) -> DataFrame:
    """One row per product_id: the latest updated_at; equal times are settled by the raw
    text, so the same feed always gives the same rows however Spark splits it."""
    order = Window.partitionBy("product_id").orderBy(F.desc("updated_at"), F.desc("raw"))
    return (valid.withColumn("_rank", F.row_number().over(order)).where(F.col("_rank") == 1)
            .select(*PRODUCT_FIELDS, "supplied"))


def quarantine_rows(invalid: DataFrame, loaded_at: datetime, source_kind: str) -> DataFrame:
    """Bad feed rows as bronze.quarantine rows. The id is the feed file and the row's text,
    so loading the same feed again, or a feed repeating a line, adds nothing twice."""
    return (invalid
            .withColumn("quarantine_id",
                        F.sha2(F.concat_ws("|", F.lit(CATALOG_STREAM), "source_partition", "raw"), 256))
            .withColumn("raw", F.encode("raw", "UTF-8"))
            .withColumn("source_kind", F.lit(source_kind))
            .withColumn("source_stream", F.lit(CATALOG_STREAM))
            .withColumn("source_offset", F.lit(None).cast("string"))
            .withColumn("source_timestamp", F.lit(None).cast("timestamp"))
            .withColumn("stream", F.lit(CATALOG_STREAM))
            .withColumn("ingested_at", F.lit(loaded_at))
            .withColumn("contract_version", F.lit(CONTRACT_VERSION))
            .withColumn("fixed_raw", F.lit(None).cast("binary"))
            .withColumn("replayed_at", F.lit(None).cast("timestamp"))
            .withColumn("replay_outcome", F.lit(None).cast("string"))
            .select(*QUARANTINE_COLUMNS)
            .dropDuplicates(["quarantine_id"]))


def listed_only(checked: DataFrame, latest: DataFrame) -> DataFrame:
    """Product ids the feed names only on bad rows: still listed, so a full feed must not
    deactivate them, but with nothing to write."""
    named = checked.where(F.col("product_id").isNotNull()).select("product_id").distinct()
    return named.join(latest.select("product_id"), "product_id", "left_anti")


def deactivatable(active: Column, updated_at: Column, feed_as_of: datetime | None) -> Column:
    """Which stored products a full feed as of `feed_as_of` (its latest updated_at) may
    deactivate: active ones not changed after it. A full feed replayed late must not
    deactivate the products added since it was cut; a feed with no good row, none."""
    if feed_as_of is None:
        return F.lit(False)
    return active & (updated_at <= F.lit(feed_as_of))


def missing_from_feed(stored: DataFrame, listed: DataFrame, feed_as_of: datetime | None) -> DataFrame:
    """Stored products a full feed leaves out and would deactivate; `listed` holds every
    product_id the feed names."""
    leaving = deactivatable(F.col("active"), F.col("updated_at"), feed_as_of)
    return stored.where(leaving).join(listed, "product_id", "left_anti")
